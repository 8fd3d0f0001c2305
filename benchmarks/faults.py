"""Fault injection under load, beside attack.py: `groundrec serve` over a copy of ARTIFACTS,
wrk at --connections on POST /recommend (real histories), and a probe that sends one
request every 10 ms on its own connection. Faults, one at a time, each in a window of
--window seconds with the load running throughout:

  baseline       none: the load alone (and the batches' p99.9 compute time, from /metrics)
  kill-compute   SIGKILL of the compute process that is scoring (the busiest child)
  stop-compute   SIGSTOP of it (hung: stopped by the server after compute_timeout_s)
  swap           a new version published (a copy of the current one), hot-swapped
  broken         a broken version published (a damaged file): refused, the old one serves
  kill-worker    (with --workers 2) SIGKILL of one worker process

For each: wrk's non-2xx count, the probe's longest gap without a 200, and the server tree's
memory (RSS) before and after. With --soak S, then S seconds of load with the RSS of every
process of the server sampled every 10 s (first vs last sample per process).

Usage: python benchmarks/faults.py --artifacts DIR --histories FILE
           [--faults baseline,kill-compute,stop-compute,swap,broken] [--workers 1] [--window 8]
           [--connections 32] [--soak 0] [--serve-args '--config c.yaml']
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_http import LUA  # noqa: E402
from common import _tree_rss_bytes  # noqa: E402
import psutil  # noqa: E402

from groundrec.online.loadtest import load_histories  # noqa: E402
from groundrec.online.testing import serving  # noqa: E402
from groundrec.shared import artifact  # noqa: E402


def _children(pid: int) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []


def _cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _compute_processes(server: int) -> list[int]:
    """The compute processes under the server (a worker's, or the server's own children that
    run multiprocessing's spawn entry point and are not its resource tracker)."""
    out = []
    for pid in [server, *_children(server)]:
        for child in _children(pid):
            try:
                cmd = " ".join(psutil.Process(child).cmdline())
            except psutil.NoSuchProcess:
                continue
            if "spawn_main" in cmd and "resource_tracker" not in cmd and not _children(child):
                out.append(child)
    return out


def _busiest(pids: list[int], seconds: float = 1.0) -> int:
    before = {p: _cpu(p) for p in pids}
    time.sleep(seconds)
    return max(pids, key=lambda p: _cpu(p) - before[p])


class Probe:
    """One request every 10 ms; the longest time between two 200s while it runs."""

    def __init__(self, url: str, body: dict):
        self.url, self.body, self.stop, self.gap, self.codes = url, body, threading.Event(), 0.0, {}

    def run(self) -> None:
        last = time.perf_counter()
        with httpx.Client(base_url=self.url, timeout=10) as c:
            while not self.stop.wait(0.01):
                try:
                    code = c.post("/recommend", json=self.body).status_code
                except httpx.TransportError as e:
                    code = type(e).__name__
                self.codes[code] = self.codes.get(code, 0) + 1
                now = time.perf_counter()
                if code == 200:
                    self.gap, last = max(self.gap, now - last), now
        self.gap = max(self.gap, time.perf_counter() - last)


def _batch_quantile(url: str, q: float) -> float | None:
    """The smallest bucket bound of groundrec_batch_seconds holding ``q`` of the batches."""
    buckets = []
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("groundrec_batch_seconds_bucket"):
            bound = line.split('le="')[1].split('"')[0]
            buckets.append((float(bound), float(line.rsplit(" ", 1)[1])))
    total = buckets[-1][1] if buckets else 0
    return next((b for b, n in buckets if total and n >= q * total), None)


def _window(url: str, args, env: dict, script: Path, body: dict, fault) -> dict:
    probe = Probe(url, body)
    thread = threading.Thread(target=probe.run)
    wrk = subprocess.Popen(["wrk", "-t1", f"-c{args.connections}", f"-d{args.window:g}s", "--timeout", "10s",
                            "-s", str(script), url], stdout=subprocess.PIPE, text=True, env=env)
    thread.start()
    time.sleep(args.window / 4)
    what = fault()
    out = wrk.communicate()[0]
    probe.stop.set()
    thread.join()
    r = json.loads(next(x for x in out.splitlines() if x.startswith("JSON "))[5:])
    return {"fault": what, "requests": r["requests"], "ok": r["ok"], "non_2xx": r["shed_503"] + r["other_status"],
            "timeouts": r["timeouts"], "socket_errors": r["connect_errors"] + r["read_errors"],
            "probe_longest_gap_without_200_s": round(probe.gap, 3),
            "probe_codes": {str(k): v for k, v in probe.codes.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", required=True)
    p.add_argument("--histories", required=True)
    p.add_argument("--faults", default="baseline,kill-compute,stop-compute,swap,broken")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--window", type=float, default=8.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--soak", type=float, default=0.0)
    p.add_argument("--serve-args", default="")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
        tmp = Path(tmp)
        arts = tmp / "artifacts"
        current = artifact.current_version(args.artifacts)
        (arts / artifact.VERSIONS).mkdir(parents=True)
        shutil.copytree(artifact.current_path(args.artifacts), arts / artifact.VERSIONS / current)
        artifact.activate(arts, current)
        histories = load_histories(args.histories)[:2000]
        bodies = tmp / "bodies.jsonl"
        bodies.write_text("".join(json.dumps({"history": h, "k": 20}) + "\n" for h in histories))
        script = tmp / "bench.lua"
        script.write_text(LUA)
        env = {**os.environ, "BENCH_PATH": "/recommend", "BENCH_BODIES": str(bodies)}
        with serving(arts, "--workers", str(args.workers), "--events", "none", *shlex.split(args.serve_args)) as server:
            url = server.url
            time.sleep(5)  # the standbys load
            body = {"history": histories[0], "k": 20}

            def kill_compute(sig):
                def fault():
                    pid = _busiest(_compute_processes(server.pid))
                    os.kill(pid, sig)
                    return f"{signal.Signals(sig).name} of compute process {pid}"
                return fault

            def swap():
                new = artifact.new_version_id()
                shutil.copytree(arts / artifact.VERSIONS / current, arts / artifact.VERSIONS / new)
                artifact.activate(arts, new)
                return f"version {new} published"

            def broken():
                new = artifact.new_version_id()
                shutil.copytree(arts / artifact.VERSIONS / current, arts / artifact.VERSIONS / new)
                (arts / artifact.VERSIONS / new / artifact.EMBEDDINGS).write_bytes(b"damaged")
                artifact.activate(arts, new)
                return f"broken version {new} published"

            def kill_worker():
                workers = [c for c in _children(server.pid) if _children(c)]
                os.kill(workers[0], signal.SIGKILL)
                return f"SIGKILL of worker {workers[0]}"

            def none():
                return "no fault (baseline)"

            faults = {"baseline": none, "kill-compute": kill_compute(signal.SIGKILL), "stop-compute": kill_compute(signal.SIGSTOP),
                      "swap": swap, "broken": broken, "kill-worker": kill_worker}
            results = []
            for name in args.faults.split(","):
                before = _tree_rss_bytes(server.pid)
                row = _window(url, args, env, script, body, faults[name])
                time.sleep(2)
                row.update({"name": name, "rss_before_mib": round(before / 2**20, 1),
                            "rss_after_mib": round(_tree_rss_bytes(server.pid) / 2**20, 1),
                            "ready_after": httpx.get(url + "/readyz").status_code})
                if name == "baseline":
                    row["batch_seconds_p99_9_at_most"] = _batch_quantile(url, 0.999)
                results.append(row)
                print(json.dumps(row), flush=True)
                time.sleep(3)  # a new standby loads before the next fault
            if args.soak:
                samples: dict[int, list[int]] = {}
                wrk = subprocess.Popen(["wrk", "-t1", f"-c{args.connections}", f"-d{args.soak:g}s", "--timeout", "10s",
                                        "-s", str(script), url], stdout=subprocess.PIPE, text=True, env=env)
                started = time.time()
                while wrk.poll() is None:
                    for proc in [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]:
                        try:
                            samples.setdefault(proc.pid, []).append(proc.memory_info().rss)
                        except psutil.NoSuchProcess:
                            pass
                    time.sleep(10)
                out = wrk.communicate()[0]
                r = json.loads(next(x for x in out.splitlines() if x.startswith("JSON "))[5:])
                soak = {"seconds": round(time.time() - started), "requests": r["requests"], "ok": r["ok"],
                        "processes": {pid: {"first_mib": round(s[0] / 2**20, 1), "last_mib": round(s[-1] / 2**20, 1),
                                            "growth_pct": round(100 * (s[-1] - s[0]) / s[0], 2)}
                                      for pid, s in samples.items() if len(s) > 2}}
                print(json.dumps({"soak": soak}), flush=True)


if __name__ == "__main__":
    main()
