"""The items API (issue 33) on a published H&M version, side by side in one run. New items carry
H&M texts (a catalog row's columns from --catalog, its title made unique by a made-up word), no
image: text only, embedded by the server with the version's ONNX encoder.

0. encoder     the version's ONNX encoder alone on 128 such texts: ms per text by batch size,
   wall and CPU, by intra-op threads (--encoder-threads); other encoder directories beside it
   in the same rounds (--encoders NAME=DIR: benchmarks/encoder_graphs.py writes a fused graph).
1. visibility  PUT an item on server A, then POST /search its title on A once and on B, a
   second `groundrec serve` on the same SQLite store, until the item is in the answer (top
   --search-k). Per item, the delay from the PUT's answer to the answer of the first search
   that holds it (0 on A when its first search does); p50/p99 over --items; and whether B's
   /recommend then knows the item (a history of it alone: no unknown_ids).
2. upserts     on a server alone, for each --variants (the serve config's encoder_variant:
   fp32, int8; /alone: its standby encodes none of the texts; fp32 with part 1: on A, singles
   only): single PUTs at 8 connections (wrk, --duration s, each request a new item),
   then POST /items in batches of 100 on one connection (--other-batches): items/s, the
   encoding included. The fp32 batches (10,000 items by default) are the live items of 3.
3. /recommend with those live items against none: in-process, two ``Recommender``s
   (`compute: thread`, impressions off; the service's request path) in alternating rounds of
   the same H&M purchase histories at 32 in flight (bench_impressions.py's rounds), requests/s
   and requests per CPU-second; over HTTP, two `groundrec serve`s (the store with the live
   items, an empty one), wrk at 32 connections on POST /recommend, alternating rounds: ok/s, p99.
4. feed         /recommend at 8 connections (wrk) with and without a feed of POST /items of 100
   running beside it, alternating rounds, per --feed-variants (int8: the compute process encodes
   its share 8 texts per call; int8/whole: in one call): p99, ok/s and the feed's items/s.

Servers are `groundrec serve --artifacts ARTIFACTS --interactions FILE --events sqlite:///TMP/...`
(defaults otherwise: a compute process and its standby per server, live_poll_s 0.25): nothing is
written into ARTIFACTS. Server, clients and wrk share this machine's cores.

    python benchmarks/bench_items.py --artifacts DIR [--interactions FILE] [--catalog FILE]
        [--items 200] [--duration 10] [--batches 100] [--variants fp32,int8] [--rounds 7]
        [--http-rounds 3] [--connections 32] [--requests 2000] [--parts 0,1,2,3] [--feed-variants int8,int8/whole]
        [--encoders NAME=DIR,...] [--encoder-threads 1,2] [--encoder-batches 1,2,4,8,16,64]
        [--encoder-rounds 3] [--encoder-profile]

ARTIFACTS must hold a published H&M version (CURRENT). To publish one (the H&M catalog in
../shared/data/hm; a VLM as README.md says):

    groundrec offline run --config deploy/hm.job.yaml --out OUT/hm \\
        --interactions ../shared/data/hm/interactions.parquet [--vlm DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq

from groundrec.online.loadtest import load_histories
from groundrec.online.testing import serve_command, started

sys.path.insert(0, str(Path(__file__).parent))
from bench_http import LUA, _wrk  # noqa: E402
from common import HM, timed_round  # noqa: E402

# wrk: every request a PUT of a new item, /items/<BENCH_PATH><n>, its body the n-th line (cycled).
PUT_LUA = LUA.replace('''function request()
  i = i % #bodies + 1
  return wrk.format("POST", path, {["Content-Type"] = "application/json"}, bodies[i])
end''', '''function request()
  i = i + 1
  return wrk.format("PUT", path .. i, {["Content-Type"] = "application/json"}, bodies[(i - 1) % #bodies + 1])
end''')
assert PUT_LUA != LUA, "bench_http.LUA changed: update PUT_LUA"

COLUMNS = ("title", "product_type", "product_group", "graphical_appearance", "colour", "perceived_colour",
           "department", "index_group", "section", "garment_group", "description")
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]  # 70


def _word(n: int) -> str:
    """A made-up word per n (three syllables: 343,000 of them), to make a title unique."""
    a, b, c = n % 70, (n // 70) % 70, (n // 4900) % 70
    return (SYLLABLES[(a * 37 + 11) % 70] + SYLLABLES[(b * 23 + c) % 70] + SYLLABLES[(c * 13 + a) % 70]).capitalize()


class Texts:
    """H&M-like items: the catalog's rows in a shuffled order, each title + a unique word."""

    def __init__(self, catalog: Path, seed: int = 0):
        table = pq.read_table(catalog, columns=[c for c in COLUMNS if c in pq.read_schema(catalog).names])
        rows = table.to_pylist()
        order = np.random.default_rng(seed).permutation(len(rows))
        self.rows, self.n = [rows[i] for i in order], 0

    def take(self, count: int) -> list[dict]:
        out = []
        for _ in range(count):
            row = {k: v for k, v in self.rows[self.n % len(self.rows)].items() if v is not None}
            row["title"] = f"{row.get('title') or 'Item'} {_word(self.n)}"
            out.append(row)
            self.n += 1
        return out


