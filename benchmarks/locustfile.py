"""Locust users for a running `groundrec serve`: /recommend with real histories, /search with
short texts (weights 4:1, as `groundrec loadtest`'s default mix). Run it from the groundrec
environment (it reads histories with groundrec's own loader) after `pip install locust`:

    GROUNDREC_HISTORIES=interactions.parquet locust -f benchmarks/locustfile.py \\
        --host http://127.0.0.1:8000 --headless -u 64 -r 16 -t 60s

GROUNDREC_HISTORIES: an interactions table (user_id, item_id, timestamp) or JSONL of
{"history": [...]}; GROUNDREC_K: results per request (default 20); GROUNDREC_EVENTS_PER_RECOMMEND
(e.g. 5): post that many single events for a user before each recommendation by its user_id
(a shop's traffic) instead of sending histories; of a user's events once it got an answer,
GROUNDREC_FEEDBACK_SHARE (default 0.5) are feedback on it: a view of an item it showed, sent
with its recommendation_id (the rest are plain events); GROUNDREC_API_KEY is sent as
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
FEEDBACK_SHARE = float(os.environ.get("GROUNDREC_FEEDBACK_SHARE", "0.5"))
SHOWN: dict[str, tuple[str, list[str]]] = {}  # a simulated user's latest answer: its recommendation_id and items


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

    def _post(self, path: str, body: dict) -> dict | None:
        with self.client.post(path, json=body, headers=self.headers, catch_response=True) as r:
            if r.status_code == 503:
                r.failure("503 shed")
            elif r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")
            elif not (answer := r.json()).get("items"):
                r.failure("200 without items")
            else:
                return answer
        return None

    def _event(self, user: str) -> None:
        """A plain event, or feedback on the user's latest answer (its id, an item it showed)."""
        event = {"user_id": user, "item_id": random.choice(random.choice(HISTORIES))}
        name = "/events"
        if user in SHOWN and random.random() < FEEDBACK_SHARE:
            rid, items = SHOWN[user]
            event = {"user_id": user, "item_id": random.choice(items), "type": "view", "recommendation_id": rid}
            name = "/events (feedback)"
        with self.client.post("/events", json={"events": [event]}, headers=self.headers, name=name,
                              catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")
            elif "recommendation_id" in event and r.json().get("unattributed"):
                r.failure("feedback not credited to the list shown")

    @task(4)
    def recommend(self):
        if EVENTS_PER_RECOMMEND:  # a shop's traffic: events, then recommendations by user id
            user = f"locust-{random.randrange(1000)}"
            for _ in range(round(EVENTS_PER_RECOMMEND)):
                self._event(user)
            answer = self._post("/recommend", {"user_id": user, "k": K})
            if answer and answer.get("recommendation_id"):
                SHOWN[user] = (answer["recommendation_id"], [i["item_id"] for i in answer["items"]])
        else:
            self._post("/recommend", {"history": random.choice(HISTORIES), "k": K})

    @task(1)
    def search(self):
        self._post("/search", {"text": random.choice(DEFAULT_TEXTS), "k": K})
