"""Does the web page slow /recommend? `groundrec serve` over ARTIFACTS (a version with
thumbnails, e.g. the H&M job's), wrk at --connections on POST /recommend (real histories),
alternated --rounds times: alone, and while one person browses (every --page-every seconds the
items page, then each thumbnail on it, as a browser loads them; one connection). Prints the
median /recommend rates and their ratio, and the page's own latencies.

Usage: python benchmarks/bench_ui.py --artifacts DIR --histories FILE
           [--connections 32] [--duration 10] [--rounds 3] [--page-every 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_http import LUA, _wrk  # noqa: E402

from groundrec.online.loadtest import load_histories  # noqa: E402
from groundrec.online.testing import serving  # noqa: E402


def _browse(url: str, stop: threading.Event, every: float, seen: dict) -> None:
    with httpx.Client(base_url=url, timeout=10) as c:
        while not stop.is_set():
            started = time.perf_counter()
            page = c.get("/")
            thumbs = re.findall(r'src="(/items/[^"]+/thumbnail)"', page.text)
            for src in thumbs:
                c.get(src).raise_for_status()
            seen["pages"].append(time.perf_counter() - started)
            seen["thumbnails"] += len(thumbs)
            stop.wait(max(0.0, every - (time.perf_counter() - started)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", required=True)
    p.add_argument("--histories", required=True)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--page-every", type=float, default=1.0)
    args = p.parse_args()
    with serving(args.artifacts, "--events", "none") as server:
        url = server.url
        with tempfile.TemporaryDirectory() as tmp:
            bodies = Path(tmp) / "bodies.jsonl"
            bodies.write_text("".join(json.dumps({"history": h, "k": 20}) + "\n"
                                      for h in load_histories(args.histories)[:2000]))
            script = Path(tmp) / "bench.lua"
            script.write_text(LUA)
            env = {**os.environ, "BENCH_PATH": "/recommend", "BENCH_BODIES": str(bodies)}
            rates: dict[str, list[float]] = {"alone": [], "with the page": []}
            seen = {"pages": [], "thumbnails": 0}
            for _ in range(args.rounds):
                rates["alone"].append(_wrk(url, args.connections, args.duration, env, script)["ok_per_s"])
                stop = threading.Event()
                browser = threading.Thread(target=_browse, args=(url, stop, args.page_every, seen))
                browser.start()
                rates["with the page"].append(_wrk(url, args.connections, args.duration, env, script)["ok_per_s"])
                stop.set()
                browser.join()
    alone, shared = (statistics.median(rates[k]) for k in ("alone", "with the page"))
    pages = sorted(seen["pages"])
    print(f"/recommend at {args.connections} connections, medians of {args.rounds} rounds: alone {alone:.1f} ok/s, "
          f"while a person browses {shared:.1f} ok/s = {100 * shared / alone:.1f}%")
    print(f"  rounds: alone {rates['alone']}, with the page {rates['with the page']}")
    print(f"the page under that load: {len(pages)} items pages with {seen['thumbnails']} thumbnails, "
          f"page + its thumbnails p50 {1000 * pages[len(pages) // 2]:.0f} ms, max {1000 * pages[-1]:.0f} ms")


if __name__ == "__main__":
    main()
