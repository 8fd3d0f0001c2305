"""Encode throughput of the pipeline vs sentence-transformers alone, same texts, one run.

Usage: python benchmarks/bench_encode.py [--items 17033] [--runner ray]
Goal (issue 2): pipeline overhead <= 20% (items/s).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from common import require_hm
from groundrec.offline.encode import build_texts, load_sentence_transformer, resolve_encoder
from groundrec.offline.encode import _encode
from groundrec.offline.runners import open_runner
from groundrec.offline.config import load_job_config

TEMPLATE = "{title}. {product_type}, {colour}, {graphical_appearance}. {description}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--items", type=int, default=17033)
    ap.add_argument("--runner", default="ray", choices=["ray", "local"])
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    hm = require_hm()
    table = pq.read_table(hm / "items.parquet").slice(0, args.items)
    texts = build_texts(table, TEMPLATE)
    cols = ["title", "product_type", "colour", "graphical_appearance", "description"]
    cfg = load_job_config(None, {"catalog.text_columns": cols, "encoder.template": TEMPLATE,
                             "encoder.batch_size": args.batch_size, "out": tempfile.mkdtemp(prefix="bench-enc-")})
    words = sum(len(t.split()) for t in texts) / len(texts)

    model = load_sentence_transformer(cfg.encoder.model, cfg.encoder.max_seq_length)
    start = time.perf_counter()
    model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False)
    st_s = time.perf_counter() - start
    del model

    start = time.perf_counter()
    with open_runner(args.runner, None, Path(cfg.resolved_work_dir)) as runner:
        ready = time.perf_counter()
        _encode(runner, texts, cfg, resolve_encoder(cfg.encoder.model), progress=False)
        done = time.perf_counter()
    with_start = done - start
    stage = done - ready
    n = len(texts)
    print(f"{n} texts, {words:.0f} words on average, batch {args.batch_size}")
    print(f"sentence-transformers alone : {n / st_s:7.1f} items/s ({st_s:.1f} s)")
    print(f"pipeline encode stage ({args.runner:5}): {n / stage:7.1f} items/s ({stage:.1f} s) "
          f"-> overhead {100 * (stage / st_s - 1):+.1f}%")
    print(f"  including {args.runner} start-up : {n / with_start:7.1f} items/s ({with_start:.1f} s) "
          f"-> overhead {100 * (with_start / st_s - 1):+.1f}%")


if __name__ == "__main__":
    main()
