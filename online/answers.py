"""What an answer carries beyond its items: its ``recommendation_id`` and experiment ``arm``,
stamped into the JSON the batch worker built (a byte splice for one user, no parse on the hot
path); a team-draft answer merged from two arms' answers; and the request settings an
impression records."""

from __future__ import annotations

import json
import random

from pydantic_core import to_json

from groundrec.online.interleaving import team_draft

def item_json(answer: dict) -> bytes:
    """GET /items/{id}'s answer as JSON, written by pydantic-core: any catalog column's values
    (dates, decimals; bytes as base64; NaN and infinities as null). ``LocalClient.item`` reads
    the same bytes back, so both clients see the same values."""
    return to_json(answer, inf_nan_mode="null", bytes_mode="base64")


# The request settings an impression records (what made the list, beside its version and arm).
# ``strategy`` as requested: null when the request (and its arm) named none, i.e. the default
# strategy of the impression's version (its manifest's ``default_strategy``; mean when absent,
# and for a ``recency`` default the mean where the history carried no times).
SETTINGS = ("k", "strategy", "popularity_weight", "diversity", "max_per", "filters", "fresh_weight", "fresh_slots",
            "exclude_seen", "text_weight")


def settings_of(query) -> dict:
    """The settings of one query that matter to the list it got (``text`` as a flag only)."""
    out = {f: getattr(query, f) for f in SETTINGS}
    if query.text:
        out["text"] = True
    return out


def stamped(body: bytes, recommendation_id: str, arm: str | None) -> bytes:
    """One user's answer JSON with its id and arm as its first fields."""
    head = b'{"recommendation_id":"' + recommendation_id.encode() + b'","arm":' + to_json(arm) + b","
    return head + body[1:]


def stamped_result(result: dict, recommendation_id: str, arm: str | None) -> dict:
    """One result of a batch answer (parsed: the batch path is not the hot one) with its id and arm first."""
    return {"recommendation_id": recommendation_id, "arm": arm,
            **{f: v for f, v in result.items() if f not in ("recommendation_id", "arm")}}


def results_by_key(parts: list[tuple[list, bytes]]) -> tuple[dict, str | None]:
    """Batch answers of parts of one batch (each with the keys of the entries its results
    answer, in order) as key -> result, and the ``version`` every part answered with (None when
    the parts' versions differ, an experiment's arms: each result names its own)."""
    results: dict = {}
    versions = set()
    for keys, body in parts:
        answer = json.loads(body)
        versions.add(answer.get("version"))
        results.update(zip(keys, answer["results"]))
    return results, versions.pop() if len(versions) == 1 else None


def interleaved(first: bytes, second: bytes, names: tuple[str, str], k: int,
                recommendation_id: str) -> tuple[bytes, list[str | None]]:
    """Two arms' answers for one user merged by team draft into one list of ``k`` (each item
    keeps the score and fields the arm that drafted it gave it; ``unknown_ids``, ``fallback``
    and ``history_ignored`` are the first arm's); the coin flips are seeded by the answer's id,
    so a list can be replayed. Returns the answer JSON (``arm``: "A+B") and each position's arm
    (None: filled after one arm's list ran out, credited to neither: ``team_draft``)."""
    a, b = json.loads(first), json.loads(second)
    by_arm = {names[0]: {i["item_id"]: i for i in a["items"]}, names[1]: {i["item_id"]: i for i in b["items"]}}
    items, team_names = team_draft([i["item_id"] for i in a["items"]], [i["item_id"] for i in b["items"]], k,
                                   random.Random(recommendation_id), names)
    versions = a.get("version") if a.get("version") == b.get("version") else f"{a.get('version')}|{b.get('version')}"
    answer = {"recommendation_id": recommendation_id, "arm": "+".join(names),
              "items": [by_arm[team][i] if team else by_arm[names[0]].get(i) or by_arm[names[1]][i]
                        for i, team in zip(items, team_names)],  # as the arm that drew it gave it
              "teams": team_names, "unknown_ids": a.get("unknown_ids", []), "fallback": a.get("fallback"),
              "history_ignored": a.get("history_ignored", 0), "version": versions}
    return to_json(answer), team_names
