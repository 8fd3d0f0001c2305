"""The one model-selection procedure (offline/selection.py): the rule, the tie-breaks, the
widening of a grid whose edge wins, and what is recorded."""

import numpy as np
import pytest

from groundrec.offline.selection import (beats_by_one_standard_error, coarse_to_fine, midpoints, one_standard_error,
                                         search, step_beyond)


def _scorer(table: dict, calls: list | None = None):
    """Per-user scores from a function of the point; records every batch it is asked for."""
    def score(points):
        if calls is not None:
            calls.append([dict(p) for p in points])
        return [np.asarray(table(p), dtype=np.float64) for p in points]
    return score


def test_one_standard_error_prefers_the_simpler_setting_unless_the_gain_stands_out():
    rng = np.random.default_rng(0)
    content = (rng.random(400) < 0.10).astype(float)  # 400 users' hits
    noise = content.copy()
    noise[rng.choice(np.flatnonzero(noise == 0), 4, replace=False)] = 1  # +0.01: well inside one SE (0.015)
    clear = content.copy()
    clear[rng.choice(np.flatnonzero(clear == 0), 40, replace=False)] = 1  # +0.10: far outside it
    assert one_standard_error({0.0: content, 1.0: noise}, [0.0, 1.0]) == 0.0
    assert one_standard_error({0.0: content, 1.0: clear}, [0.0, 1.0]) == 1.0
    # among several within one SE of the best, the first in simplicity order
    assert one_standard_error({0.0: content, 0.5: clear, 1.0: clear}, [0.0, 0.5, 1.0]) == 0.5


@pytest.mark.parametrize("values, upwards, limits, expected", [
    ([10.0, 100.0, 1000.0], True, None, 10_000.0),
    ([10.0, 100.0, 1000.0], False, None, 1.0),
    ([0.0, 0.01, 0.1], True, None, 1.0),
    ([0.0, 0.1], False, None, None),        # 0 is the floor: nothing below it
    ([0.0, 1.0], True, None, 10.0),         # no positive ratio: a decade
    ([2, 3], True, None, 4),                # integers step by their difference
    ([2, 3], False, (0, 17), 1),
    ([1, 2], False, (0, 17), None),
    ([0.25, 0.5, 0.75], True, (0, 1), None),  # a share never leaves (0, 1)
    ([0.25, 0.5, 0.75], False, (0, 1), 0.125),
])
def test_step_beyond_an_edge(values, upwards, limits, expected):
    assert step_beyond(values, upwards, limits) == expected


def test_best_mean_wins_and_ties_go_to_the_first_in_grid_order():
    flat = search({"a": [1.0, 2.0, 3.0]}, _scorer(lambda p: [0.5, 0.5]))
    assert flat.chosen == {"a": 1.0}  # a tie: the first; it sits on the lower edge (> 0), so it is said
    assert flat.warnings == ["a=1.0 is the smallest value tried: widen the grid (tuning) downwards"]
    flat = search({"a": [1.0, 2.0, 3.0]}, _scorer(lambda p: [0.5] if p["a"] != 2.0 else [0.6]))
    assert flat.chosen == {"a": 2.0} and flat.score == pytest.approx(0.6) and flat.warnings == []


def test_a_winning_edge_is_widened_a_bounded_number_of_times_and_recorded():
    calls = []
    rising = _scorer(lambda p: [p["reg"]], calls)  # the larger the better: always the top edge
    found = search({"reg": [10.0, 100.0]}, rising, widenings=2, section="collab")
    assert found.widened == [{"axis": "reg", "value": 1000.0}, {"axis": "reg", "value": 10_000.0}]
    assert found.axes["reg"] == [10.0, 100.0, 1000.0, 10_000.0] and found.chosen == {"reg": 10_000.0}
    assert [len(c) for c in calls] == [2, 1, 1]  # each point scored once
    assert found.warnings == ["reg=10000.0 is the largest value tried: widen the grid (collab) upwards"]
    peak = search({"reg": [10.0, 100.0]}, _scorer(lambda p: [-abs(np.log10(p["reg"]) - 3)]), widenings=5)
    assert peak.chosen == {"reg": 1000.0} and peak.warnings == [] and len(peak.widened) == 2  # stops once inside
    assert search({"reg": [10.0, 100.0]}, rising, widenings=0).widened == []


def test_the_simplest_rule_and_what_is_relevant_to_widen():
    # weight 0 (content alone) is as good as anything within noise: chosen, and the regularisation
    # it does not depend on is neither widened nor warned about
    noisy = _scorer(lambda p: np.r_[np.ones(50), np.zeros(50)] if p["weight"] == 0 else np.r_[np.ones(51), np.zeros(49)])
    found = search({"reg": [10.0, 100.0], "weight": [0.0, 1.0]}, noisy, simplest="weight", widenings=2,
                   relevant=lambda p: p if p["weight"] else {})
    assert found.chosen == {"reg": 10.0, "weight": 0.0} and found.widened == [] and found.warnings == []
    # a clear gain at the largest weight: the weight axis widens upwards, the reg on its edge too
    clear = _scorer(lambda p: (np.arange(100) < 10 + int(30 * np.log10(1 + p["weight"]))).astype(float))
    found = search({"reg": [10.0, 100.0], "weight": [0.0, 1.0]}, clear, simplest="weight", widenings=1,
                   relevant=lambda p: p if p["weight"] else {})
    assert {w["axis"] for w in found.widened} == {"reg", "weight"}
    assert found.axes["weight"] == [0.0, 1.0, 10.0]
    assert found.report()["grid"] == found.axes


