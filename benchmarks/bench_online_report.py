"""Time `groundrec online report` end to end over a large SQLite store, with peak memory.

Fills a store through the store API (``add_impressions`` and ``add`` in large chunks, day by
day in time order) with a synthetic shop: ``--users`` users, ``--items`` items, ``--days`` days,
``--impressions`` lists of 10 items (arms A and B by user, a share of them interleaved), and
``--events`` events in all: a click on a shown item for 30% of the lists (half of them sending
the recommendation id), a purchase after a fifth of those clicks, and background events on
random items (credited only when the window finds a list). Then runs the command in a child
process: its wall and CPU time (with the machine's load average) and its peak RSS (the
child's own maximum, and the process tree's as sampled, which adds this script's memory).

    .venv/bin/python benchmarks/bench_online_report.py --events 10000000 --impressions 1000000
    .venv/bin/python benchmarks/bench_online_report.py --store /tmp/shop.db --reuse   # time again
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PeakMemory  # noqa: E402

from groundrec.shared.events.store import Event, Impression, open_store  # noqa: E402

T0 = 1_760_000_000.0
K = 10


def fill(url: str, n_events: int, n_impressions: int, users: int, items: int, days: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    store = open_store(url)
    made = {"impressions": 0, "events": 0}
    per_day_imp = n_impressions // days
    clicks_per_day = int(per_day_imp * 0.3)
    buys_per_day = clicks_per_day // 5
    background = max(0, n_events // days - clicks_per_day - buys_per_day)
    item_names = np.array([f"item{j}" for j in range(items)], dtype=object)
    user_names = np.array([f"user{j}" for j in range(users)], dtype=object)
    for day in range(days):
        start = T0 + day * 86_400
        ts = np.sort(start + rng.random(per_day_imp) * 86_400)
        who = rng.integers(0, users, per_day_imp)
        shown = rng.integers(0, items, (per_day_imp, K))
        interleaved = rng.random(per_day_imp) < 0.2
        team_draws = rng.random((per_day_imp, K)) < 0.5
        imps = []
        for i in range(per_day_imp):
            u = user_names[who[i]]
            arm = "A" if who[i] % 2 else "B"
            teams = tuple("A" if x else "B" for x in team_draws[i]) if interleaved[i] else None
            imps.append(Impression(f"r{day}-{i}", u, float(ts[i]), "v1" if day < days // 2 else "v2",
                                   tuple(item_names[shown[i]]), "AB" if teams else arm, teams))
        clicked = rng.choice(per_day_imp, clicks_per_day, replace=False)
        pos = rng.integers(0, K, clicks_per_day)
        delay = rng.exponential(120, clicks_per_day)
        ev_t = [ts[clicked] + delay, ts[clicked[:buys_per_day]] + delay[:buys_per_day] + 600,
                start + rng.random(background) * 86_400]
        ev_user = [who[clicked], who[clicked[:buys_per_day]], rng.integers(0, users, background)]
        ev_item = [shown[clicked, pos], shown[clicked[:buys_per_day], pos[:buys_per_day]],
                   rng.integers(0, items, background)]
        ev_rid = [np.where(rng.random(clicks_per_day) < 0.5, clicked, -1), np.full(buys_per_day, -1),
                  np.full(background, -1)]
        kind = np.repeat(np.array([0, 1, 0]), [clicks_per_day, buys_per_day, background])
        t_all, u_all, i_all, r_all = (np.concatenate(x) for x in (ev_t, ev_user, ev_item, ev_rid))
        order = np.argsort(t_all, kind="stable")
        names = ("click", "purchase")
        events = [Event(user_names[u_all[j]], item_names[i_all[j]], float(t_all[j]), names[kind[j]], 1.0, None,
                        f"r{day}-{r_all[j]}" if r_all[j] >= 0 else None) for j in order]
        for c in range(0, len(imps), 200_000):
            store.add_impressions(imps[c:c + 200_000])
        for c in range(0, len(events), 200_000):
            store.add(events[c:c + 200_000])
        made["impressions"] += len(imps)
        made["events"] += len(events)
        print(f"  day {day + 1}/{days}: {made['events']} events, {made['impressions']} impressions", flush=True)
    store.close()
    return made


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--impressions", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store", type=Path, default=None, help="SQLite file (default: a temporary one)")
    ap.add_argument("--reuse", action="store_true", help="the store is already filled: only time the report")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_online_report_")
    path = args.store or Path(tmp) / "events.db"
    url = f"sqlite:///{path.resolve()}"
    if not args.reuse:
        if path.exists():
            raise SystemExit(f"{path} exists: remove it, or pass --reuse to time the report on it")
        started = time.perf_counter()
        made = fill(url, args.events, args.impressions, args.users, args.items, args.days, args.seed)
        fill_s = time.perf_counter() - started
        print(f"filled {made['events']} events + {made['impressions']} impressions in {fill_s:.1f} s through "
              f"the store API ({(made['events'] + made['impressions']) / fill_s:,.0f} rows/s); "
              f"{path.stat().st_size / 2**30:.2f} GiB")
    out = Path(tmp) / "report"
    cli = Path(sys.executable).parent / "groundrec"
    started = time.perf_counter()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with PeakMemory(0.2) as mem:
        r = subprocess.run([str(cli), "online", "report", "--events", url, "--out", str(out)],
                           capture_output=True, text=True)
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    res = json.loads((out / "results.json").read_text())
    print(r.stdout.strip())
    print(json.dumps({"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "load_average": os.getloadavg(),
                      "peak_rss_gib_command": round(cpu_after.ru_maxrss / 2**20, 2),  # the child's own peak (KiB)
                      "peak_rss_gib_tree": round(mem.peak_gib, 2),  # sampled, with this script's own memory
                      "timing_s": res["timing_s"], "attribution": res["attribution"],
                      "ctr": {a: res["arms"][a]["ctr"] for a in res["arms"]}}, indent=1))


if __name__ == "__main__":
    main()
