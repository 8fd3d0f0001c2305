"""Locust users for a running `groundrec serve`: /recommend with real histories, /search with
short texts (weights 4:1, as `groundrec loadtest`'s default mix). Run it from the groundrec
environment (it reads histories with groundrec's own loader) after `pip install locust`:

    GROUNDREC_HISTORIES=interactions.parquet locust -f benchmarks/locustfile.py \\
        --host http://127.0.0.1:8000 --headless -u 64 -r 16 -t 60s

GROUNDREC_HISTORIES: an interactions table (user_id, item_id, timestamp) or JSONL of
{"history": [...]}; GROUNDREC_K: results per request (default 20); GROUNDREC_EVENTS_PER_RECOMMEND
(e.g. 5): post that many single events for a user before each recommendation by its user_id
(a shop's traffic) instead of sending histories; GROUNDREC_API_KEY is sent as
X-API-Key when set. A 503 (load shed) is reported as a failure named "503 shed", so Locust's
table shows how much was refused apart from real errors.
"""

from __future__ import annotations

import os
import random

from locust import FastHttpUser, between, events, task

from groundrec.online.loadtest import DEFAULT_TEXTS, load_histories

HISTORIES: list[list[str]] = []
K = int(os.environ.get("GROUNDREC_K", "20"))
EVENTS_PER_RECOMMEND = float(os.environ.get("GROUNDREC_EVENTS_PER_RECOMMEND", "0"))


@events.init.add_listener
def _load(environment, **_):
    path = os.environ.get("GROUNDREC_HISTORIES")
    if not path:
        raise SystemExit("set GROUNDREC_HISTORIES to an interactions table or a JSONL of histories")
    HISTORIES.extend(h[-100:] for h in load_histories(path) if h)
    if not HISTORIES:
        raise SystemExit(f"no histories in {path}")


class GroundrecUser(FastHttpUser):
    wait_time = between(0, 0.05)

    def on_start(self):
        key = os.environ.get("GROUNDREC_API_KEY")
        self.headers = {"X-API-Key": key} if key else {}

    def _post(self, path: str, body: dict) -> None:
        with self.client.post(path, json=body, headers=self.headers, catch_response=True) as r:
            if r.status_code == 503:
                r.failure("503 shed")
            elif r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")
            elif not r.json().get("items"):
                r.failure("200 without items")

    @task(4)
    def recommend(self):
        if EVENTS_PER_RECOMMEND:  # a shop's traffic: events, then recommendations by user id
            user = f"locust-{random.randrange(1000)}"
            for _ in range(round(EVENTS_PER_RECOMMEND)):
                with self.client.post("/events", json={"events": [{"user_id": user, "item_id": random.choice(
                        random.choice(HISTORIES))}]}, headers=self.headers, catch_response=True) as r:
                    if r.status_code != 200:
                        r.failure(f"{r.status_code}: {r.text[:200]}")
            self._post("/recommend", {"user_id": user, "k": K})
        else:
            self._post("/recommend", {"history": random.choice(HISTORIES), "k": K})

    @task(1)
    def search(self):
        self._post("/search", {"text": random.choice(DEFAULT_TEXTS), "k": K})
