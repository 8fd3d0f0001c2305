"""The hybrid's one tuner (offline/tuning.py), the job's and eval's: the order of its stages,
what each stage is given, what it returns, on a scorer whose scores are set by hand."""

import numpy as np
import pytest

from groundrec.offline.config import CollabGrid
from groundrec.offline.tuning import (HybridChoice, HybridTuning, by_model, narrowest, smaller_ranks,
                                      tune_hybrid)

USERS = 400


def _hits(mean: float) -> np.ndarray:
    """USERS per-user hits whose mean is ``mean`` (its standard error about 0.025 at 0.5)."""
    out = np.zeros(USERS)
    out[:round(mean * USERS)] = 1.0
    return out


class Scorer:
    """A ``HybridScorer`` from tables of mean scores; records every call in order."""

    def __init__(self, hybrid, ranks=None, projected=None, published=None, full=16):
        self.tables = {"hybrid": hybrid, "ranks": ranks or {}, "projected": projected or {},
                       "published": published or (lambda fw, slots: 0.5)}
        self.full, self.calls = full, []

    def hybrid(self, reg, dropout, half_life, weights):
        self.calls.append(("hybrid", (reg, dropout, half_life), list(weights)))
        return [_hits(self.tables["hybrid"](reg, dropout, half_life, w)) for w in weights]

    def full_rank(self, reg, dropout):
        self.calls.append(("full_rank", (reg, dropout)))
        return self.full

    def at_rank(self, choice, rank):
        self.calls.append(("at_rank", choice, rank))
        return self.tables["ranks"][rank]

    def projected(self, choice, rank):
        self.calls.append(("projected", choice, rank))
        return self.tables["projected"][rank]

    def published(self, choice, fresh):
        self.calls.append(("published", choice, list(fresh)))
        return [_hits(self.tables["published"](fw, slots)) for fw, slots in fresh]

    def named(self, name):
        return [c for c in self.calls if c[0] == name]


def _grid(**kw) -> CollabGrid:
    return CollabGrid(**{"rank": 16, "reg": [10.0, 100.0], "dropout": [0.0], "half_life": [0.0, 5.0],
                         "weight": [0.0, 1.0], "refine": False, "widenings": 0, "fresh_weight": [0.0, 1.0],
                         "fresh_slots": [0, 1], **kw})


def test_content_alone_within_the_noise_stops_after_the_grid():
    """Every weight scores within one standard error of content alone: weight 0, nothing past
    the grid is tuned (no width, no freshness prior, no place), the full rank recorded."""
    scorer = Scorer(lambda reg, d, hl, w: 0.50 + 0.01 * w)
    choice, tuning = tune_hybrid(_grid(), scorer, "collab")
    assert choice == HybridChoice(reg=10.0, dropout=0.0, half_life=0.0, weight=0.0, rank=16, score=0.5)
    assert not choice.hybrid and choice.query_half_life == 0.0
    assert [c[0] for c in scorer.calls if c[0] != "hybrid"] == ["full_rank"]
    assert tuning.fresh is None and tuning.slots is None and tuning.ranks == {} and tuning.widened == []
    # every model (reg x half_life) scored once, with its two weights together
    assert sorted(c[1] for c in scorer.named("hybrid")) == [(10.0, 0.0, 0.0), (10.0, 0.0, 5.0), (100.0, 0.0, 0.0),
                                                            (100.0, 0.0, 5.0)]
    assert all(c[2] == [0.0, 1.0] for c in scorer.named("hybrid"))


def test_a_hybrid_is_narrowed_projected_then_given_its_freshness_prior_and_places():
    means = {0.0: 0.30, 1.0: 0.60, 10.0: 0.50}  # weight 1 wins on the grid, and is not its edge once widened
    scorer = Scorer(lambda reg, d, hl, w: means[w] - (0.1 if reg != 10.0 or hl else 0.0),
                    ranks={4: 0.595, 8: 0.60}, projected={4: 0.59}, published=lambda fw, slots: 0.59)
    choice, tuning = tune_hybrid(_grid(widenings=1), scorer, "collab")
    # the width: rank 4 (a quarter) is within 2% of the full rank's 0.60, then projected (0.59 >= 0.588)
    assert [c[2] for c in scorer.named("at_rank")] == [4] and [c[2] for c in scorer.named("projected")] == [4]
    assert scorer.named("at_rank")[0][1] == HybridChoice(10.0, 0.0, 0.0, 1.0, 16, score=0.6)
    assert tuning.ranks == {4: 0.595} and tuning.projected == {4: 0.59}
    # the freshness prior: every value scores alike, so the largest; on its edge, widened once (x10)
    assert tuning.fresh.widened == [{"axis": "fresh_weight", "value": 10.0}] and tuning.fresh.chosen == {
        "fresh_weight": 10.0}
    lifts = [c for c in scorer.named("published") if all(s == 0 for _, s in c[2])]
    assert all(c[1] == HybridChoice(10.0, 0.0, 0.0, 1.0, 4, True, 0.59) for c in lifts)  # at the published width
    # ... then the places, at the chosen lift: the most within one standard error
    places = [c for c in scorer.named("published") if c not in lifts]
    assert places and all(c[1].fresh_weight == 10.0 and [fw for fw, _ in c[2]] == [10.0] * len(c[2]) for c in places)
    assert choice == HybridChoice(reg=10.0, dropout=0.0, half_life=0.0, weight=1.0, rank=4, projected=True, score=0.59,
                                  fresh_weight=10.0, fresh_slots=1)
    assert isinstance(choice.fresh_slots, int)
    # reg was widened down to 1 and the weight up to 10, both lost: no warning for either; the lift
    # still sits on its edge
    assert tuning.grid.widened == [{"axis": "reg", "value": 1.0}, {"axis": "weight", "value": 10.0}]
    assert tuning.widened == [*tuning.grid.widened, *tuning.fresh.widened]
    assert tuning.warnings == ["fresh_weight=10.0 is the largest value tried: widen the grid (collab) upwards"]
    # the places' own edge is not in the report's warnings (nor widened: that search has no budget)
    assert tuning.slots.warnings and not set(tuning.slots.warnings) & set(tuning.warnings)


