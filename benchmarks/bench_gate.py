"""What the promotion gate adds to the offline job: the job on a catalog's purchases up to a
cutoff (activated: nothing serves yet), then the job on all of them, which the gate compares
with the first on the purchases since its cutoff. Prints the second job's stage times, the
gate's share of its wall time, and the gate's decision and figures.

    python benchmarks/bench_gate.py --catalog ../shared/data/retail/items.parquet \\
        --interactions ../shared/data/retail/interactions.parquet [--cut 0.8] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from groundrec.offline.config import load_job_config
from groundrec.offline.job import run_job


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalog", required=True)
    ap.add_argument("--interactions", required=True)
    ap.add_argument("--text-columns", default="title")
    ap.add_argument("--template", default="{title}")
    ap.add_argument("--cut", type=float, default=0.8, help="share of the time span the first job learns from")
    ap.add_argument("--out", type=Path, help="artifacts directory (default: a temporary one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "artifacts"
        table = pq.read_table(args.interactions)
        seconds = pc.cast(pc.cast(table.column("timestamp"), "timestamp[s]"), "int64")
        lo, hi = pc.min(seconds).as_py(), pc.max(seconds).as_py()
        cutoff = lo + args.cut * (hi - lo)
        first = Path(tmp) / "first.parquet"
        pq.write_table(table.filter(pc.less_equal(seconds, int(cutoff))), first)
        base = {"catalog.path": args.catalog, "out": str(out), "catalog.text_columns": args.text_columns.split(","),
                "encoder.template": args.template, "run.runner": "local", "export.enabled": False,
                "thumbnails.enabled": False}
        t = time.perf_counter()
        one = run_job(load_job_config(None, {**base, "interactions.path": str(first), "publish.activate": "always"}),
                      progress=False)
        print(f"first job (purchases up to {args.cut:.0%} of the span): {time.perf_counter() - t:.1f} s, "
              f"version {one.version}")
        t = time.perf_counter()
        two = run_job(load_job_config(None, {**base, "interactions.path": args.interactions}), progress=False)
        wall = time.perf_counter() - t
        g = two.gate
        print(f"second job (all purchases, activate: {g.mode}): {wall:.1f} s wall; stages: "
              + ", ".join(f"{k} {v:.1f}s" for k, v in two.timings_s.items()))
        print(f"the gate: {two.timings_s.get('gate', 0.0):.1f} s = {two.timings_s.get('gate', 0.0) / wall:.1%} of the "
              f"job's wall time; {g.users} users in the window from {g.window_from}; {g.metric}: candidate "
              f"{g.candidate:.4f}, serving {g.serving:.4f}, p = {g.p_value:.3g}; activated: {g.activated} ({g.reason})")


if __name__ == "__main__":
    main()