def encoder_costs(args, texts: Texts) -> None:
    """0. The version's ONNX encoder on 128 new items' texts (the version's template), ms per
    text by the batch size ``encode`` runs: wall and CPU time (every thread of this process), the
    median of --encoder-rounds rounds. One intra-op thread is how the compute process runs it
    (``compute_threads``); --encoder-threads adds others. --encoders times other encoder
    directories (benchmarks/encoder_graphs.py writes a fused one) beside it, in the same rounds:
    every round runs each encoder, precision and thread count once, by batch size."""
    from groundrec.online.version import load_version
    from groundrec.shared import artifact
    from groundrec.shared.onnx_encoder import OnnxTextEncoder
    from groundrec.shared.text import render

    path = artifact.locate(args.artifacts, artifact.current_version(args.artifacts))
    template = load_version(path).manifest.text_template
    sample = [render(template, row) for row in texts.take(128)]
    dirs = {"version": artifact.VersionFiles(path).encoder_dir,
            **dict(e.split("=", 1) for e in args.encoders.split(",") if e)}
    sizes = [int(s) for s in args.encoder_batches.split(",")]
    precisions = dict.fromkeys(v.split("/")[0] for v in args.variants.split(","))
    encs = {(name, variant, threads): OnnxTextEncoder(d, variant, threads=threads)
            for name, d in dirs.items() for variant in precisions
            for threads in (int(t) for t in args.encoder_threads.split(","))}
    tokens = [len(e.ids) for e in next(iter(encs.values())).tokenizer.encode_batch(sample)]
    print(f"0. encoder: {len(sample)} texts, tokens p50 {np.median(tokens):.0f}, mean {np.mean(tokens):.1f}, p90 "
          f"{np.percentile(tokens, 90):.0f}, max {max(tokens)}; ms per text by batch size (sorted by length), wall "
          f"(CPU), median of {args.encoder_rounds} rounds", flush=True)
    wall = {k: {s: [] for s in sizes} for k in encs}
    cpu = {k: {s: [] for s in sizes} for k in encs}
    for _ in range(args.encoder_rounds):
        for key, enc in encs.items():
            for size in sizes:
                enc.encode(sample[:16], batch_size=size)  # warm
                start, cpu_start = time.perf_counter(), time.process_time()
                enc.encode(sample, batch_size=size)
                wall[key][size].append((time.perf_counter() - start) / len(sample) * 1e3)
                cpu[key][size].append((time.process_time() - cpu_start) / len(sample) * 1e3)
    for (name, variant, threads), enc in encs.items():
        costs = ", ".join(f"{s}: {np.median(wall[name, variant, threads][s]):.2f} "
                          f"({np.median(cpu[name, variant, threads][s]):.2f})" for s in sizes)
        fused = enc.meta.get("fused")
        print(f"   {name} {variant}, {threads} thread{'s' if threads > 1 else ''}: {costs}"
              f"{f'; fused {fused}' if fused else ''}", flush=True)
    print(f"   load average {os.getloadavg()[0]:.2f}", flush=True)
    if args.encoder_profile:
        for (name, variant, threads), enc in encs.items():
            if threads == 1:
                _profile(enc, sample, name, variant)


