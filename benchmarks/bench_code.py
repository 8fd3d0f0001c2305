"""Two code trees, one benchmark, side by side: in-process recommend (one user at a time, and
``recommend_batch`` in batches) on the same version, in rounds that alternate between this
checkout and another tree put first on ``PYTHONPATH`` (e.g. a ``pip install --target`` of the
commit before a refactor). Each round is a fresh process that loads the version, warms up and
then times every user; the figure is users/s, the median over rounds, and the ratio new / old.
One compute thread, as the service scores.

    python benchmarks/bench_code.py --old-pythonpath /tmp/gr-base-site --artifacts DIR \\
        --interactions FILE [--rounds 5] [--batch 16] [--k 20] [--new-pythonpath OTHER_SITE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def worker(args) -> None:
    """One round in this process: the users/s of both paths, as one JSON line."""
    import gc

    from groundrec.online import retrieve
    from groundrec.online.loadtest import load_histories
    from groundrec.online.retrieve import Retriever
    from groundrec.online.schemas import UserQuery
    from groundrec.online.threads import limit_threads
    from groundrec.online.version import load_version

    limit_threads(1)
    version = load_version(args.artifacts)
    histories = [[i for i in h if i in version.row_of] for h in load_histories(args.interactions)]
    queries = [UserQuery(history=list(h), k=args.k) for h in histories if h]
    retriever = Retriever(version, fallback="error")
    for q in queries[:50]:  # warm up
        retriever.recommend(q)
    gc.collect()
    gc.freeze()
    t = time.perf_counter()
    for q in queries:
        retriever.recommend(q)
    single = len(queries) / (time.perf_counter() - t)
    t = time.perf_counter()
    for s in range(0, len(queries), args.batch):
        retriever.recommend_batch(queries[s:s + args.batch])
    batched = len(queries) / (time.perf_counter() - t)
    print(json.dumps({"code": os.path.dirname(os.path.dirname(retrieve.__file__)), "users": len(queries), "single": single, "batch": batched}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--interactions", required=True)
    ap.add_argument("--old-pythonpath", help="the other code tree, put first on PYTHONPATH")
    ap.add_argument("--new-pythonpath", help="this side's tree likewise (default: the checkout as installed)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if not args.old_pythonpath:
        ap.error("--old-pythonpath is required")
    cmd = [sys.executable, __file__, "--worker", "--artifacts", args.artifacts, "--interactions", args.interactions,
           "--batch", str(args.batch), "--k", str(args.k)]
    env_new = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env_old = {**env_new, "PYTHONPATH": args.old_pythonpath}
    if args.new_pythonpath:
        env_new["PYTHONPATH"] = args.new_pythonpath
    results: dict[str, list[dict]] = {"new": [], "old": []}
    for n in range(args.rounds):  # alternate, so both trees see the same machine state
        for arm, env in (("new", env_new), ("old", env_old)) if n % 2 == 0 else (("old", env_old), ("new", env_new)):
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            results[arm].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {n + 1} {arm}: {results[arm][-1]}", flush=True)
    print(f"{results['new'][0]['users']} users, k={args.k}, batches of {args.batch}, one thread, {args.rounds} rounds")
    for mode in ("single", "batch"):
        new = [r[mode] for r in results["new"]]
        old = [r[mode] for r in results["old"]]
        ratios = [a / b for a, b in zip(new, old)]
        print(f"{mode:6s} new {np.median(new):8.1f} users/s  old {np.median(old):8.1f} users/s  "
              f"new/old {np.median(new) / np.median(old):.1%} (per round: {min(ratios):.1%} to {max(ratios):.1%})")


if __name__ == "__main__":
    main()
