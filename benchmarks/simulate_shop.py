"""A simulated shop on the real service: an A/B test and team-draft interleaving of a truly
better version against a worse one, read back by ``groundrec online report``.

The shop: ``make_dense_data`` (planted preferences: each user favours two topics, named in the
titles, and four bundles, which only interactions reveal), its purchases split by time at one
cutoff (``--train-share`` of the mean timeline): before it they train, after it they are each
user's ground truth (the distinct items the user will buy, less those bought before). Users
with no purchase on either side are left out.

The versions, both published by the real job (``run_job``; text only, the catalog has no
images; a tiny random VLM; no ONNX export: users are answered from their history): *better*, the
hybrid (content + collaborative, chosen on validation) on the training part; *worse*, content
only (``collab.weight: [0.0]``) on the same part.

The service (``create_app`` served over HTTP by uvicorn in this process, ``compute: thread``,
a SQLite event store per run): an experiment whose two arms pin the two version ids, first
``mode: ab`` (each user sticks to one arm), then, on a fresh store, ``mode: team_draft`` (every
list interleaves the two arms). Each user's training purchases are first posted as events
(type purchase, with their timestamps): the service reads a user's history from the store.

The users: each makes ``--sessions`` requests (POST /recommend with its user_id and k, the
users' requests shuffled together). Clicks follow a position-based model: the item at 1-based
position r is examined with probability ``1 / r``; an examined item is clicked with probability
``--p-relevant`` (default 0.5) when it is in the user's ground truth, ``--p-other`` (default
0.02) otherwise; clicks are independent. Each click is posted as an event (type view) at
once, without a timestamp (the server stamps it; ``--dwell-s`` stamps it later instead), with
the answer's recommendation_id, except for a share ``--no-id-share`` of the lists, whose
clicks are sent without it (the report credits them by its window rule).

Then ``groundrec online report`` on each store, and its results.json: the A/B test on CTR
(lists with a click / lists, two-sample test over users) and the interleaving sign test. The
report's counts are compared with what the simulator sent (every click credited to its list's
arm). Users needed for p < 0.05: the users logged are resampled (a bootstrap: with
replacement, ``--draws`` draws per size, on a grid of sizes in steps of sqrt(2) up to all of
them) and the report's own tests (``two_sample_test``, ``sign_test``) run on the simulator's
per-user tallies of each draw (the same numbers the report counted, as the comparison checks);
printed per size: the share of draws with p < 0.05 and the better arm found better (power),
and the median p. The users needed: where the power reaches 0.8, interpolated on log(size).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/simulate_shop.py
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

T0 = 1_700_000_000  # make_dense_data's first timestamp: step s of user u is at T0 + s * 3600 + u
BETTER, WORSE = "better", "worse"


# --- the shop and its two versions --------------------------------------------------------
def make_shop(root: Path, vlm: Path | str, *, items: int = 300, users: int = 300, per_user: int = 40,
              train_share: float = 0.6, seed: int = 3) -> dict:
    """The catalog, the training purchases (before the cutoff), each user's history (item,
    timestamp) and ground truth, and the two versions published from the training part."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from groundrec.offline.config import load_job_config
    from groundrec.offline.dev.dense_catalog import make_dense_data
    from groundrec.offline.job import run_job

    paths = make_dense_data(root / "data", n_items=items, n_users=users, per_user=per_user, seed=seed)
    table = pq.read_table(paths["interactions"])
    seconds = pc.cast(pc.cast(table.column("timestamp"), "timestamp[s]"), "int64")
    cutoff = T0 + int(train_share * per_user) * 3600
    train = table.filter(pc.less(seconds, cutoff))
    pq.write_table(train, root / "train.parquet")
    history: dict[str, list[tuple[str, float]]] = {}
    after: dict[str, set[str]] = {}
    for user, item, ts in zip(table.column("user_id").to_pylist(), table.column("item_id").to_pylist(),
                              seconds.to_pylist()):
        if ts < cutoff:
            history.setdefault(user, []).append((item, float(ts)))
        else:
            after.setdefault(user, set()).add(item)
    truth = {u: after[u] - {i for i, _ in history[u]} for u in history if u in after}
    truth = {u: t for u, t in truth.items() if t}
    history = {u: history[u] for u in truth}
    overrides = {"catalog.path": str(paths["catalog"]), "out": str(root / "artifacts"),
                 "interactions.path": str(root / "train.parquet"), "catalog.text_columns": ["title"],
                 "encoder.template": "{title}", "run.runner": "local", "export.enabled": False,
                 "thumbnails.enabled": False, "vlm.model": str(vlm), "publish.activate": "always"}
    better = run_job(load_job_config(None, overrides), progress=False)
    if not better.learned or not better.learned.hybrid:
        raise SystemExit("the job did not publish a hybrid on the training part: no better version to compare")
    worse = run_job(load_job_config(None, {**overrides, "collab.weight": [0.0]}), progress=False)
    return {"artifacts": root / "artifacts", "history": history, "truth": truth,
            "versions": {BETTER: better.version, WORSE: worse.version}, "cutoff": cutoff,
            "train_rows": train.num_rows}