def _profile(enc, sample: list[str], name: str, variant: str, batch: int = 4) -> None:
    """Where one encoder's time goes: onnxruntime's profile of ``encode`` (one thread, batches of
    ``batch``), the kernels' ms per text by operator, the largest first."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.enable_profiling = 1, True
    opts.profile_file_prefix = str(Path(tempfile.gettempdir()) / "bench-items-encoder")
    profiled = copy.copy(enc)
    profiled.session = ort.InferenceSession(str(enc.directory / enc.meta["files"][variant]), opts,
                                            providers=["CPUExecutionProvider"])
    profiled.encode(sample, batch_size=batch)
    trace = Path(profiled.session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    by_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] = by_op.get(e["args"]["op_name"], 0.0) + e["dur"] / 1e3 / len(sample)
    total = sum(by_op.values())
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:6]
    print(f"   profile {name} {variant} (batch {batch}): kernels {total:.2f} ms per text; "
          + ", ".join(f"{op} {ms:.2f} ({ms / total:.0%})" for op, ms in top), flush=True)


def _q(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def _serve(stack: ExitStack, args, tmp: Path, name: str, store: str, variant: str = "fp32") -> str:
    """``variant``: the encoder's precision, then ``/alone`` for a server whose standby compute
    process encodes nothing (``standby_encodes: false``), ``/whole`` for one whose compute
    process encodes its share of a write group in one call (``live_encode_chunk: 0``)."""
    precision, *flags = variant.split("/")
    config = tmp / f"{name}.yaml"
    config.write_text(f"standby_encodes: {'false' if 'alone' in flags else 'true'}\n"
                      f"live_encode_chunk: {0 if 'whole' in flags else 8}\n")
    cmd = serve_command(args.artifacts, "--interactions", args.interactions, "--events", f"sqlite://{tmp}/{store}.db",
                        "--encoder-variant", precision, "--config", config)
    t = time.perf_counter()
    url = stack.enter_context(started(cmd, log=tmp / f"{name}.log", timeout=300)).url
    print(f"  server {name} (store {store}, {variant}) ready in {time.perf_counter() - t:.1f} s; load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    return url


def _found(client: httpx.Client, url: str, item_id: str, title: str, k: int) -> bool:
    r = client.post(url + "/search", json={"text": title, "k": k})
    r.raise_for_status()
    return any(i["item_id"] == item_id for i in r.json()["items"])


def visibility(args, a: str, b: str, texts: Texts) -> dict:
    """PUT on ``a``; then search ``a`` until found (once, when its first search finds it) and
    ``b`` until found, every ``poll_s``: the delays (s) from the PUT's answer, per item. An item
    ``a`` does not find within 2 s is one its title does not rank in the top ``search_k``
    (``a`` applied it before answering the PUT): listed in ``unranked``, not looked for on ``b``."""
    out = {"put_s": [], "a_s": [], "b_s": [], "a_first": 0, "unranked": [], "b_missed": [], "b_unknown": 0}
    with httpx.Client(timeout=10) as ca, httpx.Client(timeout=10) as cb:
        for n, item in enumerate(texts.take(args.items)):
            item_id = f"vis-{n}"
            t0 = time.perf_counter()
            ca.put(f"{a}/items/{item_id}", json=item).raise_for_status()
            put = time.perf_counter()
            out["put_s"].append(put - t0)
            for server, client, key, limit in ((a, ca, "a_s", 2), (b, cb, "b_s", 10)):
                tries = 0
                while True:
                    tries += 1
                    hit = _found(client, server, item_id, item["title"], args.search_k)
                    now = time.perf_counter()
                    if hit:
                        out[key].append(now - put)
                        out["a_first"] += key == "a_s" and tries == 1
                        break
                    if now - put > limit:
                        (out["unranked"] if key == "a_s" else out["b_missed"]).append(item["title"])
                        break
                    time.sleep(args.poll_s)
                if not hit:
                    break
            if hit:  # found on b: b's /recommend knows it too
                r = cb.post(b + "/recommend", json={"history": [item_id], "k": 10}).json()
                out["b_unknown"] += bool(r.get("unknown_ids"))
    return out


def singles(args, url: str, texts: Texts, tmp: Path, prefix: str) -> dict:
    """wrk: PUTs of new items at 8 connections for --duration s."""
    bodies = tmp / f"put-{prefix}.jsonl"
    bodies.write_text("".join(json.dumps(t) + "\n" for t in texts.take(args.put_bodies)))
    script = tmp / "put.lua"
    script.write_text(PUT_LUA)
    env = {**os.environ, "BENCH_BODIES": str(bodies), "BENCH_PATH": f"/items/{prefix}-put-"}
    return _wrk(url, 8, args.duration, env, script)


def batches(url: str, texts: Texts, count: int, prefix: str) -> dict:
    """``count`` POST /items of 100 new items, one after another on one connection."""
    times = []
    with httpx.Client(timeout=60) as c:
        for n in range(count):
            items = [{"item_id": f"{prefix}-{n * 100 + m}", **t} for m, t in enumerate(texts.take(100))]
            t = time.perf_counter()
            r = c.post(url + "/items", json={"items": items})
            times.append(time.perf_counter() - t)
            r.raise_for_status()
            assert r.json()["accepted"] == 100, r.text
    return {"items_per_s": 100 * count / sum(times), "p50_s": _q(times, 50), "p99_s": _q(times, 99),
            "items": 100 * count}


def _print_visibility(args, vis: dict) -> None:
    ms = {k: [1e3 * x for x in vis[k]] for k in ("put_s", "a_s", "b_s")}
    print(f"   {args.items} items (fp32): PUT answered p50 {_q(ms['put_s'], 50):.1f} ms, p99 "
          f"{_q(ms['put_s'], 99):.1f} ms")
    print(f"   on A (took the PUT): found by its first search {vis['a_first']}/{args.items}; delay p50 "
          f"{_q(ms['a_s'], 50):.1f} ms, p99 {_q(ms['a_s'], 99):.1f} ms (the search's own time)")
    print(f"   on B (another process): found {len(ms['b_s'])}/{args.items}, delay p50 "
          f"{_q(ms['b_s'], 50):.1f} ms, p99 {_q(ms['b_s'], 99):.1f} ms, max "
          f"{max(ms['b_s'], default=float('nan')):.1f} ms; not found in 10 s: {vis['b_missed']}; unknown to "
          f"B's /recommend after: {vis['b_unknown']}; not in A's top {args.search_k} for its title (so not "
          f"looked for on B): {vis['unranked']}", flush=True)


def _print_singles(variant: str, s: dict) -> None:
    print(f"   {variant}: single PUTs at 8 connections {s['ok_per_s']:.1f} items/s (p50 {s['p50_ms']:.1f} ms, p99 "
          f"{s['p99_ms']:.1f} ms, non-200 {s['other_status'] + s['shed_503']})", flush=True)


def _print_batches(variant: str, u: dict) -> None:
    print(f"   {variant}: POST /items of 100 {u['items_per_s']:.1f} items/s ({u['items']} items; a batch p50 "
          f"{1e3 * u['p50_s']:.0f} ms, p99 {1e3 * u['p99_s']:.0f} ms)", flush=True)


def feed_rounds(args, texts: Texts, tmp: Path) -> None:
    """4. /recommend while a feed runs: per --feed-variants, a server alone; wrk at 8 connections
    on POST /recommend for --duration s, without a feed and with one (POST /items of 100, one
    after another on one connection, for as long as wrk runs), alternating, --http-rounds each."""
    bodies = tmp / "recommend.jsonl"
    bodies.write_text("".join(json.dumps({"history": h[-100:], "k": args.k}) + "\n" for h in args.histories))
    script = tmp / "recommend.lua"
    script.write_text(LUA)
    env = {**os.environ, "BENCH_BODIES": str(bodies), "BENCH_PATH": "/recommend"}
    for n, variant in enumerate(args.feed_variants.split(",")):
        with ExitStack() as stack:
            url = _serve(stack, args, tmp, f"F-{n}", f"feed-{n}", variant)
            _wrk(url, 8, 2, env, script)  # warm-up
            rows: dict[str, list] = {"alone": [], "feed": []}
            fed: list[float] = []
            for r in range(2 * args.http_rounds):
                arm = ("alone", "feed")[(r + r // 2) % 2]  # alone, feed, feed, alone, ...
                stop, done = threading.Event(), []
                feeder = threading.Thread(target=lambda stop=stop, done=done, prefix=f"f{n}-{r}": done.append(
                    _feed(url, texts, stop, prefix)))
                if arm == "feed":
                    feeder.start()
                rows[arm].append(_wrk(url, 8, args.duration, env, script))
                if arm == "feed":
                    stop.set()
                    feeder.join()
                    fed.append(done[0])
            p99 = {arm: [x["p99_ms"] for x in xs] for arm, xs in rows.items()}
            ok = {arm: [x["ok_per_s"] for x in xs] for arm, xs in rows.items()}
            print(f"   {variant}: /recommend at 8 connections, p99 ms alone {p99['alone']}, with the feed "
                  f"{p99['feed']}; ok/s alone {ok['alone']}, with the feed {ok['feed']}; the feed "
                  f"{[round(f) for f in fed]} items/s; load average {os.getloadavg()[0]:.2f}", flush=True)


def _feed(url: str, texts: Texts, stop: threading.Event, prefix: str) -> float:
    """POST /items of 100 until ``stop``: items/s."""
    n, t = 0, time.perf_counter()
    with httpx.Client(timeout=60) as c:
        while not stop.is_set():
            items = [{"item_id": f"{prefix}-{n + m}", **x} for m, x in enumerate(texts.take(100))]
            c.post(url + "/items", json={"items": items}).raise_for_status()
            n += 100
    return n / (time.perf_counter() - t)


def http_rounds(args, urls: dict[str, str], tmp: Path) -> dict:
    """wrk at --connections on POST /recommend, the servers in alternation, --http-rounds times."""
    bodies = tmp / "recommend.jsonl"
    bodies.write_text("".join(json.dumps({"history": h[-100:], "k": args.k}) + "\n" for h in args.histories))
    script = tmp / "recommend.lua"
    script.write_text(LUA)
    env = {**os.environ, "BENCH_BODIES": str(bodies), "BENCH_PATH": "/recommend"}
    for url in urls.values():
        _wrk(url, 8, 2, env, script)  # warm-up
    out = {name: [] for name in urls}
    for n in range(args.http_rounds):
        for name in (list(urls) if n % 2 == 0 else list(reversed(urls))):
            out[name].append(_wrk(urls[name], args.connections, args.duration, env, script))
    return out


async def in_process(args, stores: dict[str, str]) -> dict:
    """Two Recommenders (compute: thread, impressions off), one per store, alternating rounds:
    requests/s, p99 and requests per CPU-second of this process (every thread)."""

    from groundrec.online.config import ServeConfig
    from groundrec.online.metrics import ServiceMetrics
    from groundrec.online.recommender import Recommender
    from groundrec.online.schemas import RecommendRequest

    bodies = [RecommendRequest(history=args.histories[n % len(args.histories)][-100:], k=args.k)
              for n in range(args.requests)]
    arms = {name: Recommender(ServeConfig(artifacts=args.artifacts, compute="thread", events=url, impressions=0,
                                          interactions=args.interactions, popularity_window_days=None),
                            ServiceMetrics())
            for name, url in stores.items()}
    out = {name: {"rate": [], "p99": [], "per_cpu": []} for name in arms}
    names = list(arms)
    t = time.perf_counter()
    async with arms[names[0]].running(watch=False), arms[names[1]].running(watch=False):
        print(f"  in-process: both loaded (the live items embedded) in {time.perf_counter() - t:.1f} s; load average "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        for name in names:
            out[name]["live"] = len(arms[name].catalog.state)
            await timed_round(arms[name], bodies[:200], args.concurrency)  # warm-up
        for n in range(args.rounds):
            for name in (names if n % 2 == 0 else list(reversed(names))):
                cpu = time.process_time()
                rate, tail = await timed_round(arms[name], bodies, args.concurrency)
                out[name]["per_cpu"].append(len(bodies) / (time.process_time() - cpu))
                out[name]["rate"].append(rate)
                out[name]["p99"].append(tail)
    return out


def _ratio(a: list[float], b: list[float]) -> str:
    rounds = [x / y for x, y in zip(a, b)]
    return f"{np.median(a) / np.median(b):.1%} (rounds {min(rounds):.1%} to {max(rounds):.1%})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", required=True, help="a folder with a published H&M version (CURRENT)")
    ap.add_argument("--interactions", default=str(HM / "interactions.parquet"))
    ap.add_argument("--catalog", default=str(HM / "items.parquet"), help="where the new items' texts come from")
    ap.add_argument("--items", type=int, default=200, help="items timed for visibility")
    ap.add_argument("--search-k", type=int, default=20)
    ap.add_argument("--poll-s", type=float, default=0.005)
    ap.add_argument("--duration", type=float, default=10, help="seconds of each wrk run")
    ap.add_argument("--put-bodies", type=int, default=5000)
    ap.add_argument("--batches", type=int, default=100, help="POST /items of 100 with fp32: the live items of 3.")
    ap.add_argument("--other-batches", type=int, default=20, help="POST /items of 100 with the other variants")
    ap.add_argument("--variants", default="fp32,int8", help="2: encoder precisions, each on a server of its own "
                    "(fp32 on A), in this order; NAME/alone: its standby compute process encodes nothing "
                    "(standby_encodes false), e.g. int8,int8/alone,int8,int8/alone")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=32, help="requests in flight in-process")
    ap.add_argument("--requests", type=int, default=2000, help="requests per in-process round")
    ap.add_argument("--rounds", type=int, default=7, help="in-process rounds per arm")
    ap.add_argument("--http-rounds", type=int, default=3)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--encoders", default="", help="0: other encoder directories timed beside the version's, "
                    "NAME=DIR,... (benchmarks/encoder_graphs.py writes them)")
    ap.add_argument("--encoder-threads", default="1", help="0: intra-op thread counts, e.g. 1,2")
    ap.add_argument("--encoder-batches", default="1,2,4,8,16,64", help="0: batch sizes")
    ap.add_argument("--encoder-rounds", type=int, default=3)
    ap.add_argument("--encoder-profile", action="store_true", help="0: where each encoder's time goes (one thread, "
                    "batches of 4): onnxruntime's profile, ms per text by operator")
    ap.add_argument("--feed-variants", default="int8,int8/whole", help="4: servers (as --variants; /whole: the "
                    "compute process encodes its share of a write group in one call)")
    ap.add_argument("--parts", default="0,1,2,3", help="which of 0 (the encoder's cost by batch size), 1 "
                    "(visibility), 2 (upserts), 3 (/recommend with live items), 4 (/recommend during a feed) to run")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (stores, server logs)")
    args = ap.parse_args()
    if not (Path(args.artifacts) / "CURRENT").is_file():
        raise SystemExit(f"no published version in {args.artifacts} (no CURRENT). Publish the H&M one with\n"
                         "  groundrec offline run --config deploy/hm.job.yaml --out OUT/hm "
                         "--interactions ../shared/data/hm/interactions.parquet [--vlm DIR]\n"
                         "and pass --artifacts OUT/hm")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    args.histories = [h for h in load_histories(args.interactions) if h]
    texts = Texts(Path(args.catalog))
    tmp = Path(tempfile.mkdtemp(prefix="bench-items-"))
    variants, parts = args.variants.split(","), args.parts.split(",")
    print(f"version {(Path(args.artifacts) / 'CURRENT').read_text().strip()} in {args.artifacts}; "
          f"new items' texts from {args.catalog}; work in {tmp}; {os.cpu_count()} cores", flush=True)
    if "0" in parts:
        encoder_costs(args, texts)
    try:
        with ExitStack() as on_a:
            if "1" in parts:
                a = _serve(on_a, args, tmp, "A", "vis")
            if "1" in parts:
                print("1. visibility: PUT on A, /search on A and on B (another server on the same store)", flush=True)
                with ExitStack() as on_b:
                    vis = visibility(args, a, _serve(on_b, args, tmp, "B", "vis"), texts)
                _print_visibility(args, vis)
            if "2" in parts:
                print("2. upserts: single PUTs (wrk, 8 connections) on a server alone (fp32 with part 1: A, B stopped, "
                      "no batches); POST /items of 100 on one connection", flush=True)
                if "fp32" in variants and "1" in parts:
                    _print_singles("fp32", singles(args, a, texts, tmp, "fp32"))
        for n, variant in enumerate(variants):
            if (variant == "fp32" and "1" in parts) or "2" not in parts:
                continue
            with ExitStack() as stack:
                url = _serve(stack, args, tmp, f"U-{n}", f"singles-{n}", variant)
                _print_singles(variant, singles(args, url, texts, tmp, f"v{n}"))
                _print_batches(variant, batches(url, texts, args.other_batches, f"v{n}-batch"))

        if "4" in parts:
            print("4. /recommend (8 connections) while a feed of POST /items of 100 runs, and without", flush=True)
            feed_rounds(args, texts, tmp)
        if "3" not in parts:
            return
        print(f"3. /recommend with {100 * args.batches} live items (fp32; their batches timed first) against none",
              flush=True)
        with ExitStack() as stack:
            urls = {"live": _serve(stack, args, tmp, "R-live", "live"),
                    "none": _serve(stack, args, tmp, "R-none", "none")}
            _print_batches("fp32", batches(urls["live"], texts, args.batches, "live"))
            http = http_rounds(args, urls, tmp)
        for name, rows in http.items():
            print(f"   HTTP {name:4s}: ok/s {[r['ok_per_s'] for r in rows]}, p99 ms {[r['p99_ms'] for r in rows]}, "
                  f"non-200 {sum(r['other_status'] + r['shed_503'] for r in rows)}")
        rates = {name: [r["ok_per_s"] for r in rows] for name, rows in http.items()}
        p99 = {name: [r["p99_ms"] for r in rows] for name, rows in http.items()}
        print(f"   HTTP at {args.connections} connections: live/none {_ratio(rates['live'], rates['none'])}; p99 "
              f"median live {np.median(p99['live']):.1f} ms (max {max(p99['live']):.1f}), none "
              f"{np.median(p99['none']):.1f} ms (max {max(p99['none']):.1f}); load average {os.getloadavg()[0]:.2f}",
              flush=True)
        stores = {"live": f"sqlite://{tmp}/live.db", "none": f"sqlite://{tmp}/none.db"}
        inp = asyncio.run(in_process(args, stores))
        for name, r in inp.items():
            print(f"   in-process {name:4s} ({r['live']} live items): {np.median(r['rate']):.1f} req/s (rounds "
                  f"{min(r['rate']):.0f}-{max(r['rate']):.0f}), p99 {1e3 * np.median(r['p99']):.1f} ms, "
                  f"{np.median(r['per_cpu']):.1f} req per CPU-second")
        print(f"   in-process live/none: requests/s {_ratio(inp['live']['rate'], inp['none']['rate'])}; per CPU-second "
              f"{_ratio(inp['live']['per_cpu'], inp['none']['per_cpu'])}; load average {os.getloadavg()[0]:.2f}")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