def test_the_full_rank_and_no_projection_when_neither_is_within_the_tolerance():
    scorer = Scorer(lambda reg, d, hl, w: 0.3 + 0.3 * w, ranks={4: 0.5, 8: 0.55}, projected={16: 0.4},
                    published=lambda fw, slots: 0.6 - 0.2 * fw)
    choice, tuning = tune_hybrid(_grid(reg=[10.0]), scorer, "tuning.collab")
    assert (choice.rank, choice.projected, choice.score) == (16, False, 0.6)
    assert [c[2] for c in scorer.named("at_rank")] == [4, 8] and [c[2] for c in scorer.named("projected")] == [16]
    assert choice.fresh_weight == 0.0  # a lift that costs recall is not taken
    assert tuning.warnings == ["weight=1.0 is the largest value tried: widen the grid (tuning.collab) upwards"]


def test_without_projection_none_is_tried():
    scorer = Scorer(lambda reg, d, hl, w: 0.3 + 0.3 * w, ranks={4: 0.6})
    choice, _ = tune_hybrid(_grid(reg=[10.0], project=False), scorer, "collab")
    assert (choice.rank, choice.projected) == (4, False) and scorer.named("projected") == []


def test_by_model_scores_each_model_once_and_answers_in_the_points_order():
    asked = []

    def hybrid(reg, dropout, half_life, weights):
        asked.append(((reg, dropout, half_life), weights))
        return [np.array([reg + half_life + w]) for w in weights]

    points = [{"reg": r, "dropout": 0.0, "half_life": h, "weight": w} for w in (0.0, 2.0) for r in (1.0, 10.0)
              for h in (0.0, 3.0)]
    got = by_model(points, hybrid)
    assert [g[0] for g in got] == [p["reg"] + p["half_life"] + p["weight"] for p in points]
    assert asked == [((1.0, 0.0, 0.0), [0.0, 2.0]), ((1.0, 0.0, 3.0), [0.0, 2.0]), ((10.0, 0.0, 0.0), [0.0, 2.0]),
                     ((10.0, 0.0, 3.0), [0.0, 2.0])]


def test_narrowest_takes_the_narrowest_rank_then_the_projection_within_tolerance():
    """The width rule: a quarter, then a half of the rank, the first within the tolerance of
    the full rank's score wins; then the projection at that rank, if within it too; the score
    returned is the chosen setting's."""
    asked: list[int] = []

    def at(scores):
        return lambda r: asked.append(r) or scores[r]

    assert narrowest(64, 0.50, 0.02, at({16: 0.495, 32: 0.6}), None) == (16, False, 0.495)
    assert asked == [16]  # the narrowest first, and no further once it passes
    assert narrowest(64, 0.50, 0.02, at({16: 0.48, 32: 0.491}), lambda r: 0.49) == (32, True, 0.49)
    assert narrowest(64, 0.50, 0.02, at({16: 0.1, 32: 0.2}), lambda r: 0.489) == (64, False, 0.50)
    assert narrowest(64, 0.50, 0.0, at({16: 0.1, 32: 0.2}), lambda r: 0.50) == (64, True, 0.50)
    assert narrowest(1, 0.30, 0.02, at({}), lambda r: 0.0) == (1, False, 0.30)  # nothing narrower than rank 1
    assert smaller_ranks(128) == [32, 64] and smaller_ranks(3) == [1] and smaller_ranks(1) == []


def test_a_choice_is_frozen_and_untuned_is_content_alone_with_the_first_model():
    grid = _grid(reg=[100.0, 10.0], dropout=[0.5, 0.0])  # the config sorts its grids
    choice = HybridChoice.untuned(grid)
    assert choice == HybridChoice(10.0, 0.0, 0.0, 0.0, 16) and not choice.hybrid and choice.score is None
    with pytest.raises(AttributeError):
        choice.weight = 1.0  # type: ignore[misc]
    assert HybridChoice(1.0, 0.0, 20.0, 0.0, 8).query_half_life == 0.0  # no collaborative part: no query
    assert HybridChoice(1.0, 0.0, 20.0, 0.1, 8).query_half_life == 20.0
    assert HybridTuning.__dataclass_params__.frozen
