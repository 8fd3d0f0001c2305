"""The whole offline job on a catalog, twice: a first run, then the unchanged re-run.

Prints each stage's time, VLM work done, and the peak memory of the job's process tree
(driver + Ray workers). Usage:
  python benchmarks/bench_job.py [--items N] [--vlm DIR] [--runner ray] [--out DIR]
Goal (issue 2): the re-run makes no VLM call and its ground stage takes < 10% of the first's.
Goal (issue 24): the thumbnails stage adds at most 10% to the first run and ~nothing to the re-run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from common import PeakMemory, require_hm
from groundrec.offline.job import run_job
from groundrec.offline.dev.tiny_models import build_tiny_vlm
from groundrec.offline.config import load_job_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--items", type=int, default=0, help="0 = the whole catalog")
    ap.add_argument("--vlm", help="VLM directory (default: a tiny random SmolVLM)")
    ap.add_argument("--runner", default="ray", choices=["ray", "local"])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--vlm-batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    args = ap.parse_args()
    hm = require_hm()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-job-"))
    catalog = hm / "items.parquet"
    if args.items:
        catalog = out / f"items{args.items}.parquet"
        pq.write_table(pq.read_table(hm / "items.parquet").slice(0, args.items), catalog)
    vlm = args.vlm or str(build_tiny_vlm("smolvlm", out / "tiny-vlm"))
    cfg = load_job_config(None, {"catalog.path": str(catalog), "catalog.images_root": str(hm), "out": str(out / "artifacts"),
                             "vlm.model": vlm, "vlm.batch_size": args.vlm_batch_size,
                             "vlm.max_new_tokens": args.max_new_tokens, "run.runner": args.runner,
                             "encoder.template": "{title}. {description}. {vlm_text}"})
    report = {}
    for name in ("first", "rerun"):
        with PeakMemory() as mem:
            start = time.perf_counter()
            s = run_job(cfg, progress=False)
            wall = time.perf_counter() - start
        report[name] = {"wall_s": round(wall, 1), "peak_rss_gib": round(mem.peak_gib, 2), "grounded_new": s.grounded_new,
                        "grounded_cached": s.grounded_cached, "encoded": s.encoded, "encoded_new": s.encoded_new, "skipped": s.skipped,
                        "index": s.index["factory"], "stages_s": s.timings_s}
        stages = ", ".join(f"{k} {v:.1f}" for k, v in s.timings_s.items())
        print(f"{name:6}: {wall:6.1f} s wall, peak RSS {mem.peak_gib:.2f} GiB, VLM calls {s.grounded_new}, "
              f"cached {s.grounded_cached}, encoded {s.encoded} ({s.encoded_new} new texts), skipped {sum(s.skipped.values())}\n        stages (s): {stages}")
    g1, g2 = report["first"]["stages_s"]["ground"], report["rerun"]["stages_s"]["ground"]
    print(f"re-run ground stage: {g2:.2f} s vs {g1:.2f} s = {100 * g2 / g1:.1f}% of the first run's")
    w1, w2 = report["first"]["wall_s"], report["rerun"]["wall_s"]
    print(f"re-run whole job: {w2:.1f} s vs {w1:.1f} s = {100 * w2 / w1:.1f}% of the first run's")
    t1, t2 = (report[r]["stages_s"].get("thumbnails", 0.0) for r in ("first", "rerun"))
    print(f"thumbnails stage: {t1:.1f} s of the first run ({100 * t1 / w1:.1f}% of its wall time), "
          f"{t2:.1f} s of the re-run ({100 * t2 / w2:.1f}%)")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