# --- the service ---------------------------------------------------------------------------
@contextmanager
def serve(shop: dict, store: Path, mode: str):
    """The real service over HTTP with an experiment pinning the two versions; its base URL."""
    from groundrec.online.config import ServeConfig
    from groundrec.online.service import create_app
    from groundrec.online.testing import running

    arms = [{"name": name, "version": version} for name, version in shop["versions"].items()]
    cfg = ServeConfig(artifacts=str(shop["artifacts"]), events=f"sqlite:///{store}", compute="thread",
                      popularity_window_days=None,  # the versions' own popularity: nothing drifts with the clicks
                      experiment={"name": f"sim-{mode}", "mode": mode, "arms": arms})
    with running(create_app(cfg)) as url:
        yield url


def post_histories(client, url: str, history: dict[str, list[tuple[str, float]]], batch: int = 1000) -> int:
    """Each user's training purchases as events (their timestamps); how many were sent."""
    events = [{"user_id": u, "item_id": i, "timestamp": ts, "type": "purchase"}
              for u, items in history.items() for i, ts in items]
    for start in range(0, len(events), batch):
        r = client.post(url + "/events", json={"events": events[start:start + batch]})
        r.raise_for_status()
    return len(events)


# --- the users -----------------------------------------------------------------------------
def examination(k: int) -> list[float]:
    """The position-based model's examination probability of each position (1-based r: 1 / r)."""
    return [1.0 / r for r in range(1, k + 1)]


def simulate(client, url: str, truth: dict[str, set[str]], *, sessions: int, k: int, p_relevant: float,
             p_other: float, no_id_share: float, seed: int, dwell_s: float | None = None) -> list[dict]:
    """Every user's ``sessions`` requests, shuffled together; clicks drawn and posted. One
    record per list shown: user, arm, version, items, teams, clicked positions, with_id.

    ``dwell_s``: None, a click is sent without a timestamp, right after its answer (the server
    stamps it on receipt, a few milliseconds after the answer); else it is stamped by the
    client this long after its answer was received (the user's time to read the list)."""
    rng = random.Random(seed)
    order = [u for u in truth for _ in range(sessions)]
    rng.shuffle(order)
    look = examination(k)
    log = []
    for user in order:
        r = client.post(url + "/recommend", json={"user_id": user, "k": k})
        r.raise_for_status()
        answer = r.json()
        seen_at = time.time()
        items = [i["item_id"] for i in answer["items"]]
        clicked = [p for p, item in enumerate(items)
                   if rng.random() < look[p] * (p_relevant if item in truth[user] else p_other)]
        with_id = rng.random() >= no_id_share
        if clicked:
            stamp = {} if dwell_s is None else {"timestamp": seen_at + dwell_s}
            events = [{"user_id": user, "item_id": items[p], "type": "view", **stamp,
                       **({"recommendation_id": answer["recommendation_id"]} if with_id else {})} for p in clicked]
            reply = client.post(url + "/events", json={"events": events})
            reply.raise_for_status()
            if reply.json()["unattributed"]:
                raise RuntimeError(f"the service did not credit a click to the list that showed it: {reply.json()}")
        log.append({"user": user, "rid": answer["recommendation_id"], "arm": answer["arm"],
                    "version": answer["version"], "items": items, "teams": answer.get("teams"),
                    "clicked": clicked, "with_id": with_id})
    return log


