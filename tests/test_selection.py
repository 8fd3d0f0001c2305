"""The one model-selection procedure (offline/selection.py): the rule, the tie-breaks, the
widening of a grid whose edge wins, and what is recorded."""

import numpy as np
import pytest

from groundrec.offline.selection import one_standard_error, search, step_beyond


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
