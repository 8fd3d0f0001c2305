"""A real catalog cut to its users with the longest histories: the shape of a catalog of a few
hundred long-history users (issue 34's held-out catalog), drawn from real purchases rather
than planted structure. Every interaction of the kept users is written, unchanged; the item
table is the original one (pass it to ``groundrec eval --catalog`` as it is).

    python -m groundrec.offline.dev.longest_users INTERACTIONS OUT_DIR [--users 400]

writes ``OUT_DIR/interactions.parquet``. Ties in history length go to the smaller user id.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def longest_users(interactions: pa.Table, users: int, user_column: str = "user_id") -> pa.Table:
    """The interactions of the ``users`` users with the most of them (ties: the smaller id)."""
    ids, counts = np.unique(interactions.column(user_column).to_numpy(zero_copy_only=False), return_counts=True)
    keep = ids[np.argsort(-counts, kind="stable")[:users]]
    return interactions.filter(pc.is_in(interactions.column(user_column), pa.array(keep)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("interactions", help="an interactions table (Parquet) with a user_id column")
    p.add_argument("out", help="folder for interactions.parquet")
    p.add_argument("--users", type=int, default=400)
    args = p.parse_args()
    cut = longest_users(pq.read_table(args.interactions), args.users)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    pq.write_table(cut, Path(args.out) / "interactions.parquet")
    print(f"wrote {args.out}/interactions.parquet ({cut.num_rows} interactions, "
          f"{len(pc.unique(cut.column('user_id')))} users)")


if __name__ == "__main__":
    main()