def run_mode(shop: dict, store: Path, mode: str, args, seed: int) -> tuple[list[dict], int, float]:
    """Serve ``mode``, post the histories, simulate the users: (log, history events, seconds)."""
    import httpx

    started = time.perf_counter()
    with serve(shop, store, mode) as url, httpx.Client(timeout=30) as client:
        posted = post_histories(client, url, shop["history"])
        log = simulate(client, url, shop["truth"], sessions=args.sessions, k=args.k, p_relevant=args.p_relevant,
                       p_other=args.p_other, no_id_share=args.no_id_share, seed=seed,
                       dwell_s=args.dwell_s)
    return log, posted, time.perf_counter() - started


# --- the report and what the simulator expects of it ---------------------------------------
def report(store: Path, out: Path, *, cli: bool = False, bootstrap: int = 200) -> dict:
    """``groundrec online report`` on ``store`` (the command, or its Python entry point); results.json."""
    if cli:
        cmd = [sys.executable, "-m", "groundrec.shared.cli", "online", "report", "--events", f"sqlite:///{store}",
               "--out", str(out), "--bootstrap", str(bootstrap)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    else:
        from groundrec.online.report.run import ReportConfig, run

        run(ReportConfig(events=f"sqlite:///{store}", out=out, bootstrap=bootstrap))
    return json.loads((out / "results.json").read_text())


def expected(log: list[dict]) -> dict:
    """What the report must count from the simulator's log: per arm impressions, lists with a
    click, users; clicks sent with and without an id; per team the engaged positions credited."""
    arms: dict[str, dict] = {}
    teams: dict[str, int] = {}
    by_id = by_window = 0
    for rec in log:
        a = arms.setdefault(rec["arm"], {"impressions": 0, "clicks": 0, "users": set()})
        a["impressions"] += 1
        a["clicks"] += bool(rec["clicked"])
        a["users"].add(rec["user"])
        by_id += len(rec["clicked"]) if rec["with_id"] else 0
        by_window += 0 if rec["with_id"] else len(rec["clicked"])
        for team in set(rec["teams"] or []):
            teams.setdefault(team, 0)
        for p in rec["clicked"]:
            if rec["teams"]:
                teams[rec["teams"][p]] += 1
    return {"arms": {n: {**a, "users": len(a["users"])} for n, a in arms.items()}, "by_id": by_id,
            "by_window": by_window, "credits": teams}


def per_user(log: list[dict]) -> dict[str, dict]:
    """Per user: arm (A/B), lists, lists with a click, and per team the credits (interleaving)."""
    out: dict[str, dict] = {}
    for rec in log:
        u = out.setdefault(rec["user"], {"arm": rec["arm"], "lists": 0, "clicked": 0, "credits": {}})
        u["lists"] += 1
        u["clicked"] += bool(rec["clicked"])
        for p in rec["clicked"]:
            if rec["teams"]:
                u["credits"][rec["teams"][p]] = u["credits"].get(rec["teams"][p], 0) + 1
    return out


def ab_p(users: list[dict]) -> tuple[float, bool]:
    """The report's A/B test on CTR between the two arms: (p, the better arm found better)."""
    from groundrec.shared.stats import two_sample_test

    arm = np.array([u["arm"] == BETTER for u in users])
    num = np.array([u["clicked"] for u in users], float)
    den = np.array([u["lists"] for u in users], float)
    t = two_sample_test(num[arm], den[arm], num[~arm], den[~arm])  # diff = worse - better
    return (t["p"] if t["p"] == t["p"] else 1.0), t["diff"] < 0


def interleaving_p(users: list[dict]) -> tuple[float, bool]:
    """The report's interleaving sign test: (p, the better arm found better)."""
    from groundrec.shared.stats import sign_test

    wins_b = sum(u["credits"].get(BETTER, 0) > u["credits"].get(WORSE, 0) for u in users)
    wins_w = sum(u["credits"].get(WORSE, 0) > u["credits"].get(BETTER, 0) for u in users)
    return sign_test(wins_b, wins_w), wins_b > wins_w


def users_needed(users: list[dict], test, draws: int = 200, seed: int = 0) -> tuple[float | None, list[tuple]]:
    """Resample ``users`` (with replacement) at sizes in steps of sqrt(2): per size the power
    (share of draws with p < 0.05, better found better) and the median p; the size where the
    power reaches 0.8, interpolated on log(size) between the two sizes around it (None: not
    within the users logged)."""
    rng = np.random.default_rng(seed)
    sizes, n = [], 8.0
    while n < len(users):
        sizes.append(int(round(n)))
        n *= math.sqrt(2)
    sizes.append(len(users))
    rows, needed = [], None
    warnings.simplefilter("ignore", RuntimeWarning)  # a draw with one user in an arm: its variance is undefined
    for size in sizes:
        results = [test([users[i] for i in rng.integers(0, len(users), size)]) for _ in range(draws)]
        power = float(np.mean([p < 0.05 and right for p, right in results]))
        rows.append((size, power, float(np.median([p for p, _ in results]))))
        if needed is None and power >= 0.8:
            needed = float(size)
            if len(rows) > 1 and rows[-2][1] < power:
                (n0, p0, _), (n1, p1, _) = rows[-2], rows[-1]
                needed = math.exp(math.log(n0) + (0.8 - p0) / (p1 - p0) * (math.log(n1) - math.log(n0)))
    return needed, rows


def check(results: dict, log: list[dict], history_events: int) -> list[str]:
    """Where the report's counts differ from what the simulator sent (empty: none)."""
    want, got = expected(log), results["attribution"]
    problems = []
    for name, a in want["arms"].items():
        have = results["arms"].get(name, {})
        for key in ("impressions", "clicks", "users"):
            if have.get(key) != a[key]:
                problems.append(f"arm {name}: {key} {have.get(key)} in the report, {a[key]} sent")
    if (got["by_id"], got["by_window"]) != (want["by_id"], want["by_window"]):
        problems.append(f"clicks credited by id / by window: {got['by_id']} / {got['by_window']} in the report, "
                        f"{want['by_id']} / {want['by_window']} sent")
    if got["unverified"] or got["unattributed"] != history_events:
        problems.append(f"{got['unverified']} unverified, {got['unattributed']} unattributed events; expected 0 and "
                        f"the {history_events} history events")
    for t in results["interleaving"]:
        sent = (want["credits"].get(t["a"]), want["credits"].get(t["b"]))
        if (t["credits_a"], t["credits_b"]) != sent:
            problems.append(f"interleaving credits {t['a']} / {t['b']}: {t['credits_a']} / {t['credits_b']} in the "
                            f"report, {sent[0]} / {sent[1]} sent")
    return problems


# --- the script ----------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--users", type=int, default=1500, help="users of the catalog (those with purchases on both "
                    "sides of the cutoff take part)")
    ap.add_argument("--per-user", type=int, default=40, help="mean purchases per user")
    ap.add_argument("--train-share", type=float, default=0.6, help="the cutoff, as a share of the mean timeline")
    ap.add_argument("--sessions", type=int, default=4, help="requests per user")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--p-relevant", type=float, default=0.5, help="click probability of an examined ground-truth item")
    ap.add_argument("--p-other", type=float, default=0.02, help="click probability of any other examined item")
    ap.add_argument("--no-id-share", type=float, default=0.2, help="share of lists whose clicks carry no id")
    ap.add_argument("--dwell-s", type=float, default=None, help="stamp a click's event this long after its answer "
                    "(the user's reading time); default: no timestamp sent, the server stamps it on receipt")
    ap.add_argument("--draws", type=int, default=200, help="resamples per size for the users needed")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    args = ap.parse_args()

    from groundrec.offline.dev.tiny_models import build_tiny_vlm

    work = args.work or Path(tempfile.mkdtemp(prefix="simulate-shop-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    shop = make_shop(work, build_tiny_vlm("smolvlm", work / "vlm"), items=args.items, users=args.users,
                     per_user=args.per_user, train_share=args.train_share, seed=args.seed)
    truth_sizes = [len(t) for t in shop["truth"].values()]
    print(f"shop: {args.items} items, {len(shop['truth'])} users taking part, {shop['train_rows']} training "
          f"purchases, ground truth {np.mean(truth_sizes):.1f} items per user on average; versions "
          f"better={shop['versions'][BETTER]} (hybrid), worse={shop['versions'][WORSE]} (content only); "
          f"built in {time.perf_counter() - started:.1f} s")
    print(f"clicks: position r examined with p = 1/r; examined item clicked with p = {args.p_relevant} in the ground "
          f"truth, {args.p_other} otherwise; {args.sessions} requests per user, k = {args.k}; "
          f"{args.no_id_share:.0%} of the lists' clicks sent without an id")
    summary = {}
    for mode, seed in (("ab", args.seed), ("team_draft", args.seed + 1)):
        store = work / f"{mode}.db"
        store.unlink(missing_ok=True)
        log, posted, took = run_mode(shop, store, mode, args, seed)
        results = report(store, work / f"report-{mode}", cli=True)
        problems = check(results, log, posted)
        clicks = sum(len(r["clicked"]) for r in log)
        without = sum(len(r["clicked"]) for r in log if not r["with_id"])
        print(f"\n[{mode}] {len(log)} lists, {clicks} clicks sent ({without} without an id) in {took:.1f} s; "
              f"report: {results['attribution']}")
        print("  report counts match the simulator" if not problems else "  MISMATCH: " + "; ".join(problems))
        users = list(per_user(log).values())
        if mode == "ab":
            for name, a in sorted(results["arms"].items()):
                print(f"  arm {name}: {a['users']} users, {a['impressions']} lists, CTR {a['ctr']:.4f} "
                      f"[{a['ctr_ci'][0]:.4f}, {a['ctr_ci'][1]:.4f}]")
            t = next(t for t in results["ab_tests"] if t["metric"] == "ctr")
            print(f"  A/B test ({t['a']} vs {t['b']}): diff {t['diff']:+.4f} (b - a), p = {t['p']:.3g}")
            needed, rows = users_needed(users, ab_p, args.draws)
            summary["ab"] = {"p": t["p"], "needed": needed, "users": len(users)}
        else:
            t = results["interleaving"][0]
            print(f"  interleaving ({t['a']} vs {t['b']}): {t['users']} users, wins {t['wins_a']} / {t['wins_b']} / "
                  f"ties {t['ties']}, credits {t['credits_a']} / {t['credits_b']}, p (sign) = {t['p_sign']:.3g}, "
                  f"p (paired) = {t['p_paired']:.3g}")
            needed, rows = users_needed(users, interleaving_p, args.draws)
            summary["interleaving"] = {"p": t["p_sign"], "needed": needed, "users": len(users)}
        print("  users  power  median p")
        for size, power, p in rows:
            print(f"  {size:5d}  {power:5.2f}  {p:.3g}")
        if problems:
            summary["mismatch"] = True
    ab, il = summary["ab"], summary["interleaving"]
    fmt = lambda x: f"{x['needed']:.0f}" if x["needed"] else f"> {x['users']}"  # noqa: E731
    ratio = f"{ab['needed'] / il['needed']:.1f}x fewer" if ab["needed"] and il["needed"] else "ratio not resolved"
    print(f"\nusers for 80% power at p < 0.05: A/B {fmt(ab)}, interleaving {fmt(il)} ({ratio}); "
          f"all users: A/B p = {ab['p']:.3g}, interleaving p = {il['p']:.3g}; "
          f"total {time.perf_counter() - started:.0f} s")
    if summary.get("mismatch"):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
