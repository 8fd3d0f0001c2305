"""Dump every user's top-K from a published version, in-process (``LocalClient``) and over
HTTP (``groundrec serve`` on a loopback port), one JSON line per user: the evidence that a
refactor changed no answer. Run it before and after a change and compare the files with
``cmp``, or with ``--compare`` to count identical lists and the largest score difference
(scores are written with every bit, ``repr`` of the float).

    python benchmarks/answers.py --artifacts DIR --interactions interactions.parquet --out before.jsonl [--http]
    python benchmarks/answers.py --compare before.jsonl after.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def histories(path: str, user_column: str, item_column: str, timestamp_column: str) -> dict[str, list[dict]]:
    """Each user's history, oldest first (ties kept in file order), with timestamps."""
    t = pq.read_table(path, columns=[user_column, item_column, timestamp_column])
    ts = t.column(timestamp_column)
    if pa.types.is_timestamp(ts.type):
        ts = ts.cast(pa.timestamp("s")).cast(pa.int64())
    users, items, seconds = (t.column(user_column).cast("string").to_pylist(),
                             t.column(item_column).cast("string").to_pylist(), ts.cast("double").to_pylist())
    out: dict[str, list] = {}
    for n in sorted(range(len(users)), key=lambda n: (users[n], seconds[n], n)):
        out.setdefault(users[n], []).append({"item_id": items[n], "timestamp": seconds[n]})
    return out


def compare(a: Path, b: Path) -> None:
    """Users, identical top-K lists, and the largest score difference between two dumps."""
    left = [json.loads(line) for line in a.read_text().splitlines()]
    right = [json.loads(line) for line in b.read_text().splitlines()]
    if [x["user"] for x in left] != [y["user"] for y in right]:
        raise SystemExit(f"{a} and {b} hold different users")
    same = sum(x["items"] == y["items"] for x, y in zip(left, right))
    diff = max((abs(float(s) - float(t)) for x, y in zip(left, right) for s, t in zip(x["scores"], y["scores"])),
               default=0.0)
    print(f"{len(left)} users: {same} identical top-K lists, {len(left) - same} different; "
          f"largest score difference {diff:.3g}; files byte-identical: {a.read_bytes() == b.read_bytes()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="compare two dumps and exit")
    ap.add_argument("--artifacts")
    ap.add_argument("--interactions", help="Parquet table of (user, item, timestamp)")
    ap.add_argument("--user-column", default="user_id")
    ap.add_argument("--item-column", default="item_id")
    ap.add_argument("--timestamp-column", default="timestamp")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--out", type=Path, help="JSON lines; with --http also OUT.http")
    ap.add_argument("--http", action="store_true", help="also ask a real server over a socket")
    ap.add_argument("--options", default="{}", help="extra request fields as JSON, e.g. '{\"strategy\": \"recency\"}'")
    args = ap.parse_args()
    if args.compare:
        return compare(*args.compare)
    if not (args.artifacts and args.interactions and args.out):
        ap.error("--artifacts, --interactions and --out are required (or --compare A B)")

    from groundrec.online.client import Client, LocalClient
    from groundrec.online.testing import serving

    users = histories(args.interactions, args.user_column, args.item_column, args.timestamp_column)
    options = json.loads(args.options)

    def dump(client, path: Path) -> None:
        with path.open("w") as f:
            for user, history in users.items():
                r = client.recommend(history, k=args.k, **options)
                f.write(json.dumps({"user": user, "items": [i.item_id for i in r.items],
                                    "scores": [repr(i.score) for i in r.items], "fallback": r.fallback}) + "\n")
        print(f"{len(users)} users -> {path}")

    dump(LocalClient(args.artifacts), args.out)
    if args.http:
        with serving(args.artifacts) as server, Client(server.url, retries=5, backoff_s=0.5) as client:
            dump(client, args.out.with_suffix(args.out.suffix + ".http"))


if __name__ == "__main__":
    main()
