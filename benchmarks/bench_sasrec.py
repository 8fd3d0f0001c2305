"""SASRec as published (``offline/evaluation/sasrec.py``, eval's ``sasrec_row``): its recall@20
on eval's validation users epoch by epoch, to see what a training budget leaves out: eval's
row stops at ``sasrec_max_steps`` (4,000 by default), the paper runs 200 epochs.

    OMP_NUM_THREADS=2 python benchmarks/bench_sasrec.py --catalog ../shared/data/retail/items.parquet \\
        --interactions ../shared/data/retail/interactions.parquet --max-steps 12000 --marks 4000,8000

Prints every epoch, then the best validation recall within each mark (steps) and within 200
epochs. The split is eval's (``--holdout``, default last_frac)."""

from __future__ import annotations

import argparse

from groundrec.offline.evaluation.config import EvalConfig
from groundrec.offline.evaluation.data import read_and_split
from groundrec.offline.evaluation.sasrec import SASRecSettings, train_sasrec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalog", required=True)
    ap.add_argument("--interactions", required=True)
    ap.add_argument("--holdout", default="last_frac")
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--epochs", type=int, default=220)
    ap.add_argument("--max-steps", type=int, default=12000)
    ap.add_argument("--marks", default="4000", help="step counts to report the best validation recall within")
    a = ap.parse_args()
    cfg = EvalConfig(catalog={"path": a.catalog, "text_columns": []}, interactions={"path": a.interactions},
                     split={"holdout": a.holdout})
    data = read_and_split(cfg)
    s = SASRecSettings(dropout=a.dropout, epochs=a.epochs, max_steps=a.max_steps, patience=a.epochs)
    lines: list[dict] = []
    _, report = train_sasrec(data.valid_histories, data.n_items, s, (list(data.valid.history), list(data.valid.relevant)),
                             log=lambda line: (lines.append(line), print(line, flush=True)))
    key = f"valid_recall@{s.k}"
    print(f"{len(data.valid)} validation users, {data.n_items} items; {report['steps']} steps in {report['seconds']} s")
    for name, within in [*((f"{m} steps", lambda x, m=int(m): x["steps"] <= m) for m in a.marks.split(",")),
                         ("200 epochs", lambda x: x["epoch"] <= 200)]:
        done = [x for x in lines if within(x)]
        if done:
            best = max(done, key=lambda x: x[key])
            print(f"best within {name}: {best[key]:.4f} (epoch {best['epoch']}, {best['steps']} steps)")


if __name__ == "__main__":
    main()
