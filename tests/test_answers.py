"""What an answer carries (online/answers.py): its id and arm stamped into the batch worker's
JSON, batch answers split by arm and read back by entry, and the team-draft merge of two answers."""

import json

from groundrec.online.answers import interleaved, results_by_key, settings_of, stamped, stamped_result
from groundrec.online.schemas import UserQuery


def answer(*items, version="v1"):
    return json.dumps({"items": [{"item_id": i, "score": 1.0 / (n + 1), "fields": None} for n, i in enumerate(items)],
                       "unknown_ids": [], "fallback": None, "history_ignored": 0, "version": version}).encode()


def test_one_answer_gets_its_id_and_arm_first_and_stays_valid_json():
    body = json.loads(stamped(answer("a", "b"), "r1", "B"))
    assert list(body)[:3] == ["recommendation_id", "arm", "items"] and body["recommendation_id"] == "r1"
    assert body["arm"] == "B" and [i["item_id"] for i in body["items"]] == ["a", "b"]
    assert json.loads(stamped(answer("a"), "r2", None))["arm"] is None


def test_batch_parts_come_back_by_key_and_each_result_gets_its_own_id_first():
    batch = json.dumps({"results": [json.loads(answer("a")), json.loads(answer("b"))], "version": "v1"}).encode()
    other = json.dumps({"results": [json.loads(answer("c", version="v2"))], "version": "v2"}).encode()
    got, version = results_by_key([([(0, 0), (2, 0)], batch), ([(1, 0)], other)])
    # two versions answered (an experiment's arms): no one top-level version (was the first part's, "v1")
    assert version is None and [got[n, 0]["items"][0]["item_id"] for n in range(3)] == ["a", "c", "b"]
    assert got[1, 0]["version"] == "v2" and results_by_key([([(0, 0), (2, 0)], batch)])[1] == "v1"
    out = stamped_result({**got[1, 0], "arm": "stale"}, "r2", "B")
    assert list(out)[:3] == ["recommendation_id", "arm", "items"] and (out["recommendation_id"], out["arm"]) == ("r2", "B")


def test_interleaving_keeps_each_item_s_own_score_and_credits_its_arm():
    body, teams = interleaved(answer("a", "b", "c"), answer("x", "a", "y", version="v2"), ("A", "B"), 4, "seed-1")
    out = json.loads(body)
    items = [i["item_id"] for i in out["items"]]
    assert len(items) == 4 == len(set(items)) and out["teams"] == teams and out["arm"] == "A+B"
    assert out["version"] == "v1|v2"
    for item, team in zip(out["items"], teams):
        assert item["item_id"] in (("a", "b", "c") if team == "A" else ("x", "a", "y"))
    again, _ = interleaved(answer("a", "b", "c"), answer("x", "a", "y", version="v2"), ("A", "B"), 4, "seed-1")
    assert again == body  # the coin flips are seeded by the id: the list can be replayed
    lists = {"A": ["b", "a", "c"], "B": ["a", "x", "y"]}
    drafted_by_b = 0
    for seed in range(30):  # "a" is in both lists, at 0.5 in A's and 1.0 in B's: the drafting arm's score
        out, teams = interleaved(answer(*lists["A"]), answer(*lists["B"]), ("A", "B"), 4, f"seed-{seed}")
        for item, team in zip(json.loads(out)["items"], teams):
            assert item["score"] == 1.0 / (lists[team].index(item["item_id"]) + 1)
            drafted_by_b += (item["item_id"], team) == ("a", "B")
    assert drafted_by_b


def test_the_settings_an_impression_records():
    q = UserQuery(history=["a"], k=5, strategy="recency", text="red")
    s = settings_of(q)
    assert s["k"] == 5 and s["strategy"] == "recency" and s["text"] is True and "history" not in s


def test_an_impression_records_the_strategy_as_requested_null_for_the_version_s_default():
    """A request naming no strategy gets its version's default_strategy (online/profiling.py);
    the impression's settings say null, and its version says which."""
    assert settings_of(UserQuery(history=["a"]))["strategy"] is None
    assert settings_of(UserQuery(history=["a"], strategy="sequence"))["strategy"] == "sequence"


def test_an_answer_s_fields_are_strict_json_whatever_the_catalog_holds():
    """A NaN in a numeric catalog column came out as a bare NaN (no JSON parser reads it) in a
    single answer, and bytes that are not UTF-8 raised in the batch worker: a 500 for every
    request of the micro-batch. Both as ``answers.item_json`` writes an item."""
    import base64

    from groundrec.online.retrieve import Recommendation, Result
    from groundrec.online.schemas import ResultOut, result_json

    body = result_json(Result([Recommendation("a", 0.5, {"price": float("nan"), "code": b"\xff\x00"})]), "v1")
    answer = json.loads(body, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))  # strict: no NaN
    fields = answer["items"][0]["fields"]
    assert fields["price"] is None and base64.urlsafe_b64decode(fields["code"]) == b"\xff\x00"  # as item_json: URL-safe
    assert ResultOut.model_validate(answer).items[0].item_id == "a"