def test_the_simplest_value_may_be_the_largest_one_that_costs_nothing_measurable():
    # overall recall flat within noise up to 0.3, clearly lower at 1: the largest lift inside
    # one standard error is chosen (and the lowest, 0, without simplest_is_largest)
    base = (np.arange(400) < 40).astype(float)
    worse = (np.arange(400) < 20).astype(float)
    table = {0.0: base, 0.1: base, 0.3: np.r_[base[:-1], 0.0], 1.0: worse}
    score = _scorer(lambda p: table[p["fresh_weight"]])
    high = search({"fresh_weight": [0.0, 0.1, 0.3, 1.0]}, score, simplest="fresh_weight", simplest_is_largest=True)
    low = search({"fresh_weight": [0.0, 0.1, 0.3, 1.0]}, score, simplest="fresh_weight")
    assert high.chosen == {"fresh_weight": 0.3} and low.chosen == {"fresh_weight": 0.0}


def test_coarse_to_fine_tries_the_later_axis_only_at_the_value_chosen_first():
    calls = []
    # reg peaks at 100; dropout 0.5 helps, and helps most at reg 1000 (which the second stage never sees)
    table = lambda p: [-abs(np.log10(p["reg"]) - 2) + p["dropout"] * (3 if p["reg"] == 1000.0 else 1)]  # noqa: E731
    found = coarse_to_fine({"reg": [10.0, 100.0, 1000.0], "dropout": [0.0, 0.5], "weight": [1.0]},
                           _scorer(table, calls), later="dropout", at="reg")
    scored = [(p["reg"], p["dropout"]) for batch in calls for p in batch]
    assert scored == [(10.0, 0.0), (100.0, 0.0), (1000.0, 0.0), (100.0, 0.5)]  # m + n - 1 pairs, each once
    assert found.chosen == {"reg": 100.0, "dropout": 0.5, "weight": 1.0} and found.score == pytest.approx(0.5)
    assert found.axes == {"reg": [10.0, 100.0, 1000.0], "dropout": [0.0, 0.5], "weight": [1.0]}
    assert set(found.scores) == {(r, d, 1.0) for r, d in scored}
    # one value of the later axis: the first stage is the search
    assert coarse_to_fine({"reg": [10.0, 100.0], "dropout": [0.0]}, _scorer(table), later="dropout",
                          at="reg").chosen == {"reg": 100.0, "dropout": 0.0}


def test_coarse_to_fine_keeps_the_first_stage_warnings_on_the_fixed_axis():
    rising = _scorer(lambda p: [p["reg"] + p["dropout"]])  # reg wants more: its top edge, with no widening left
    found = coarse_to_fine({"reg": [10.0, 100.0], "dropout": [0.0, 0.5]}, rising, later="dropout", at="reg",
                           limits={"dropout": (0.0, 1.0)}, section="collab")
    assert found.chosen == {"reg": 100.0, "dropout": 0.5}
    assert found.warnings == ["reg=100.0 is the largest value tried: widen the grid (collab) upwards"]
    widened = coarse_to_fine({"reg": [10.0, 100.0], "dropout": [0.0, 0.5]}, rising, later="dropout", at="reg",
                             limits={"dropout": (0.0, 1.0)}, widenings=1)
    assert widened.chosen == {"reg": 1000.0, "dropout": 0.5} and widened.axes["reg"] == [10.0, 100.0, 1000.0]
    assert widened.widened == [{"axis": "reg", "value": 1000.0}]


@pytest.mark.parametrize("values, value, expected", [
    ([10.0, 100.0, 1000.0], 100.0, [31.6, 316.0]),
    ([10.0, 100.0, 1000.0], 1000.0, [316.0]),
    ([0.0, 10.0, 40.0], 10.0, [5.0, 20.0]),   # next to 0: arithmetic
    ([0.0, 10.0, 40.0], 0.0, [5.0]),
    ([0.0, 5.0, 10.0], 5.0, [2.5, 7.07]),
    ([0.0, 5.0, 10.0, 20.0], 10.0, [7.07, 14.1]),
    ([1.0, 1.0001], 1.0, []),                 # nothing new at three significant digits
])
def test_midpoints(values, value, expected):
    assert midpoints(values, value) == expected


