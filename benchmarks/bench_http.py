"""HTTP throughput and latency under concurrency, measured with wrk (Debian package `wrk`).

Side by side in one run, at each connection count (default 1, 8, 32, 256):
  ceiling    a FastAPI app on the same uvicorn (uvloop + httptools, no access log) that
             validates the /recommend body and returns a fixed top-20: what HTTP + validation
             cost on this machine, with no retrieval at all;
  groundrec  `groundrec serve` as the README starts it (defaults, one process) over ARTIFACTS.
  refusal floor  (largest step only) plain ASGI on the same uvicorn answering every request 503
             with a static body: the fastest this machine can refuse, the bound for groundrec's 503s.
While the last (largest) connection step runs, a probe client sends a request every 0.05 s:
/healthz every fifth time (its worst latency is reported), otherwise a real body, whose latency
is reported by status (503 p50/p99: how fast excess requests are refused).
With --loadtest-rates, the project's own open-loop generator (`groundrec loadtest`,
/recommend only, 256 in flight) is then run against the ceiling app at each rate: where its
achieved rate falls below the target it, not the server, is the limit (wrk drove the same
app at the rate printed above). Bodies are real purchase histories (POST /recommend, k=20), or text queries for
--endpoint search. Server and wrk share this machine's cores; wrk runs one thread.
With --compare-artifacts (another version) or --compare-serve-args (other serve flags) a second
`groundrec serve` runs beside the first (idle while the other is measured) and the two are measured in alternation at every step, --rounds times; the ratio
of their median rates is printed, and the ratio of their compute time per request by the servers'
own clocks (batch seconds over requests in /metrics), which wrk's run-to-run noise does not reach.

Usage: python benchmarks/bench_http.py --artifacts DIR --histories FILE
           [--connections 1,8,32,256] [--duration 10] [--endpoint recommend|search] [--json-out F]
           [--skip-ceiling] [--serve-args '--workers 2'] [--loadtest-rates 250,500,1000,2000]
           [--compare-artifacts OTHER_DIR] [--compare-serve-args '--compute thread'] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np

from groundrec.online.loadtest import load_histories
from groundrec.online.testing import serve_command, started

LUA = r"""
local bodies, path = {}, os.getenv("BENCH_PATH")
for line in io.lines(os.getenv("BENCH_BODIES")) do bodies[#bodies + 1] = line end
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok, shed, other, i = 0, 0, 0, 0 end
function request()
  i = i % #bodies + 1
  return wrk.format("POST", path, {["Content-Type"] = "application/json"}, bodies[i])
end
function response(status, headers, body)
  if status == 200 then ok = ok + 1 elseif status == 503 then shed = shed + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local o, s, x = 0, 0, 0
  for _, t in ipairs(threads) do o = o + t:get("ok"); s = s + t:get("shed"); x = x + t:get("other") end
  io.write(string.format('JSON {"requests": %d, "duration_s": %.3f, "ok": %d, "shed_503": %d, "other_status": %d, ' ..
    '"timeouts": %d, "connect_errors": %d, "read_errors": %d, "p50_ms": %.2f, "p90_ms": %.2f, "p99_ms": %.2f, ' ..
    '"max_ms": %.2f}\n', summary.requests, summary.duration / 1e6, o, s, x, summary.errors.timeout,
    summary.errors.connect, summary.errors.read, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
"""

CEILING = r"""
import sys, uvicorn
from fastapi import FastAPI, Response
from groundrec.online.schemas import ItemOut, RecommendRequest, ResultOut
app = FastAPI()
FIXED = ResultOut(items=[ItemOut(item_id=f"{i:010d}", score=1.0 - i / 100) for i in range(20)], version="x")
@app.post("/recommend")
async def recommend(body: RecommendRequest):
    return Response(FIXED.model_dump_json(), media_type="application/json")
@app.post("/search")
async def search(body: dict):
    return Response(FIXED.model_dump_json(), media_type="application/json")
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


# The refusal floor: plain ASGI on the same uvicorn that answers every request 503 with a
# static body (GET /healthz 200, for readiness), doing no other work: the fastest any server
# on this uvicorn can refuse, so the bound for groundrec's 503 latency at the largest step.
REFUSAL_FLOOR = r"""
import sys, uvicorn
HEAD = {"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"application/json"),
        (b"retry-after", b"1"), (b"content-length", b"23")]}
OK = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/healthz":
        await send(OK)
        await send({"type": "http.response.body", "body": b"ok"})
        return
    await send(HEAD)
    await send({"type": "http.response.body", "body": b'{"detail":"overloaded"}'})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def _wrk(url: str, connections: int, duration: float, env: dict, script: Path) -> dict:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "5s", "-s", str(script),
                          url], capture_output=True, text=True, env=env, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("JSON "))
    r = json.loads(line[5:])
    r["req_per_s"] = round(r["requests"] / r["duration_s"], 1)
    r["ok_per_s"] = round(r["ok"] / r["duration_s"], 1)
    return r


def _probe(url: str, stop: threading.Event, path: str, body: dict, seen: dict[str, list[float]]) -> None:
    """Every 0.05 s one request on the probe's own kept-alive connection, like one more client
    during the load: /healthz every fifth time, otherwise a real body on the benchmarked endpoint. Latencies
    go to ``seen`` by what answered: "healthz", or the endpoint's status ("200", "503", ...)."""
    with httpx.Client(timeout=5) as c:
        n = 0
        while not stop.wait(0.05):
            n += 1
            t = time.perf_counter()
            try:
                if n % 5 == 0:
                    c.get(url + "/healthz")
                    key = "healthz"
                else:
                    key = str(c.post(url + path, json=body).status_code)
            except httpx.TransportError:
                key = "transport error"
            seen.setdefault(key, []).append(time.perf_counter() - t)


def _ms(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)) * 1000, 1) if xs else None


def _loadtest_rows(url: str, args, tmp: Path) -> list[dict]:
    """`groundrec loadtest` (a separate process, as users run it) at each rate of --loadtest-rates."""
    rows = []
    for rate in [float(r) for r in args.loadtest_rates.split(",")]:
        out = tmp / f"loadtest-{rate:g}.json"
        subprocess.run([sys.executable, "-m", "groundrec.shared.cli", "loadtest", "--url", url, "--rate", f"{rate:g}",
                        "--duration", f"{args.duration:g}", "--concurrency", "256", "--search-share", "0",
                        "--k", str(args.k), "--histories", args.histories, "--json-out", str(out)],
                       check=True, stdout=subprocess.DEVNULL)
        r = json.loads(out.read_text())
        row = {"target_rate": rate, "achieved_rps": r["achieved_rps"], "dropped": r["dropped"],
               "p99_ms": r["latency_ms"].get("p99"), "errors": r["errors"]}
        rows.append(row)
        print(f"loadtest  rate {rate:7.0f}  achieved {row['achieved_rps']:8.1f} req/s  dropped {row['dropped']}  "
              f"p99 {'-' if row['p99_ms'] is None else format(row['p99_ms'], '.1f')} ms  errors {row['errors'] or 0}",
              flush=True)  # no ok answer at all: no p99, and the row is still written
    return rows


def _batch_totals(url: str) -> dict[str, float]:
    """groundrec's own /metrics: seconds spent computing batches, requests in them, batches."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {"groundrec_batch_seconds_sum": "seconds", "groundrec_batch_size_sum": "requests",
              "groundrec_batch_size_count": "batches"}
    out = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name in wanted:
                out[wanted[sample.name]] = sample.value
    return out


def _step(url: str, c: int, probed: bool, args, env: dict, script: Path, probe_body: dict,
          measured: bool = False) -> dict:
    """One wrk run at ``c`` connections; ``probed``: with the probe client beside it;
    ``measured`` (a groundrec server): with its compute time per request from its /metrics."""
    stop, seen = threading.Event(), {}
    prober = threading.Thread(target=_probe, args=(url, stop, f"/{args.endpoint}", probe_body, seen), daemon=True)
    before = _batch_totals(url) if measured else {}
    if probed:
        prober.start()
    r = _wrk(url, c, args.duration, env, script)
    stop.set()
    if prober.is_alive():
        prober.join()
    r.update(connections=c, healthz_worst_ms=_ms(seen.get("healthz", []), 100),
             probe={k: {"n": len(v), "p50_ms": _ms(v, 50), "p99_ms": _ms(v, 99)} for k, v in seen.items()})
    if measured:
        after = _batch_totals(url)
        done = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in ("seconds", "requests", "batches")}
        r.update(compute_ms_per_request=round(1000 * done["seconds"] / max(done["requests"], 1), 4),
                 mean_batch=round(done["requests"] / max(done["batches"], 1), 2))
    return r


def _workers(serve_args: str) -> int:
    """The ``--workers`` of serve flags (1 when not given)."""
    words = serve_args.split()
    for n, word in enumerate(words):
        if word == "--workers" and n + 1 < len(words):
            return int(words[n + 1])
        if word.startswith("--workers="):
            return int(word.split("=", 1)[1])
    return 1


def _print_row(r: dict, with_round: bool) -> None:
    print(f"{r['server']:9s} c={r['connections']:<4d}" + (f" round {r['round'] + 1}" if with_round else "")
          + f" {r['req_per_s']:8.1f} req/s ({r['ok_per_s']:.1f} ok/s)  p50 {r['p50_ms']:.2f} ms  "
          f"p99 {r['p99_ms']:.2f} ms  max {r['max_ms']:.1f} ms  503 {r['shed_503']}  other {r['other_status']}  "
          f"timeouts {r['timeouts']}"
          + (f"  compute {r['compute_ms_per_request']:.3f} ms/request (batches of {r['mean_batch']:.1f})"
             if "compute_ms_per_request" in r else "")
          + (f"  /healthz worst {r['healthz_worst_ms']} ms" if r["healthz_worst_ms"] is not None else "")
          + "".join(f"  probe {k}: n={v['n']} p50 {v['p50_ms']} ms p99 {v['p99_ms']} ms"
                    for k, v in r["probe"].items() if k != "healthz"), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--histories", required=True, help="interactions table or JSONL of {history: [...]}")
    ap.add_argument("--endpoint", choices=["recommend", "search"], default="recommend")
    ap.add_argument("--connections", default="1,8,32,256")
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--skip-ceiling", action="store_true")
    ap.add_argument("--serve-args", default="", help="extra `groundrec serve` flags, e.g. '--workers 2'")
    ap.add_argument("--loadtest-rates", default="", help="also run `groundrec loadtest` at these rates "
                    "against the ceiling app, e.g. 250,500,1000,2000")
    ap.add_argument("--compare-artifacts", help="a second artifacts directory served the same way in the same run "
                    "(printed as 'other')")
    ap.add_argument("--compare-serve-args", help="serve the 'other' server (of --compare-artifacts, or of --artifacts) "
                    "with these flags instead of --serve-args, e.g. '--compute thread'")
    ap.add_argument("--compare-pythonpath", help="serve the 'other' server with this PYTHONPATH first: the same "
                    "version under another checkout of groundrec (a folder holding groundrec/{offline,online,shared}"
                    " linked to an old commit's tiers), to compare code before and after a change")
    ap.add_argument("--rounds", type=int, default=1, help="with --compare-artifacts: alternate the two servers "
                    "this many times per step and compare medians")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")

    tmp = Path(tempfile.mkdtemp(prefix="bench-http-"))
    script = tmp / "bodies.lua"
    script.write_text(LUA)
    bodies = tmp / "bodies.jsonl"
    if args.endpoint == "recommend":
        histories = [h[-100:] for h in load_histories(args.histories) if h]
        bodies.write_text("".join(json.dumps({"history": h, "k": args.k}) + "\n" for h in histories))
    else:
        from groundrec.online.version import load_version

        titles = load_version(args.artifacts).items.column("title").to_pylist()[:2000]
        bodies.write_text("".join(json.dumps({"text": t, "k": args.k}) + "\n" for t in titles if t))
    probe_body = json.loads(bodies.read_text().splitlines()[0])
    env = {**os.environ, "BENCH_BODIES": str(bodies), "BENCH_PATH": f"/{args.endpoint}"}
    conns = [int(c) for c in args.connections.split(",")]
    results: dict = {"endpoint": args.endpoint, "duration_s": args.duration, "rows": []}

    servers = [] if args.skip_ceiling else [("ceiling", [sys.executable, "-c", CEILING, "{port}"], "/openapi.json"),
                                            ("refusal floor", [sys.executable, "-c", REFUSAL_FLOOR, "{port}"], "/healthz")]
    servers.append(("groundrec", serve_command(args.artifacts, *args.serve_args.split()), "/readyz"))
    other, other_args = None, args.serve_args
    if args.compare_artifacts or args.compare_serve_args is not None or args.compare_pythonpath:
        # A second version or other settings, same run: e.g. hybrid vs content-only, thread vs process.
        other_args = args.serve_args if args.compare_serve_args is None else args.compare_serve_args
        other = f"{args.compare_artifacts or args.artifacts} {other_args}".strip() + (
            f" (PYTHONPATH={args.compare_pythonpath})" if args.compare_pythonpath else "")
        servers.append(("other", serve_command(args.compare_artifacts or args.artifacts, *other_args.split()),
                        "/readyz"))
    # The ceiling runs alone; groundrec and "other" are started together and measured in
    # alternation (every step, --rounds times), so both see the same machine state.
    groups = [servers[:2], servers[2:]] if servers[0][0] == "ceiling" else [servers]
    for group in groups:
        urls = {}
        with ExitStack() as stack:
            for name, cmd, ready in group:
                server_env = ({**os.environ, "PYTHONPATH": args.compare_pythonpath}
                              if name == "other" and args.compare_pythonpath else None)
                urls[name] = stack.enter_context(started(cmd, ready=ready, env=server_env)).url
                _wrk(urls[name], 8, 2, env, script)  # warm-up
            for round_ in range(args.rounds if len(group) > 1 else 1):
                for c in conns:
                    for name in urls:
                        if name == "refusal floor" and c != max(conns):
                            continue
                        # compute time per request from /metrics: one process's registry, so only
                        # for a server of one worker (two reads may land on two workers)
                        flags = other_args if name == "other" else args.serve_args
                        r = _step(urls[name], c, c == max(conns), args, env, script, probe_body,
                                  measured=name in ("groundrec", "other") and _workers(flags) == 1)
                        r.update(server=name, round=round_)
                        results["rows"].append(r)
                        _print_row(r, args.rounds > 1 and len(group) > 1)
            if group[0][0] == "ceiling" and args.loadtest_rates:
                results["loadtest"] = _loadtest_rows(urls["ceiling"], args, tmp)
    def medians(field: str) -> dict:
        seen: dict = {}
        for r in results["rows"]:
            if field in r:
                seen.setdefault((r["server"], r["connections"]), []).append(r[field])
        return {key: float(np.median(v)) for key, v in seen.items()}

    med, compute = medians("ok_per_s"), medians("compute_ms_per_request")
    for c in conns:
        if ("other", c) in med and ("groundrec", c) in med:
            rounds = f" (medians of {args.rounds} alternating rounds: {med[('other', c)]:.1f} vs " \
                     f"{med[('groundrec', c)]:.1f} ok/s)" if args.rounds > 1 else ""
            mine = f"{args.artifacts} {args.serve_args}".strip()
            print(f"c={c}: {other} answers {med[('other', c)] / max(med[('groundrec', c)], 1e-9):.1%} "
                  f"of {mine}'s rate{rounds}")
            # The same comparison by the servers' own clocks: their compute time per request
            # (batch seconds over requests, from /metrics), free of wrk's and the loop's noise.
            if ("other", c) in compute and ("groundrec", c) in compute:  # one worker each (else not read)
                print(f"c={c}: compute per request {compute[('other', c)]:.3f} vs {compute[('groundrec', c)]:.3f} ms: "
                      f"{other} at {compute[('groundrec', c)] / max(compute[('other', c)], 1e-9):.1%} "
                      f"of {mine}'s compute rate")
        floor = next((r for r in results["rows"] if r["server"] == "refusal floor" and r["connections"] == c), None)
        shed = next((r["probe"].get("503") for r in results["rows"] if r["server"] == "groundrec"
                     and r["connections"] == c and r["probe"].get("503")), None)
        if floor:
            probe = floor["probe"].get("503") or {}
            print(f"c={c}: a bare app refusing every request (the refusal floor): p50 {floor['p50_ms']:.1f} ms, "
                  f"p99 {floor['p99_ms']:.1f} ms at {floor['req_per_s']:.0f} req/s (its probes: p50 "
                  f"{probe.get('p50_ms')} ms, p99 {probe.get('p99_ms')} ms)"
                  + (f"; groundrec's refused probes: p50 {shed['p50_ms']} ms, p99 {shed['p99_ms']} ms" if shed else ""))
        if ("ceiling", c) in med and ("groundrec", c) in med:
            print(f"c={c}: groundrec answers {med[('groundrec', c)] / max(med[('ceiling', c)], 1e-9):.0%} of the "
                  f"ceiling's rate")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
