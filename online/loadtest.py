"""Open-loop load test of a running service: requests are due at a fixed rate whatever the
latency, and each is timed from when it was due, not when this process got round to sending it
(so queueing, the server's or this generator's, shows up in the numbers); bounded by duration,
count and in-flight limit, and only against loopback addresses."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import aiohttp
import numpy as np

from groundrec.shared.errors import UserError
from groundrec.shared.tables import read_table

DEFAULT_TEXTS = ["black dress", "running shoes", "striped t-shirt", "warm winter jacket", "blue denim jeans",
                 "white sneakers", "floral summer dress", "leather bag", "wool sweater", "sports bra"]


@dataclass
class LoadReport:
    url: str
    target_rate: float
    duration_s: float
    sent: int = 0
    completed: int = 0  # answered or failed (an error status, a timeout, a refused connection)
    ok: int = 0  # of those, answered below 400: what the rate and the latencies are made of
    dropped: int = 0  # not sent: --concurrency requests were in flight (the server answered too slowly for the rate)
    achieved_rps: float = 0.0  # ok answers per second, from the first send to the last answer or the end of sending
    send_lag_ms: float = 0.0  # the most a request was sent after it was due (this generator falling behind)
    errors: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    by_endpoint: dict[str, int] = field(default_factory=dict)
    feedback: int = 0  # events with the recommendation_id of an answer that showed their item to their user, accepted
    unattributed: int = 0  # of those, what the server stored without crediting the list (should stay 0)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def require_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        raise UserError(f"cannot resolve {host!r}") from None
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise UserError(f"refusing to load-test {url}: only loopback addresses (127.0.0.0/8, ::1) are allowed")


def load_histories(path: Path, user_column: str = "user_id", item_column: str = "item_id",
                   time_column: str | None = "timestamp", max_len: int = 50) -> list[list[str]]:
    """Histories from an interactions table (grouped by user, in time order) or a JSONL of
    ``{"history": [...]}`` lines."""
    if Path(path).suffix in (".jsonl", ".ndjson") and "history" in Path(path).read_text().split("\n", 1)[0]:
        return [json.loads(line)["history"][-max_len:] for line in Path(path).read_text().splitlines() if line.strip()]
    table = read_table(path)
    if time_column and time_column in table.column_names:
        table = table.sort_by([(user_column, "ascending"), (time_column, "ascending")])
    users: dict[str, list[str]] = {}
    for u, i in zip(table.column(user_column).to_pylist(), table.column(item_column).to_pylist()):
        users.setdefault(str(u), []).append(str(i))
    return [h[-max_len:] for h in users.values() if h]


def _percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {}
    a = np.array(latencies) * 1000
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max()), "mean": float(a.mean())}


async def run_load(url: str, rate: float, duration_s: float, concurrency: int, histories: list[list[str]],
                   search_share: float = 0.2, k: int = 10, texts: list[str] | None = None, timeout_s: float = 5.0,
                   max_requests: int = 1_000_000, seed: int = 0, api_key: str | None = None,
                   events_per_recommend: float = 0.0, users: int = 1000, feedback_share: float = 0.5) -> LoadReport:
    """With ``events_per_recommend`` > 0 the /recommend share becomes a shop's traffic: single
    events (POST /events) for ``users`` simulated users, and recommendations by their user_id,
    that many events per recommendation; 0: recommendations with the history in the request.
    Of the events of a user who got an answer, ``feedback_share`` are feedback on it: a view of
    one of the items it showed, sent with its recommendation_id; the rest are plain events."""
    require_loopback(url)
    if rate <= 0 or duration_s <= 0 or concurrency < 1:
        raise UserError("rate and duration must be > 0 and concurrency >= 1")
    if not histories and search_share < 1:
        raise UserError("no histories to build /recommend requests from")
    if not 0 <= feedback_share <= 1:
        raise UserError(f"feedback_share {feedback_share}: give a share between 0 and 1")
    rng = random.Random(seed)
    texts = texts or DEFAULT_TEXTS
    report = LoadReport(url, rate, duration_s)
    latencies: list[float] = []
    shown: dict[str, tuple[str, list[str]]] = {}  # a simulated user's latest answer: its id and items
    in_flight = 0
    total = min(int(rate * duration_s), max_requests)
    headers = {"X-API-Key": api_key} if api_key else {}
    # aiohttp, not httpx: httpx's async pool saturated far below the server's throughput.
    connector = aiohttp.TCPConnector(limit=concurrency)
    client_timeout = aiohttp.ClientTimeout(total=timeout_s)

    async with aiohttp.ClientSession(url, connector=connector, timeout=client_timeout, headers=headers) as client:
        async def one(path: str, body: dict, user: str | None, due: float) -> None:
            nonlocal in_flight, last
            report.send_lag_ms = max(report.send_lag_ms, (time.perf_counter() - due) * 1000)
            try:
                try:
                    async with client.post(path, json=body) as r:
                        data = await r.read()
                        key = None if r.status < 400 else str(r.status)
                except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                    key = type(e).__name__
                done = time.perf_counter()
                report.completed += 1
                if key is None:  # failures (a fast 503, a timeout) are counted, never timed nor rated
                    last = done
                    latencies.append(done - due)  # from when it was due: a late send is waiting too
                    report.ok += 1
                    if user is not None:  # the answer a user's feedback will carry the id of
                        _remember(shown, user, path, body, data, report)
                else:
                    report.errors[key] = report.errors.get(key, 0) + 1
            finally:
                in_flight -= 1

        tasks = []
        start = last = time.perf_counter()
        for n in range(total):
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight >= concurrency:
                report.dropped += 1
                continue
            user = None  # a simulated shop user (events_per_recommend > 0)
            if rng.random() < search_share:
                path, body = "/search", {"text": rng.choice(texts), "k": k}
            elif events_per_recommend:
                user = f"load-{rng.randrange(users)}"
                if rng.random() < events_per_recommend / (events_per_recommend + 1):
                    event = {"user_id": user, "item_id": rng.choice(rng.choice(histories))}
                    if user in shown and rng.random() < feedback_share:
                        rid, items = shown[user]
                        event = {"user_id": user, "item_id": rng.choice(items), "type": "view",
                                 "recommendation_id": rid}
                    path, body = "/events", {"events": [event]}
                else:
                    path, body = "/recommend", {"user_id": user, "k": k}
            else:
                path, body = "/recommend", {"history": rng.choice(histories), "k": k}
            report.by_endpoint[path] = report.by_endpoint.get(path, 0) + 1
            in_flight += 1
            report.sent += 1
            tasks.append(asyncio.create_task(one(path, body, user, due)))
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s + 1)
        # to the last ok answer (a straggler's timeout does not stretch it), and at least over the
        # time requests were due (ok answers that stopped early are not a rate kept up)
        elapsed = max(last, start + total / rate) - start
    report.achieved_rps = report.ok / elapsed if elapsed > 0 else 0.0
    report.latency_ms = _percentiles(latencies)
    return report


def _remember(shown: dict, user: str, path: str, body: dict, data: bytes, report: LoadReport) -> None:
    """After a 200: a /recommend answer's id and items become the user's latest list shown; a
    feedback event's answer says whether the server credited it."""
    try:
        answer = json.loads(data)
    except ValueError:
        return
    if path == "/recommend" and answer.get("recommendation_id") and answer.get("items"):
        shown[user] = (answer["recommendation_id"], [i["item_id"] for i in answer["items"]])
    elif path == "/events" and "recommendation_id" in body["events"][0]:
        report.feedback += 1
        report.unattributed += answer.get("unattributed", 0)


def format_report(r: LoadReport) -> str:
    lat = r.latency_ms
    lines = [f"target {r.target_rate:g} req/s for {r.duration_s:g} s against {r.url}",
             f"sent {r.sent}, completed {r.completed} ({r.ok} ok), achieved {r.achieved_rps:.1f} ok/s, "
             f"dropped {r.dropped}" + (" (the in-flight limit: the server answered too slowly for this rate)"
                                       if r.dropped else "") + f", sent up to {r.send_lag_ms:.1f} ms late",
             f"errors: {r.errors or 'none'}   mix: {r.by_endpoint}"]
    if r.feedback:
        lines.append(f"feedback with a recommendation_id: {r.feedback} events, {r.unattributed} not credited")
    if lat:
        lines.append(f"latency ms (ok answers, from when each was due): p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  p99 {lat['p99']:.1f}  "
                     f"max {lat['max']:.1f}")
    return "\n".join(lines)
