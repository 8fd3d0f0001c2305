"""What logging the lists shown costs the request path, side by side in one process: one
``Recommender`` (the service's request path: check, history, queue, micro-batch, compute, the
answer's id; ``compute: thread``) logging every answer's impression to the event store
(``impressions: 1``) in one round and with its logger detached in the next, timed in
alternating rounds of the same requests at a fixed concurrency, for SQLite and Redis. Each
round's requests/s and its p99; the ratio of the medians (on / off). The logger's writes
(a background thread) run during the rounds, so their cost is in the figure.

Timed rounds on a shared 2-core machine spread by +-15%, too much to resolve a 5% cost. So each
round also counts the CPU time it used: this process's (every thread: the request path and the
logger, whose queue is flushed before the round's count ends) plus redis-server's, and reports
requests per CPU-second, the throughput of a machine whose cores are busy serving. That figure
moves little with the machine's load and resolves a few percent.

    python benchmarks/bench_impressions.py --artifacts DIR --interactions FILE \\
        [--stores sqlite,redis] [--concurrency 32] [--requests 2000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from groundrec.online.config import ServeConfig
from groundrec.online.loadtest import load_histories
from groundrec.online.metrics import ServiceMetrics
from groundrec.online.recommender import Recommender
from groundrec.online.schemas import RecommendRequest
from groundrec.shared.events import open_store

sys.path.insert(0, str(Path(__file__).parent))
from common import start_redis, timed_round  # noqa: E402


async def _compare(args, url: str, bodies: list[RecommendRequest], server_cpu=lambda: 0.0) -> dict:
    """Logging on and off in alternating rounds of one ``Recommender`` (``server_cpu``: the
    store server's CPU seconds so far). One service, its logger detached in the "off" rounds:
    two services over the same version differed by a few percent with nothing logged."""
    cfg = ServeConfig(artifacts=args.artifacts, compute="thread", events=url, impressions=1.0,
                      popularity_window_days=None)
    rec = Recommender(cfg, ServiceMetrics())
    logger = rec.impressions
    rates, p99, per_cpu = ({"on": [], "off": []} for _ in range(3))  # per_cpu: requests per CPU-second
    async with rec.running(watch=False):
        await timed_round(rec, bodies[:400], args.concurrency)  # warm up
        for n in range(args.rounds):
            for name in (("on", "off") if n % 2 == 0 else ("off", "on")):
                rec.impressions = logger if name == "on" and not args.aa else None
                cpu = time.process_time() + server_cpu()
                rate, tail = await timed_round(rec, bodies, args.concurrency)
                if rec.impressions is not None:
                    await asyncio.to_thread(logger.flush)  # this round's writes, counted here
                per_cpu[name].append(len(bodies) / (time.process_time() + server_cpu() - cpu))
                rates[name].append(rate)
                p99[name].append(tail)
        rec.impressions = logger
        logger.flush()
        logged, dropped = logger.written, logger.dropped
    return {"rates": rates, "p99": p99, "per_cpu": per_cpu, "logged": logged, "dropped": dropped}


# The impressions table and its indexes as the release before time-ordered ids had them.
_BEFORE = """CREATE TABLE impressions (seq INTEGER PRIMARY KEY AUTOINCREMENT, recommendation_id TEXT NOT NULL UNIQUE,
    user_id TEXT, ts REAL NOT NULL, body TEXT NOT NULL);
CREATE INDEX impressions_by_user ON impressions (user_id);
CREATE INDEX impressions_by_time ON impressions (ts);"""


def _parts(args, bodies: list[RecommendRequest], tmp: Path) -> None:
    """The logger's cost per impression by part, on this version's answers: the impression
    from the ids the batch worker hands over and from the answer's JSON (parsed); the SQLite
    insert (the store's statement and pragmas, batches of 400) into a table already holding
    ``--parts-rows`` impressions, as the store has it now (time-ordered ids, no user index)
    and as it was (random ids, an index by user)."""
    import sqlite3
    import uuid

    from groundrec.online.impressions import impression_of, new_recommendation_id
    from groundrec.online.serving import checked
    from groundrec.shared.events.sqlite import INSERT_IMPRESSION
    from groundrec.shared.events.store import impression_json

    cfg = ServeConfig(artifacts=args.artifacts, compute="thread", impressions=0, popularity_window_days=None)
    rec = Recommender(cfg, ServiceMetrics())

    async def answers():
        async with rec.running(watch=False):
            return rec.serving().answer([checked(cfg, b) for b in bodies[:400]])

    shown = asyncio.run(answers())
    for name, given in (("ids handed over", shown), ("JSON parsed", [a[0] for a in shown])):
        start = time.perf_counter()
        imps = [impression_of("r", "u", a, None, {"k": args.k}) for _ in range(10) for a in given]
        print(f"parts  impression from {name}: {(time.perf_counter() - start) / len(imps) * 1e6:.2f} us")
    body, chunk = impression_json(imps[0]), 400
    for name, ids, sync in (("now (time-ordered ids, no user index, synchronous=NORMAL)", new_recommendation_id, "NORMAL"),
                            ("with synchronous=FULL (before fb19124)", new_recommendation_id, "FULL"),
                            ("before (random ids, user index, FULL)", lambda: uuid.uuid4().hex, "FULL")):
        path = tmp / f"parts-{len(name)}.db"
        if name.startswith("before"):
            sqlite3.connect(path).executescript(_BEFORE)
        else:
            open_store(f"sqlite://{path}").close()  # the schema as the store creates it
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={sync}")
        spent, cpu, timed = 0.0, 0.0, 0
        for n in range(0, args.parts_rows + 20_000, chunk):
            rows = [(ids(), f"u{(n + j) * 7919 % 50_000}", time.time(), body, f"k{(n + j) * 7919 % 50_000}", 0.0)
                    for j in range(chunk)]  # the last two: the user's key and the time NOT_ERASED checks
            start, cpu_start = time.perf_counter(), time.process_time()
            conn.execute("BEGIN IMMEDIATE")
            if name.startswith("before"):  # no erasures table then, nor the check
                conn.executemany("INSERT OR IGNORE INTO impressions (recommendation_id, user_id, ts, body) "
                                 "VALUES (?, ?, ?, ?)", [r[:4] for r in rows])
            else:
                conn.executemany(INSERT_IMPRESSION, rows)
            conn.execute("COMMIT")
            if n >= args.parts_rows:
                spent, timed = spent + time.perf_counter() - start, timed + chunk
                cpu += time.process_time() - cpu_start
        start = time.perf_counter()
        conn.execute("DELETE FROM impressions WHERE user_id = ?", ("u7919",))  # a user's erasure (a scan now)
        erase = time.perf_counter() - start
        conn.close()
        print(f"parts  SQLite insert, {name}: {spent / timed * 1e6:.2f} us per impression, CPU "
              f"{cpu / timed * 1e6:.2f} us ({timed} timed after {args.parts_rows} in the table); erasing one "
              f"user's: {erase * 1e3:.1f} ms")
    _redis_part(imps[:4000] * 5, tmp)


def _redis_part(imps: list, tmp: Path) -> None:
    """The Redis store's add (its Lua script, batches of 400): CPU per impression in this
    process and in redis-server (appendfsync always), fresh ids each."""
    from dataclasses import replace

    from groundrec.online.impressions import new_recommendation_id

    proc, url = start_redis(tmp)
    try:
        store, server = open_store(url), _cpu_of(proc)
        imps = [replace(m, recommendation_id=new_recommendation_id()) for m in imps]
        ours, theirs = time.process_time(), server()
        for start in range(0, len(imps), 400):
            store.add_impressions(imps[start:start + 400])
        ours, theirs = time.process_time() - ours, server() - theirs
        print(f"parts  Redis add: {ours / len(imps) * 1e6:.2f} us per impression here, "
              f"{theirs / len(imps) * 1e6:.2f} us in redis-server ({len(imps)} impressions)")
    finally:
        proc.terminate()
        proc.wait(10)


def _cpu_of(proc):
    """() -> CPU seconds (user + system) the process ``proc`` has used so far (0 without one)."""
    if proc is None:
        return lambda: 0.0
    import psutil

    server = psutil.Process(proc.pid)
    return lambda: sum(server.cpu_times()[:2])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--interactions", required=True)
    ap.add_argument("--stores", default="sqlite,redis")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--aa", action="store_true", help="A/A control: the logger detached in both arms' rounds "
                    "(what the comparison reads when logging costs nothing)")
    ap.add_argument("--parts", action="store_true", help="also time the logger's parts per impression")
    ap.add_argument("--parts-rows", type=int, default=200_000, help="impressions in the table before --parts times")
    args = ap.parse_args()
    histories = [h for h in load_histories(args.interactions) if h]
    bodies = [RecommendRequest(history=histories[n % len(histories)], k=args.k) for n in range(args.requests)]
    print(f"{len(bodies)} POST /recommend bodies (k={args.k}) per round, {args.concurrency} in flight, "
          f"{args.rounds} alternating rounds, compute: thread, version {args.artifacts}"
          + ("; A/A control: no round logs" if args.aa else ""))
    if args.parts:
        with tempfile.TemporaryDirectory() as tmp:
            _parts(args, bodies, Path(tmp))
    for store in [s for s in args.stores.split(",") if s]:
        with tempfile.TemporaryDirectory() as tmp:
            proc, url = start_redis(Path(tmp)) if store == "redis" else (None, f"sqlite://{tmp}/events.db")
            try:
                r = asyncio.run(_compare(args, url, bodies, _cpu_of(proc)))
                check = open_store(url)
                stored = sum(len(b) for b in check.scan_impressions())
                check.close()
            finally:
                if proc is not None:
                    proc.terminate()
                    proc.wait(10)
        on, off = np.median(r["rates"]["on"]), np.median(r["rates"]["off"])
        ratios = [a / b for a, b in zip(r["rates"]["on"], r["rates"]["off"])]
        print(f"{store:6s} logging on {on:8.1f} req/s (p99 {np.median(r['p99']['on']) * 1e3:.1f} ms)  "
              f"off {off:8.1f} req/s (p99 {np.median(r['p99']['off']) * 1e3:.1f} ms)  on/off {on / off:.1%} "
              f"(rounds {min(ratios):.1%} to {max(ratios):.1%}); impressions written {r['logged']}, "
              f"in the store {stored}, dropped {r['dropped']}")
        c_on, c_off = np.median(r["per_cpu"]["on"]), np.median(r["per_cpu"]["off"])
        c_ratios = [a / b for a, b in zip(r["per_cpu"]["on"], r["per_cpu"]["off"])]
        print(f"{store:6s} requests per CPU-second: on {c_on:8.1f}  off {c_off:8.1f}  on/off {c_on / c_off:.1%} "
              f"(rounds {min(c_ratios):.1%} to {max(c_ratios):.1%})")


if __name__ == "__main__":
    main()
