"""Attack a live groundrec server on loopback and report what happened, bounded in count and time.

    python benchmarks/attack.py --artifacts ARTIFACTS            # starts `groundrec serve` itself
    python benchmarks/attack.py --url http://127.0.0.1:8000 --item-id 0108775015

Two parts: hand-made requests (malformed, hostile, oversized, slow; each with the statuses
that are acceptable) and schemathesis over the server's OpenAPI spec (every generated case
must get a non-5xx answer). Afterwards the server must still answer /healthz and its
/metrics must count no 5xx. Prints a table (the one in docs/operations.md) and exits 1 when
any case got an unacceptable answer, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from contextlib import ExitStack
from pathlib import Path

import httpx

from groundrec.online.testing import serving


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    body: bytes | None = None
    ok: tuple[int, ...] = (400, 422)
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)


def hand_cases(item_id: str, max_history: int = 500, max_body_bytes: int = 1_000_000) -> list[Case]:
    """The hand-made part: what a careless or hostile client sends."""
    j = lambda obj: json.dumps(obj).encode()  # noqa: E731
    raw = lambda s: s.encode("utf-8", "surrogatepass")  # noqa: E731
    h = [item_id]
    return [
        Case("not JSON", "POST", "/recommend", b"{history: nope"),
        Case("empty body", "POST", "/recommend", b""),
        Case("JSON null", "POST", "/recommend", b"null"),
        Case("NaN literal", "POST", "/recommend", b'{"history": ["%s"], "popularity_weight": NaN}' % item_id.encode()),
        Case("k = 0", "POST", "/recommend", j({"history": h, "k": 0})),
        Case("k = 10^9", "POST", "/recommend", j({"history": h, "k": 10**9})),
        Case("k as a string", "POST", "/recommend", j({"history": h, "k": "20"}), ok=(200, 400, 422)),
        Case("unknown ids only", "POST", "/recommend", j({"history": ["no-such-item-1", "no-such-item-2"]}),
             ok=(200, 422)),
        Case("history longer than max_history", "POST", "/recommend", j({"history": h * (max_history + 1)}),
             ok=(200, 413, 422)),
        Case("1 MB id", "POST", "/recommend", j({"history": ["x" * 1_000_000]}), ok=(413, 422)),
        Case("lone surrogate id", "POST", "/recommend", raw('{"history": ["\\ud800"]}')),
        Case("lone surrogate filter key", "POST", "/recommend", raw('{"history": ["%s"], "filters": {"\\udfff": "x"}}'
                                                                     % item_id)),
        Case("filter value of another type", "POST", "/recommend", j({"history": h, "filters": {"title": 5}}),
             ok=(200, 400)),
        Case("filter on an unknown column", "POST", "/recommend", j({"history": h, "filters": {"nope": "x"}})),
        Case("popularity_weight 1e308", "POST", "/recommend", j({"history": h, "popularity_weight": 1e308})),
        Case("history weight -1e308", "POST", "/recommend", j({"history": [{"item_id": item_id, "weight": -1e308}]})),
        Case("nested 10,000 deep", "POST", "/recommend", b"[" * 10_000 + b"]" * 10_000),
        Case("batch of 10,000", "POST", "/recommend", j({"batch": [{"history": h}] * 10_000}), ok=(413, 422)),
        Case("search text of 1 MB", "POST", "/search", j({"text": "a" * 999_000}), ok=(400, 413, 422)),
        Case("search with no text", "POST", "/search", j({})),
        Case("body over max_body_bytes", "POST", "/recommend", b" " * (max_body_bytes + 1), ok=(413,)),
        Case("wrong content type", "POST", "/recommend", j({"history": h}), ok=(200, 415, 422),
             headers=(("content-type", "text/plain"),)),
        Case("GET on /recommend", "GET", "/recommend", None, ok=(405,)),
        Case("path traversal in /items", "GET", "/items/..%2F..%2F..%2Fetc%2Fpasswd", None, ok=(404,)),
        Case("absolute path in /items", "GET", "/items/%2Fetc%2Fpasswd", None, ok=(404,)),
        Case("id of 60 KB in /items", "GET", "/items/" + "x" * 60_000, None, ok=(404, 414, 431)),
        Case("unknown route", "GET", "/admin", None, ok=(404,)),
        Case("known item", "GET", f"/items/{item_id}", None, ok=(200,)),
    ]


def _run_case(client: httpx.Client, case: Case) -> tuple[int | str, float]:
    started = time.perf_counter()
    try:
        r = client.request(case.method, case.path, content=case.body, headers=dict(case.headers))
        status: int | str = r.status_code
    except httpx.HTTPError as e:
        status = f"{type(e).__name__}"
    return status, (time.perf_counter() - started) * 1000


def _raw_exchange(host: str, port: int, payload: bytes, wait_s: float) -> str:
    """Send raw bytes and read the status line, waiting up to ``wait_s``."""
    with socket.create_connection((host, port), timeout=wait_s) as s:
        s.sendall(payload)
        try:
            line = s.recv(200).split(b"\r\n", 1)[0].decode("latin-1")
        except socket.timeout:
            return "no answer"
    return line or "closed"


def socket_cases(url: str, body_timeout_s: float, max_body_bytes: int) -> list[tuple[str, str, str, bool]]:
    """Cases that need a raw socket: a body that stops half-way, a chunked body over the limit."""
    u = httpx.URL(url)
    host, port = u.host, u.port or 80
    out = []
    started = time.perf_counter()
    status = _raw_exchange(host, port, b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 100\r\n\r\n{\"history\": [", body_timeout_s + 10)
    took = time.perf_counter() - started
    out.append(("body stops half-way", "408 within body_timeout_s", f"{status} after {took:.1f} s",
                " 408 " in status and took < body_timeout_s + 5))
    chunk = b" " * 65536
    n = max_body_bytes // len(chunk) + 2
    payload = (b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * n + b"0\r\n\r\n")
    try:
        status = _raw_exchange(host, port, payload, 30)
    except OSError as e:  # the server may answer 413 and close before all is sent
        status = f"closed while sending ({type(e).__name__})"
    out.append(("chunked body over max_body_bytes", "413", status, " 413 " in status or "closed while" in status))
    return out


def run_schemathesis(url: str, examples: int, max_time_s: int, seed: int) -> tuple[int, str]:
    st = shutil.which("st") or str(Path(sys.executable).with_name("st"))
    cmd = [st, "run", f"{url}/openapi.json", "--checks", "not_a_server_error", "--max-examples", str(examples),
           "--max-time", str(max_time_s), "--seed", str(seed), "--workers", "1", "--no-color",
           "--request-timeout", "10", "--suppress-health-check", "all", "--phases", "examples,coverage,fuzzing"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=max_time_s + 120)
    return r.returncode, r.stdout + r.stderr


def _first_item_id(artifacts: str) -> str:
    import pyarrow.parquet as pq

    from groundrec.shared import artifact

    path = artifact.current_path(artifacts)
    manifest = artifact.read_manifest(path)
    return str(pq.read_table(artifact.VersionFiles(path).items, columns=[manifest.id_column]).column(0)[0].as_py())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--artifacts", help="start `groundrec serve` on this artifacts root (loopback, a free port)")
    p.add_argument("--serve-config", help="ServeConfig YAML for the server it starts (limits, body timeout)")
    p.add_argument("--url", help="attack this running server instead")
    p.add_argument("--item-id", help="a known item id (read from --artifacts when not given)")
    p.add_argument("--examples", type=int, default=50, help="schemathesis examples per operation (0: skip it)")
    p.add_argument("--max-time", type=int, default=60, help="schemathesis time budget, seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--body-timeout-s", type=float, default=None, help="the server's body_timeout_s (default: "
                   "from --serve-config, else 10)")
    p.add_argument("--log", default="attack-serve.log", help="where the started server's log goes")
    args = p.parse_args(argv)
    if not args.url and not args.artifacts:
        p.error("give --artifacts (to start a server) or --url (to attack a running one)")

    limits = {"body_timeout_s": 10.0, "max_body_bytes": 1_000_000, "max_history": 500}
    if args.serve_config:
        import yaml

        limits.update({k: v for k, v in (yaml.safe_load(Path(args.serve_config).read_text()) or {}).items()
                       if k in limits})
    if args.body_timeout_s is not None:
        limits["body_timeout_s"] = args.body_timeout_s
    item_id = args.item_id or (_first_item_id(args.artifacts) if args.artifacts else None)
    if not item_id:
        p.error("--item-id is needed with --url")

    rows: list[tuple[str, str, str, bool]] = []
    with ExitStack() as stack:
        server = None
        if args.url:
            url = args.url.rstrip("/")
        else:  # its output in --log; stopped when this block ends
            server = stack.enter_context(serving(args.artifacts, *(["--config", args.serve_config] if args.serve_config
                                                                   else []), log=Path(args.log), timeout=120))
            url = server.url
        with httpx.Client(base_url=url, timeout=30) as client:
            for case in hand_cases(item_id, limits["max_history"], limits["max_body_bytes"]):
                status, ms = _run_case(client, case)
                rows.append((case.name, " or ".join(map(str, case.ok)), f"{status} ({ms:.0f} ms)", status in case.ok))
        rows += socket_cases(url, limits["body_timeout_s"], limits["max_body_bytes"])
        if args.examples > 0:
            rc, out = run_schemathesis(url, args.examples, args.max_time, args.seed)
            cases = re.findall(r"(\d+) generated", out)
            summary = next((ln.strip() for ln in reversed(out.splitlines()) if "passed" in ln or "failed" in ln), "")
            rows.append((f"schemathesis over OpenAPI ({cases[-1] if cases else '?'} cases)", "no 5xx",
                         summary[:80] or f"exit {rc}", rc == 0))
            if rc != 0:
                print(out[-4000:], file=sys.stderr)
        started = time.perf_counter()
        try:
            health = httpx.get(url + "/healthz", timeout=5).status_code
        except httpx.HTTPError as e:
            health = type(e).__name__
        rows.append(("/healthz afterwards", "200", f"{health} ({(time.perf_counter() - started) * 1000:.0f} ms)",
                     health == 200))
        metrics = httpx.get(url + "/metrics", timeout=5).text
        fives = sum(float(m) for m in re.findall(r'status="5\d\d"[^\n]*\} (\S+)', metrics))
        rows.append(("5xx counted in /metrics", "0", f"{fives:g}", fives == 0))
        if server is not None:
            alive = server.proc.poll() is None
            rows.append(("server process survived", "alive", "alive" if alive else f"exit {server.proc.returncode}",
                         alive))

    print("| attack | acceptable | got | ok |\n|---|---|---|---|")
    for name, ok, got, good in rows:
        print(f"| {name} | {ok} | {got} | {'yes' if good else '**NO**'} |")
    bad = [r[0] for r in rows if not r[3]]
    print(f"\n{len(rows) - len(bad)}/{len(rows)} as expected" + (f"; unexpected: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
