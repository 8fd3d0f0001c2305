"""Training time and memory of the collaborative model at scale, on synthetic data.

Items get Zipf-like popularity and random unit content vectors; users draw their items from
the popularity. Measured: building the interaction matrix, one `collab.fit` (EASE on the head
of ``max_dense_items`` items, randomized SVD, content map for every other item), and the
job's whole learn stage (`learn.learn`: tuning on held-out items over the default grids in
the stages of `tuning.tune_hybrid`, then the final fit), each with wall time and the process's peak resident memory.

Usage: python benchmarks/bench_collab.py [--items 1000000] [--interactions 10000000]
           [--users 1000000] [--rank 128] [--max-dense-items 20000] [--skip-learn]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from groundrec.offline import collab
from groundrec.offline.config import CollabConfig
from groundrec.offline.interactions import Interactions
from groundrec.offline.learn import histories_in_time_order, learn
from groundrec.offline.width_rule import smaller_ranks


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--interactions", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--rank", type=int, default=128)
    ap.add_argument("--max-dense-items", type=int, default=20_000)
    ap.add_argument("--skip-learn", action="store_true", help="only the single fit")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    pop = 1.0 / np.arange(1, a.items + 1) ** 0.9
    items = rng.choice(a.items, a.interactions, p=pop / pop.sum())
    users = rng.integers(0, a.users, a.interactions)
    ts = rng.integers(1_700_000_000, 1_700_000_000 + 90 * 86_400, a.interactions)
    content = rng.standard_normal((a.items, a.dim), dtype=np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    inter = Interactions(users, items, ts, [str(u) for u in range(a.users)], 0)
    print(f"synthetic data: {a.items:,} items, {a.interactions:,} interactions, {a.users:,} users, "
          f"{len(np.unique(items)):,} items with interactions ({time.perf_counter() - t:.1f} s)", flush=True)
    t = time.perf_counter()
    histories = histories_in_time_order(inter)
    print(f"histories            {time.perf_counter() - t:8.1f} s   peak RSS {peak_gb():.1f} GB", flush=True)
    t = time.perf_counter()
    model = collab.fit(histories, a.items, content, a.rank, 100.0, max_dense_items=a.max_dense_items)
    print(f"one fit              {time.perf_counter() - t:8.1f} s   peak RSS {peak_gb():.1f} GB   "
          f"head {model.info['head_items']:,} items, {model.info['items_from_content']:,} from content", flush=True)
    del model
    if not a.skip_learn:
        cfg = CollabConfig(rank=a.rank, max_dense_items=a.max_dense_items)
        t = time.perf_counter()
        learned = learn(inter, content, cfg)
        v = learned.report.to_manifest()["validation"]
        models = {k.split(" weight=")[0].removeprefix("hybrid ") for k in v["scores"]
                  if k.startswith("hybrid ") and " rank=" not in k}
        fits = {m.split(" half_life=")[0] for m in models}
        print(f"learn stage          {time.perf_counter() - t:8.1f} s   peak RSS {peak_gb():.1f} GB   "
              f"on {v['users']:,} held-out users ({v['items']:,} items): {len(fits)} fits ({', '.join(sorted(fits))}), "
              f"{len(models)} scoring "
              f"passes over the weights {v['grid']['weight']} (tuning.tune_hybrid), then ranks "
              f"{smaller_ranks(cfg.rank)} and the projection at the chosen model when hybrid, then the final fit; "
              f"chosen {v['chosen']}", flush=True)


if __name__ == "__main__":
    main()
