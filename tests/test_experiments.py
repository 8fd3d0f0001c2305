"""Experiments (online/experiments.py): the config, the sticky salted assignment, the layers
of request settings."""

from collections import Counter

import pytest
from pydantic import ValidationError

from groundrec.online.experiments import Experiment, with_defaults
from groundrec.online.schemas import UserQuery


V2 = "20261202T031500.123456Z-3f9c2a"  # a version id


def exp(**kw):
    return Experiment.model_validate({"name": "e1", "arms": [{"name": "A"}, {"name": "B", "version": V2}], **kw})


def test_assignment_is_sticky_salted_and_follows_the_weights():
    e = exp(arms=[{"name": "A", "weight": 3}, {"name": "B"}])
    users = [f"u{n}" for n in range(20_000)]
    arms = [e.assign(u).name for u in users]
    assert arms == [e.assign(u).name for u in users]  # sticky
    share = Counter(arms)["A"] / len(users)
    assert 0.73 < share < 0.77
    other = Experiment.model_validate({**e.model_dump(), "name": "e2"})
    moved = sum(a != other.assign(u).name for a, u in zip(arms, users)) / len(users)
    assert 0.3 < moved < 0.45  # a new salt reshuffles (independent draws: 2 x 0.75 x 0.25 = 0.375)


def test_editing_the_arms_moves_only_the_users_it_must():
    """An arm added takes users from each other arm and nobody moves between the others (17% of
    all users went from A to B when C was added); a weight raised moves users into that arm
    only; an arm removed gives only its own users away."""
    users = [f"u{n}" for n in range(20_000)]
    two = exp()
    before = [two.assign(u).name for u in users]
    three = Experiment.model_validate({"name": "e1", "arms": [{"name": "A"}, {"name": "B", "version": V2},
                                                              {"name": "C"}]})
    after = [three.assign(u).name for u in users]
    moved = Counter((a, b) for a, b in zip(before, after) if a != b)
    assert set(moved) == {("A", "C"), ("B", "C")} and 0.31 < sum(moved.values()) / len(users) < 0.36
    heavier = Experiment.model_validate({"name": "e1", "arms": [{"name": "A"}, {"name": "B", "version": V2,
                                                                                 "weight": 3}]})
    moved = Counter((a, b) for a, b in zip(before, [heavier.assign(u).name for u in users]) if a != b)
    assert set(moved) == {("A", "B")} and 0.23 < moved["A", "B"] / len(users) < 0.27  # 1/2 -> 1/4 of them in A
    assert all(b == a for a, b in zip(after, [two.assign(u).name for u in users]) if a != "C")  # C removed


def test_a_request_without_user_goes_to_the_default_arm():
    assert exp().assign(None).name == "A"
    assert exp(default_arm="B").assign(None).name == "B"


def test_request_fields_win_over_the_arm_which_wins_over_the_server():
    sent = UserQuery.model_validate({"history": ["i1"], "strategy": "recency"})
    got = with_defaults(sent, {"strategy": "mean", "popularity_weight": 0.2, "k": 5})
    assert got.strategy == "recency" and got.popularity_weight == 0.2 and got.k == 5 and got.history == ["i1"]
    assert with_defaults(sent, {}) is sent
    plain = UserQuery.model_validate({"history": ["i1"]})
    assert with_defaults(plain, {}).max_per is None  # the server's default applies later, untouched


@pytest.mark.parametrize("bad, message", [
    ({"arms": [{"name": "A"}]}, "at least 2"),
    ({"arms": [{"name": "A"}, {"name": "A"}]}, "must differ"),
    ({"default_arm": "C"}, "default_arm 'C'"),
    ({"arms": [{"name": "A", "defaults": {"user_id": "x"}}, {"name": "B"}]}, "not request settings"),
    ({"arms": [{"name": "A", "defaults": {"strategy": "nope"}}, {"name": "B"}]}, "strategy must be one of"),
    ({"arms": [{"name": "A b"}, {"name": "B"}]}, "arm name"),
    ({"mode": "team_draft", "arms": [{"name": "A"}, {"name": "B"}, {"name": "C"}]}, "exactly two"),
    # a longer list wins more drafted positions whatever it ranks
    ({"mode": "team_draft", "arms": [{"name": "A", "defaults": {"k": 5}}, {"name": "B"}]}, "may not set k"),
    # a mistyped id was served by the current version without a word
    ({"arms": [{"name": "A", "version": "20261202T031500Z-3f9c2a"}, {"name": "B"}]}, "neither 'current' nor a version"),
])
def test_a_bad_experiment_is_refused_naming_the_problem(bad, message):
    with pytest.raises((ValidationError, ValueError), match=message):
        exp(**bad)


def test_an_arm_s_places_for_new_items_fit_the_k_asked_instead_of_refusing_in_one_arm():
    """An arm keeping 8 places answered a request for 5 with a 400 its other arm did not give:
    that arm lost the request (its share of traffic skewed). Its places are cut to the k asked
    (or the arm's own k); another default the request cannot take is its error, naming it."""
    from groundrec.shared.errors import UserError

    sent = UserQuery.model_validate({"history": ["i1"], "k": 5})
    assert with_defaults(sent, {"fresh_slots": 8}).fresh_slots == 5
    assert with_defaults(UserQuery.model_validate({"history": ["i1"]}), {"fresh_slots": 8, "k": 6}).fresh_slots == 6
    assert with_defaults(sent, {"fresh_slots": 2}).fresh_slots == 2
    with pytest.raises(UserError, match="arm's defaults .*strategy"):  # any other invalid default: named
        with_defaults(sent, {"strategy": "telepathy"})


def test_an_arm_default_k_beyond_max_k_is_refused_when_the_config_loads():
    from groundrec.online.config import ServeConfig

    with pytest.raises(ValidationError, match="default k=500 exceeds max_k=100"):
        ServeConfig(artifacts="/tmp/x", experiment={"arms": [{"name": "A", "defaults": {"k": 500}}, {"name": "B"}]})


def test_the_parts_of_a_request_are_dropped_together_when_one_is_refused():
    """An experiment's two arms (or a batch's versions) are queued as parts of one request: the
    queue refusing one (full) left the other computed for nobody, then counted as a client gone
    and logged as an exception never retrieved. Now the others are cancelled (the batcher drops
    a cancelled job) and the refusal raised."""
    import asyncio

    from groundrec.online.errors import Overloaded
    from groundrec.online.recommender import _together

    async def main():
        queued = asyncio.get_running_loop().create_future()  # a part waiting for its batch

        async def waiting():
            return await queued

        async def refused():
            raise Overloaded("the queue is full")

        with pytest.raises(Overloaded):
            await _together([waiting(), refused()])
        assert queued.cancelled()  # dropped from the queue, not computed for nobody
        assert await _together([asyncio.sleep(0, "a"), asyncio.sleep(0, "b")]) == ["a", "b"]

    asyncio.run(main())
