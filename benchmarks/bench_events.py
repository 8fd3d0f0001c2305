"""The events API and recommendations by user id, measured with wrk (Debian package `wrk`)
against `groundrec serve` over ARTIFACTS, for each event store (SQLite, Redis), side by side
in one run:

  load         the histories of HISTORIES (an interactions table, e.g. the H&M customers') posted
               as purchase events, 100 per request (one client): their count and time;
  ingest x100  POST /events with 100 new events per request, 32 connections: events/s, p99;
  ingest x1    POST /events with one event per request, 32 connections: requests/s, p50, p99;
  by user      POST /recommend {"user_id", "k": 20} vs the same users' histories sent in the
               request, 32 connections, alternating --rounds times: the ratio of median rates.

Redis runs as `redis-server --appendonly yes --appendfsync always` (the durable setting of
docs/operations.md), SQLite with WAL and synchronous=FULL; the server, its store and wrk share
this machine's cores.

Usage: python benchmarks/bench_events.py --artifacts DIR --histories FILE
           [--stores sqlite,redis] [--connections 32] [--duration 10] [--rounds 3] [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_http import LUA, _wrk  # noqa: E402
from common import start_redis  # noqa: E402

from groundrec.online.testing import serving  # noqa: E402
from groundrec.shared.tables import read_table  # noqa: E402


def _user_histories(path: str, max_len: int) -> dict[str, list[tuple[str, float]]]:
    table = read_table(path).sort_by([("user_id", "ascending"), ("timestamp", "ascending")])
    ts = table.column("timestamp").cast("timestamp[s]").cast("int64").to_pylist()
    users: dict[str, list[tuple[str, float]]] = {}
    for u, i, t in zip(table.column("user_id").to_pylist(), table.column("item_id").to_pylist(), ts):
        users.setdefault(str(u), []).append((str(i), float(t)))
    return {u: h[-max_len:] for u, h in users.items()}


def _bodies(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(b) + "\n" for b in lines))
    return path


def _run_store(store: str, args, users: dict, tmp: Path) -> dict:
    extra = []
    if store == "redis":
        redis_proc, url_events = start_redis(tmp / "redis")
    else:
        redis_proc, url_events = None, f"sqlite://{tmp / 'events.db'}"
    config = tmp / f"serve-{store}.yaml"
    config.write_text(json.dumps({"events": url_events, "max_history": args.max_history}))
    try:
        with serving(args.artifacts, "-c", str(config), *extra) as server:
            url = server.url
            out: dict = {"store": store, "url": url_events}
            # load: every user's history as purchase events, 100 per request
            events = [{"user_id": u, "item_id": i, "timestamp": t} for u, h in users.items() for i, t in h]
            started = time.perf_counter()
            with httpx.Client(base_url=url, timeout=30) as c:
                for n in range(0, len(events), 100):
                    r = c.post("/events", json={"events": events[n:n + 100]})
                    r.raise_for_status()
            out["load"] = {"events": len(events), "users": len(users), "seconds": round(time.perf_counter() - started, 2)}
            env = {**os.environ, "BENCH_PATH": "/events"}
            script = tmp / "bench.lua"
            script.write_text(LUA)
            rng = random.Random(0)
            items = sorted({i for h in users.values() for i, _ in h})
            hundred = [{"events": [{"user_id": f"bench-{rng.randrange(10**6)}", "item_id": rng.choice(items),
                                    "type": "view"} for _ in range(100)]} for _ in range(200)]
            env["BENCH_BODIES"] = str(_bodies(tmp / "ev100.jsonl", hundred))
            r = _wrk(url, args.connections, args.duration, env, script)
            out["ingest_x100"] = {**r, "events_per_s": round(r["ok_per_s"] * 100, 1)}
            single = [{"events": [{"user_id": f"bench-{rng.randrange(10**6)}", "item_id": rng.choice(items)}]}
                      for _ in range(2000)]
            env["BENCH_BODIES"] = str(_bodies(tmp / "ev1.jsonl", single))
            out["ingest_x1"] = _wrk(url, args.connections, args.duration, env, script)
            # by user id vs the same history in the request
            chosen = list(users)[: args.users]
            by_user = _bodies(tmp / "by-user.jsonl", [{"user_id": u, "k": 20} for u in chosen])
            by_history = _bodies(tmp / "by-history.jsonl", [{"history": [i for i, _ in users[u]], "k": 20} for u in chosen])
            env["BENCH_PATH"] = "/recommend"
            rates: dict[str, list[float]] = {"user_id": [], "history": []}
            runs: dict[str, list[dict]] = {"user_id": [], "history": []}
            for _ in range(args.rounds):
                for name, bodies in (("user_id", by_user), ("history", by_history)):
                    env["BENCH_BODIES"] = str(bodies)
                    r = _wrk(url, args.connections, args.duration, env, script)
                    rates[name].append(r["ok_per_s"])
                    runs[name].append(r)
            out["recommend"] = {name: {"ok_per_s_median": statistics.median(v), "rounds": runs[name]}
                                for name, v in rates.items()}
            out["recommend"]["ratio_user_id_to_history"] = round(
                statistics.median(rates["user_id"]) / statistics.median(rates["history"]), 3)
            return out
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", required=True)
    p.add_argument("--histories", required=True, help="interactions table: user_id, item_id, timestamp")
    p.add_argument("--stores", default="sqlite,redis")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--users", type=int, default=2000, help="users in the by-user bodies")
    p.add_argument("--max-history", type=int, default=50)
    p.add_argument("--json-out")
    args = p.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    users = _user_histories(args.histories, args.max_history)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        for store in args.stores.split(","):
            (Path(tmp) / store / "redis").mkdir(parents=True)
            results.append(_run_store(store, args, users, Path(tmp) / store))
    print(f"{'store':8} {'load ev/s':>10} {'x100 ev/s':>10} {'x100 p99':>9} {'x1 req/s':>9} {'x1 p50':>7} "
          f"{'x1 p99':>7} {'by user/s':>10} {'history/s':>10} {'ratio':>6}")
    for r in results:
        rec = r["recommend"]
        print(f"{r['store']:8} {r['load']['events'] / r['load']['seconds']:10.0f} {r['ingest_x100']['events_per_s']:10.0f} "
              f"{r['ingest_x100']['p99_ms']:8.1f}ms {r['ingest_x1']['ok_per_s']:9.0f} {r['ingest_x1']['p50_ms']:6.1f}ms "
              f"{r['ingest_x1']['p99_ms']:6.1f}ms {rec['user_id']['ok_per_s_median']:10.0f} "
              f"{rec['history']['ok_per_s_median']:10.0f} {rec['ratio_user_id_to_history']:6.3f}")
        errors = {k: r[k]["other_status"] + r[k]["shed_503"] for k in ("ingest_x100", "ingest_x1")}
        print(f"         non-200 answers: {errors}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