def test_refinement_moves_to_a_better_midpoint_and_only_where_it_matters():
    calls = []
    # the best reg is 300 (between the grid's 100 and 1000); the best half_life 7 (10 on the grid)
    table = lambda p: [p["weight"] * (2 - abs(np.log10(p["reg"]) - 2.5) - abs(p["half_life"] - 7) / 100)]  # noqa: E731
    found = coarse_to_fine({"reg": [10.0, 100.0, 1000.0], "dropout": [0.0], "half_life": [0.0, 10.0, 40.0],
                            "weight": [0.0, 1.0]}, _scorer(table, calls), later="dropout", at="reg",
                           refine=("reg", "half_life"), simplest="weight", relevant=lambda p: p if p["weight"] else {})
    assert found.chosen == {"reg": 316.0, "dropout": 0.0, "half_life": 5.0, "weight": 1.0}
    assert found.axes["reg"] == [10.0, 31.6, 100.0, 316.0, 1000.0] and found.axes["half_life"] == [0.0, 5.0, 10.0, 20.0, 40.0]
    refined = [(p["reg"], p["half_life"]) for batch in calls[1:] for p in batch]
    assert set(refined) == {(31.6, 10.0), (316.0, 10.0), (316.0, 5.0), (316.0, 20.0)}  # one axis at a time
    assert len(refined) == 2 * len({*refined})  # each at both weights, once
    # content alone (weight 0) wins: reg and half_life do not matter, nothing is refined
    calls.clear()
    flat = coarse_to_fine({"reg": [10.0, 100.0], "dropout": [0.0], "half_life": [0.0, 10.0], "weight": [0.0, 1.0]},
                          _scorer(lambda p: [0.5], calls), later="dropout", at="reg", refine=("reg", "half_life"),
                          simplest="weight", relevant=lambda p: p if p["weight"] else {})
    assert flat.chosen["weight"] == 0.0 and len(calls) == 1


def test_a_candidate_replaces_the_incumbent_only_by_more_than_one_paired_standard_error():
    incumbent = np.array([1, 0, 1, 0, 1, 0, 1, 0, 1, 0] * 10, float)
    # Three users better and two worse in a hundred: a gain inside the noise keeps the incumbent.
    slightly = incumbent.copy()
    slightly[[1, 3, 5]], slightly[[0, 2]] = 1, 0
    r = beats_by_one_standard_error(slightly, incumbent)
    assert r["diff"] == pytest.approx(0.01) and r["se"] == pytest.approx(np.sqrt((5 - 0.01) / 99 / 100))
    assert not r["wins"]
    assert r["users"] == 100 and r["candidate"] == pytest.approx(0.51) and r["incumbent"] == pytest.approx(0.5)
    # Ten users better, none worse: the mean difference stands out of its standard error.
    better = incumbent.copy()
    better[1:20:2] = 1
    r = beats_by_one_standard_error(better, incumbent)
    assert r["diff"] == pytest.approx(0.1) and r["se"] == pytest.approx(np.std([1] * 10 + [0] * 90, ddof=1) / 10)
    assert r["wins"]
    # Paired, not two-sample: the same means with the gains on different users and losses on others.
    swapped = incumbent.copy()
    swapped[1:40:2], swapped[0:30:2] = 1, 0
    r = beats_by_one_standard_error(swapped, incumbent)
    assert r["diff"] == pytest.approx(0.05) and not r["wins"]
    assert not beats_by_one_standard_error(incumbent, incumbent)["wins"]  # a tie keeps the incumbent
    assert not beats_by_one_standard_error([], [])["wins"]
    assert not beats_by_one_standard_error([1.0], [0.0])["wins"]  # one user: a hit against a miss is no evidence
    with pytest.raises(ValueError):
        beats_by_one_standard_error([1, 0], [1, 0, 1])


def test_mean_and_se_is_over_users_and_zero_below_two():
    from groundrec.offline.selection import mean_and_se

    mean, se = mean_and_se([1.0, 0.0, 1.0, 0.0])
    assert mean == 0.5 and se == pytest.approx(np.std([1, 0, 1, 0], ddof=1) / 2)
    assert mean_and_se([3.0]) == (3.0, 0.0) and mean_and_se([]) == (0.0, 0.0)


def test_the_rule_keeps_the_best_points_threshold_through_every_stage():
    """Stage 1 takes a simpler point within one standard error of the best (reg 1, weight 2);
    the refinement's grid (reg fixed near the choice) lacks that best point: its own best, lower,
    must not lower the threshold, or the rule drifts to content alone (weight 0, 1.5 se below)."""
    base = np.random.default_rng(0).standard_normal(400)
    base = (base - base.mean()) / base.std(ddof=1)  # 400 users: se 0.01 at sd 0.2

    def value(p):
        if p["weight"] == 0:
            return 0.285
        return {(1.0, 2.0): 0.300, (10.0, 1.0): 0.292}.get((p["reg"], p["weight"]), 0.25)

    score = _scorer(lambda p: value(p) + 0.2 * base)
    axes = {"reg": [1.0, 10.0, 100.0], "dropout": [0.0], "half_life": [0.0], "weight": [0.0, 1.0, 2.0]}
    rules = dict(simplest="weight", relevant=lambda p: p if p["weight"] else {})
    assert search(axes, score, **rules).chosen["weight"] == 1.0
    staged = coarse_to_fine(axes, score, later="dropout", at="reg", refine=("reg", "half_life"), **rules)
    assert staged.chosen == {"reg": 10.0, "dropout": 0.0, "half_life": 0.0, "weight": 1.0}
