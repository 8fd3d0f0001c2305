"""Highest request rate the HTTP service sustains with p99 < 50 ms and no errors.

Starts `groundrec serve` on a free loopback port over ARTIFACTS, sweeps open-loop rates
with the load tester (short steps), then holds the best passing rate for --confirm-s.
The load generator runs on the same machine as the server: on a 2-core box they share it.

Usage: python benchmarks/bench_http.py --artifacts DIR --histories FILE [--endpoint recommend|search]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time

import httpx

from groundrec.online.loadtest import format_report, load_histories, run_load


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--histories", required=True)
    ap.add_argument("--endpoint", choices=["recommend", "search"], default="recommend")
    ap.add_argument("--rates", default="25,50,100,200,400")
    ap.add_argument("--step-s", type=float, default=10)
    ap.add_argument("--confirm-s", type=float, default=60)
    ap.add_argument("--p99-ms", type=float, default=50)
    args = ap.parse_args()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "groundrec.shared.cli", "serve", "--artifacts", args.artifacts,
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                raise SystemExit("server did not become ready")
            time.sleep(0.5)
        histories = load_histories(args.histories)
        share = 1.0 if args.endpoint == "search" else 0.0
        best = None
        for rate in [float(r) for r in args.rates.split(",")]:
            rep = asyncio.run(run_load(url, rate, args.step_s, 256, histories, search_share=share))
            ok = not rep.errors and not rep.dropped and rep.latency_ms["p99"] < args.p99_ms
            print(f"[{'pass' if ok else 'FAIL'}] " + format_report(rep).replace("\n", "\n       "))
            if not ok:
                break
            best = rate
        if best is None:
            print("no rate passed")
            return
        rep = asyncio.run(run_load(url, best, args.confirm_s, 256, histories, search_share=share))
        ok = not rep.errors and not rep.dropped and rep.latency_ms["p99"] < args.p99_ms
        print(f"confirm {args.confirm_s:g} s at {best:g} req/s: {'pass' if ok else 'FAIL'}\n" + format_report(rep))
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
