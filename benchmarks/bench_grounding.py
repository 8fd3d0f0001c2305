"""Grounding throughput (images/s) for a batch-size sweep with a tiny VLM, on real H&M images.

Usage: python benchmarks/bench_grounding.py [--arch smolvlm] [--images 64] [--batch-sizes 1,4,16]
Goal (issue 2): batch 16 >= 3x batch 1, per image.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import pyarrow.parquet as pq

from common import median_time, require_hm
from groundrec.offline import images as image_io
from groundrec.offline.dev.tiny_models import build_tiny_vlm
from groundrec.offline.vlm import HFVLM
from groundrec.offline.config import PromptConfig
from groundrec.offline.vlm import HFVLMConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", default="smolvlm")
    ap.add_argument("--model", help="a real VLM directory or hub id instead of a tiny one")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch-sizes", default="1,4,16")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    hm = require_hm()
    rows = pq.read_table(hm / "items.parquet", columns=["image"]).slice(0, args.images).to_pylist()
    imgs = [image_io.load(str(hm / r["image"])).image for r in rows]
    model = args.model or str(build_tiny_vlm(args.arch, tempfile.mkdtemp(prefix="bench-vlm-")))
    vlm = HFVLM(HFVLMConfig(model=model, max_new_tokens=args.max_new_tokens))
    prompt = PromptConfig()
    vlm.generate(imgs[:2], prompt)  # warm-up
    results = {}
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        def run():
            for i in range(0, len(imgs), bs):
                vlm.generate(imgs[i:i + bs], prompt)
        t = median_time(run, args.repeats)
        results[bs] = len(imgs) / t
        print(f"batch {bs:>3}: {results[bs]:8.1f} images/s  (median of {args.repeats}, {len(imgs)} images, "
              f"{args.max_new_tokens} new tokens, device {vlm.device})")
    first, last = min(results), max(results)
    print(f"batch {last} / batch {first} throughput: {results[last] / results[first]:.2f}x")
    print(json.dumps({"model": args.model or f"tiny-{args.arch}", "images_per_s": results}))


if __name__ == "__main__":
    main()
