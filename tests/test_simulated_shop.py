"""The simulated shop (benchmarks/simulate_shop.py, small): two versions published by the real
job on a dense catalog's purchases before a cutoff (a hybrid, truly better, and content only),
served by the real service over HTTP as an experiment (A/B, then team draft), users who click
their ground truth (the purchases after the cutoff) by a position-based model, and the online
report on the event store: the better arm is found significantly better by both methods, and
every click sent is credited to its list's arm (by its id, or by the window without one)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_path = Path(__file__).resolve().parents[1] / "benchmarks" / "simulate_shop.py"
_spec = importlib.util.spec_from_file_location("simulate_shop", _path)
sim = importlib.util.module_from_spec(_spec)
sys.modules["simulate_shop"] = sim
_spec.loader.exec_module(sim)

CLICKS = {"sessions": 4, "k": 10, "p_relevant": 0.5, "p_other": 0.02, "no_id_share": 0.25}


@pytest.fixture(scope="module")
def shop(tmp_path_factory, tiny_vlm):
    root = tmp_path_factory.mktemp("shop")
    shop = sim.make_shop(root, tiny_vlm(), items=300, users=400, per_user=40, train_share=0.6, seed=3)
    shop["root"] = root
    return shop


def _run(shop, mode, seed, **clicks):
    """Serve ``mode``, post the histories, simulate; the log, the history events, results.json
    and the store. Clicks are sent at once after their answer, stamped by the server."""
    import httpx

    store = shop["root"] / f"{mode}-{seed}.db"
    truth = shop["truth"]
    with sim.serve(shop, store, mode) as url, httpx.Client(timeout=30) as client:
        posted = sim.post_histories(client, url, {u: shop["history"][u] for u in truth})
        log = sim.simulate(client, url, truth, seed=seed, **{**CLICKS, **clicks})  # clicks stamped by the server
    return log, posted, sim.report(store, shop["root"] / f"report-{mode}-{seed}"), store


def _assert_every_click_credited(results, log, posted):
    sent_with_id = sum(len(r["clicked"]) for r in log if r["with_id"])
    sent_without = sum(len(r["clicked"]) for r in log if not r["with_id"])
    assert sent_with_id > 50 and sent_without > 10  # enough of each kind for the comparison to bite
    a = results["attribution"]
    assert (a["by_id"], a["by_window"], a["unverified"]) == (sent_with_id, sent_without, 0)
    assert a["unattributed"] == posted and a["impressions"] == len(log)  # only the history events stay unattributed
    for arm in {r["arm"] for r in log}:
        mine = [r for r in log if r["arm"] == arm]
        got = results["arms"][arm]
        assert got["impressions"] == len(mine)
        assert got["clicks"] == sum(bool(r["clicked"]) for r in mine)  # lists with a click, either kind
        assert got["users"] == len({r["user"] for r in mine})
    assert sim.check(results, log, posted) == []


def test_ab_finds_the_better_version_and_credits_every_click_to_its_arm(shop):
    log, posted, results, store = _run(shop, "ab", seed=3)
    _assert_every_click_credited(results, log, posted)
    assert {r["arm"] for r in log} == {sim.BETTER, sim.WORSE}
    for arm, version in shop["versions"].items():  # each arm served its pinned version
        assert {r["version"] for r in log if r["arm"] == arm} == {version}
        assert results["versions"][version]["impressions"] == results["arms"][arm]["impressions"]
    test = next(t for t in results["ab_tests"] if t["metric"] == "ctr")
    assert (test["a"], test["b"]) == (sim.BETTER, sim.WORSE) and test["users_in_both"] == 0
    assert test["diff"] < 0 and test["p"] < 0.05, test  # worse - better: the better arm, significantly
    assert results["arms"][sim.BETTER]["ctr"] > results["arms"][sim.WORSE]["ctr"]
    # The simulator's own tallies give the report's p (what the script resamples for the users needed).
    p, right = sim.ab_p(list(sim.per_user(log).values()))
    assert right and p == pytest.approx(test["p"], rel=1e-9)
    # The window is what credits the clicks without an id: one shorter than the milliseconds from
    # a list to its clicks credits none of them, and still every click sent with its id.
    from groundrec.online.report.run import ReportConfig, run

    narrow = run(ReportConfig(events=f"sqlite:///{store}", out=shop["root"] / "narrow", window_s=1e-4, bootstrap=100))
    without = sum(len(r["clicked"]) for r in log if not r["with_id"])
    a = narrow["attribution"]
    assert (a["by_window"], a["by_id"]) == (0, results["attribution"]["by_id"])
    assert a["unattributed"] == posted + without


def test_team_draft_interleaving_finds_the_better_version_and_credits_each_team(shop):
    log, posted, results, store = _run(shop, "team_draft", seed=4)
    _assert_every_click_credited(results, log, posted)
    assert {r["arm"] for r in log} == {f"{sim.BETTER}+{sim.WORSE}"}
    assert all(set(r["teams"]) <= {sim.BETTER, sim.WORSE} for r in log)
    (t,) = results["interleaving"]
    want = sim.expected(log)["credits"]
    assert (t["a"], t["b"]) == (sim.BETTER, sim.WORSE)
    assert (t["credits_a"], t["credits_b"]) == (want[sim.BETTER], want[sim.WORSE])  # each click to its team
    assert t["wins_a"] > t["wins_b"] and t["p_sign"] < 0.05, t
    p, right = sim.interleaving_p(list(sim.per_user(log).values()))
    assert right and p == pytest.approx(t["p_sign"], rel=1e-9)
