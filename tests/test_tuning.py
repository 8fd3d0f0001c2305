"""The hybrid's one tuner (offline/tuning.py), the job's and eval's: the order of its stages,
what each stage is given, what it returns, on a scorer whose scores are set by hand."""

import numpy as np
import pytest

from groundrec.offline.config import CollabGrid
from groundrec.offline.tuning import HybridChoice, HybridTuning, by_model, tune_hybrid

USERS = 400


def _hits(mean: float) -> np.ndarray:
    """USERS per-user hits whose mean is ``mean`` (its standard error about 0.025 at 0.5)."""
    out = np.zeros(USERS)
    out[:round(mean * USERS)] = 1.0
    return out


class Scorer:
    """A ``HybridScorer`` from tables of mean scores; records every call in order."""

    def __init__(self, hybrid, ranks=None, projected=None, published=None, full=16, content_dim=32, slices=None):
        self.tables = {"hybrid": hybrid, "ranks": ranks or {}, "projected": projected or {},
                       "published": published or (lambda fw, slots: 0.5)}
        self.full, self.calls, self.content_dim = full, [], content_dim
        self.slices = slices if slices is not None else {}
        self.has_new = True

    def hybrid(self, reg, dropout, half_life, weights):
        self.calls.append(("hybrid", (reg, dropout, half_life), list(weights)))
        return [_hits(self.tables["hybrid"](reg, dropout, half_life, w)) for w in weights]

    def full_rank(self, reg, dropout):
        self.calls.append(("full_rank", (reg, dropout)))
        return self.full

    def at_rank(self, choice, rank):
        self.calls.append(("at_rank", choice, rank))
        return _hits(self.tables["ranks"][rank])

    def projected(self, choice, rank):
        self.calls.append(("projected", choice, rank))
        return _hits(self.tables["projected"][rank])

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
                    ranks={4: 0.595, 8: 0.60}, projected={4: 0.59}, published=lambda fw, slots: 0.58)
    # the mean loss alone (no standard error added): the rule before rank_confidence
    choice, tuning = tune_hybrid(_grid(widenings=1, rank_confidence=0.0), scorer, "collab")
    # the width: every narrower rank scored, widest first; rank 4 (a quarter) is within 2% of the
    # full rank's 0.60, then projected (0.59 >= 0.588)
    assert [c[2] for c in scorer.named("at_rank")] == [8, 4] and [c[2] for c in scorer.named("projected")] == [4]
    assert scorer.named("at_rank")[0][1] == HybridChoice(10.0, 0.0, 0.0, 1.0, 16, score=0.6)
    assert tuning.ranks == {4: 0.595, 8: 0.6} and tuning.projected == {4: 0.59}
    assert [(w["rank"], w["projected"], w["within"]) for w in tuning.width] == [
        (16, False, True), (4, False, True), (8, False, True), (4, True, True)]
    assert [round(w["loss"], 6) for w in tuning.width] == [0.0, 0.005, 0.0, 0.01]
    # the freshness prior: every value scores alike, so the largest; on its edge, widened once (x10)
    assert tuning.fresh.widened == [{"axis": "fresh_weight", "value": 10.0}] and tuning.fresh.chosen == {
        "fresh_weight": 10.0}
    lifts = [c for c in scorer.named("published") if all(s == 0 for _, s in c[2])]
    assert all(c[1] == HybridChoice(10.0, 0.0, 0.0, 1.0, 4, True, score=0.59) for c in lifts)  # at the published width
    # ... then the places, at the chosen lift: the most within one standard error
    places = [c for c in scorer.named("published") if c not in lifts]
    assert places and all(c[1].fresh_weight == 10.0 and [fw for fw, _ in c[2]] == [10.0] * len(c[2]) for c in places)
    # its score: the setting as published, its lift and places in it (0.58), not the width's (0.59)
    assert choice == HybridChoice(reg=10.0, dropout=0.0, half_life=0.0, weight=1.0, rank=4, projected=True, score=0.58,
                                  fresh_weight=10.0, fresh_slots=1)
    assert isinstance(choice.fresh_slots, int) and not choice.full_rank
    # reg was widened down to 1 and the weight up to 10, both lost: no warning for either; the lift
    # still sits on its edge
    assert tuning.grid.widened == [{"axis": "reg", "value": 1.0}, {"axis": "weight", "value": 10.0}]
    assert tuning.widened == [*tuning.grid.widened, *tuning.fresh.widened]
    assert tuning.warnings == ["fresh_weight=10.0 is the largest value tried: widen the grid (collab) upwards"]
    # the places' own edge is not in the report's warnings (nor widened: that search has no budget)
    assert tuning.slots.warnings and not set(tuning.slots.warnings) & set(tuning.warnings)


def test_a_loss_inside_the_noise_of_validation_is_not_taken_for_none():
    """With the default rule (one standard error of the paired loss added), rank 4's loss of
    0.01 (4 of 400 users) is within 2% of 0.6 (0.012) but not with its standard error (0.005)
    added; rank 8 loses nothing; the projection's 0.01 is refused likewise. On means alone
    (confidence 0), rank 4 and its projection pass."""
    means = {0.0: 0.30, 1.0: 0.60}
    scores = dict(ranks={4: 0.59, 8: 0.60}, projected={4: 0.59, 8: 0.59})
    scorer = Scorer(lambda reg, d, hl, w: means[w], **scores)
    choice, tuning = tune_hybrid(_grid(reg=[10.0], half_life=[0.0], widenings=0), scorer, "collab")
    assert (choice.rank, choice.projected, choice.full_rank) == (8, False, False)
    assert [(w["rank"], w["projected"], w["within"]) for w in tuning.width] == [
        (16, False, True), (4, False, False), (8, False, True), (8, True, False)]
    four = tuning.width[1]
    assert four["loss"] == pytest.approx(0.01) and four["se"] == pytest.approx(np.sqrt(0.01 * 0.99 / 399), rel=1e-6)
    loose, _ = tune_hybrid(_grid(reg=[10.0], half_life=[0.0], widenings=0, rank_confidence=0.0),
                           Scorer(lambda reg, d, hl, w: means[w], **scores), "collab")
    assert (loose.rank, loose.projected) == (4, True)


def test_the_full_rank_and_no_projection_when_neither_is_within_the_tolerance():
    scorer = Scorer(lambda reg, d, hl, w: 0.3 + 0.3 * w, ranks={4: 0.5, 8: 0.55}, projected={16: 0.4},
                    published=lambda fw, slots: 0.6 - 0.2 * fw)
    choice, tuning = tune_hybrid(_grid(reg=[10.0]), scorer, "tuning.collab")
    assert (choice.rank, choice.projected, choice.score, choice.full_rank) == (16, False, 0.6, True)
    assert [c[2] for c in scorer.named("at_rank")] == [8, 4] and [c[2] for c in scorer.named("projected")] == [16]
    assert choice.fresh_weight == 0.0  # a lift that costs recall is not taken
    assert tuning.warnings == ["weight=1.0 is the largest value tried: widen the grid (tuning.collab) upwards"]


def test_without_projection_none_is_tried_nor_above_the_content_width():
    scorer = Scorer(lambda reg, d, hl, w: 0.3 + 0.3 * w, ranks={4: 0.6, 8: 0.6})
    choice, _ = tune_hybrid(_grid(reg=[10.0], project=False), scorer, "collab")
    assert (choice.rank, choice.projected) == (4, False) and scorer.named("projected") == []
    # an exact model of 600 head items, nothing narrower within the rule, a content 32 wide:
    # a projection of 600 + 32 dimensions to 32 is not tried
    wide = Scorer(lambda reg, d, hl, w: 0.3 + 0.3 * w, ranks={r: 0.3 for r in (4, 8, 16, 32, 64)},
                  projected={}, full=600)
    choice, tuning = tune_hybrid(_grid(reg=[10.0]), wide, "collab")
    assert (choice.rank, choice.projected, choice.full_rank) == (600, False, True)
    assert [c[2] for c in wide.named("at_rank")] == [64, 32, 16, 8, 4] and wide.named("projected") == []
    assert [w["rank"] for w in tuning.width] == [600, 4, 8, 16, 32, 64]


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


def test_a_choice_is_frozen_and_untuned_is_content_alone_with_the_first_model():
    grid = _grid(reg=[100.0, 10.0], dropout=[0.5, 0.0])  # the config sorts its grids
    choice = HybridChoice.untuned(grid)
    assert choice == HybridChoice(10.0, 0.0, 0.0, 0.0, 16) and not choice.hybrid and choice.score is None
    with pytest.raises(AttributeError):
        choice.weight = 1.0  # type: ignore[misc]
    assert HybridChoice(1.0, 0.0, 20.0, 0.0, 8).query_half_life == 0.0  # no collaborative part: no query
    assert HybridChoice(1.0, 0.0, 20.0, 0.1, 8).query_half_life == 20.0
    assert HybridTuning.__dataclass_params__.frozen


def test_the_width_is_judged_on_the_scorers_slices_too():
    """On means alone rank 4's loss (4 hits of 400) is within 2% of 0.6; but the 20 users of the
    scorer's cold slice hold all four (0.2 of their 0.5): rank 8, which loses nothing, is published."""
    means = {0.0: 0.30, 1.0: 0.60}
    cold = np.zeros(USERS, bool)
    cold[230:250] = True  # _hits(0.59) loses users 236..239
    scores = dict(ranks={4: 0.59, 8: 0.60}, projected={4: 0.5, 8: 0.55})
    grid = _grid(reg=[10.0], half_life=[0.0], widenings=0, rank_confidence=0.0)
    blind, _ = tune_hybrid(grid, Scorer(lambda reg, d, hl, w: means[w], **scores), "collab")
    assert blind.rank == 4
    choice, tuning = tune_hybrid(grid, Scorer(lambda reg, d, hl, w: means[w], slices={"cold": cold, "warm": ~cold},
                                              **scores), "collab")
    assert (choice.rank, choice.projected) == (8, False)
    four = tuning.width[1]
    assert four["rank"] == 4 and four["slices"]["cold"]["loss"] == pytest.approx(0.2) and not four["within"]
    assert four["slices"]["warm"]["loss"] == 0.0 and len(tuning.width_folds) == 2


def test_without_a_new_item_in_validation_no_lift_and_no_place_are_published():
    """Every lift then scores the same (nothing new to lift), and the rule's 'largest that costs
    nothing measurable' published the widest, 11.1: a live item added later then swamped
    every list. Nothing measured: none."""
    scorer = Scorer(lambda reg, d, hl, w: 0.6 if w == 1.0 else 0.3, ranks={4: 0.595, 8: 0.6}, projected={4: 0.59},
                    published=lambda fw, slots: 0.58)
    scorer.has_new = False
    choice, tuning = tune_hybrid(_grid(widenings=2), scorer, "collab")
    assert (choice.fresh_weight, choice.fresh_slots) == (0.0, 0) and tuning.fresh.chosen == {"fresh_weight": 0.0}
    scorer.has_new = True
    assert tune_hybrid(_grid(widenings=2), scorer, "collab")[0].fresh_weight > 1.0  # alike scores: the largest


class RecentScorer(Scorer):
    """A scorer that scores the recent-popularity prior: published means by its weight."""

    recent = True

    def __init__(self, hybrid, by_weight, **kw):
        super().__init__(hybrid, **kw)
        self.by_weight = by_weight

    def published(self, choice, fresh):
        self.calls.append(("published", choice, list(fresh)))
        return [_hits(self.by_weight[choice.recent_weight]) for _ in fresh]


def test_the_recent_prior_is_the_best_weight_where_it_beats_none_for_a_hybrid_and_content_alone():
    """The stage after the width, before the lift and places (which are then chosen with it):
    0.3 and 1.0 score alike and best, so 0.3 (the first), which beats no prior by far on the
    same users; content alone's last stage."""
    from groundrec.offline.collab_grid import CollabGrid as Grid

    assert Grid is CollabGrid  # the config module re-exports the one declaration
    by_weight = {0.0: 0.5, 0.1: 0.6, 0.3: 0.7, 1.0: 0.7}
    grid = _grid(recent_weight=[0.0, 0.1, 0.3, 1.0])
    hybrid = RecentScorer(lambda reg, d, hl, w: 0.6 if w == 1.0 else 0.3, by_weight, ranks={4: 0.595, 8: 0.6},
                          projected={4: 0.59})
    choice, tuning = tune_hybrid(grid, hybrid, "collab")
    assert choice.weight == 1.0 and choice.recent_weight == 0.3 and tuning.last is tuning.slots
    assert choice.score == pytest.approx(0.7) and tuning.recent.chosen == {"recent_weight": 0.3}
    calls = hybrid.named("published")
    recent_calls = [c for c in calls if c[2] == [(0.0, 0)]]  # before the lift and places
    assert {c[1].recent_weight for c in recent_calls} == {0.0, 0.1, 0.3, 1.0}
    later = calls[len(recent_calls):]  # the lift and places, each with the chosen prior
    assert later and all(c[1].recent_weight == 0.3 for c in later) and calls[:len(recent_calls)] == recent_calls
    content = RecentScorer(lambda reg, d, hl, w: 0.5, by_weight)
    choice, tuning = tune_hybrid(grid, content, "collab")
    assert choice.weight == 0.0 and choice.recent_weight == 0.3 and tuning.fresh is None and tuning.last is tuning.recent
    flat = RecentScorer(lambda reg, d, hl, w: 0.5, dict.fromkeys(by_weight, 0.5))
    assert tune_hybrid(grid, flat, "collab")[0].recent_weight == 0.0  # a prior that helps nothing: none
    assert tune_hybrid(_grid(recent_weight=[0.0]), content, "collab")[1].recent is None  # nothing to try
    assert tune_hybrid(grid, Scorer(lambda reg, d, hl, w: 0.5), "collab")[1].recent is None  # a scorer without it
    assert tuning.recent.report()["rule"]["wins"] and tuning.recent.report()["rule"]["best"] == 0.3


def test_a_recent_prior_better_only_within_the_paired_noise_is_not_published():
    """The best weight's mean is higher, but its per-user gains and losses cancel to less than
    one standard error of the paired differences: no prior; the search records both."""
    rng = np.random.default_rng(0)
    base = rng.random(USERS)
    noisy = base + rng.choice([-0.2, 0.2], USERS) + 0.004

    class Noisy(RecentScorer):
        def published(self, choice, fresh):
            return [noisy if choice.recent_weight else base for _ in fresh]

    choice, tuning = tune_hybrid(_grid(recent_weight=[0.0, 0.1]), Noisy(lambda reg, d, hl, w: 0.5, {}), "collab")
    rule = tuning.recent.rule
    assert noisy.mean() > base.mean() and rule["best"] == 0.1 and not rule["wins"] and 0 < rule["diff"] < rule["se"]
    assert choice.recent_weight == 0.0 and tuning.recent.chosen == {"recent_weight": 0.0}
    assert choice.score == pytest.approx(base.mean())


class ProfileScorer(RecentScorer):
    """A scorer with the histories' times: published means by the content profile's half-life
    (days), plus the recent prior's by its weight."""

    profile_times = True

    def __init__(self, hybrid, by_days, by_weight=None, **kw):
        super().__init__(hybrid, by_weight or {0.0: 0.0}, **kw)
        self.by_days = by_days

    def published(self, choice, fresh):
        self.calls.append(("published", choice, list(fresh)))
        return [_hits(self.by_days[choice.profile_half_life_days] + self.by_weight.get(choice.recent_weight, 0.0))
                for _ in fresh]


def test_content_alone_serves_the_profile_recency_that_beats_the_mean_and_its_prior_is_chosen_with_it():
    """Content alone: the best half-life (1 and 7 days tie: the first) beats the mean by far, so
    it is published, and the recent prior's search after it scores with it; a half-life within
    the noise of the mean, a hybrid (its recency is the query's), a scorer without times or a
    grid without half-lives keep the mean."""
    by_days = {0.0: 0.5, 1.0: 0.6, 7.0: 0.6, 30.0: 0.55}
    content = ProfileScorer(lambda reg, d, hl, w: 0.5, by_days, {0.0: 0.0, 0.1: 0.1})
    choice, tuning = tune_hybrid(_grid(recent_weight=[0.0, 0.1]), content, "collab")
    assert choice.weight == 0.0 and choice.profile_half_life_days == 1.0 and choice.recent_weight == 0.1
    assert tuning.profile.chosen == {"profile_half_life_days": 1.0} and tuning.profile.rule["wins"]
    assert choice.score == pytest.approx(0.7) and tuning.last is tuning.recent
    calls = content.named("published")
    assert [c[1].profile_half_life_days for c in calls[:4]] == [0.0, 1.0, 7.0, 30.0]  # the profile's stage first
    assert all(c[1].profile_half_life_days == 1.0 for c in calls[4:]) and {c[1].recent_weight for c in calls[4:]} == {0.0, 0.1}
    rng = np.random.default_rng(0)
    base = rng.random(USERS)
    noisy = base + rng.choice([-0.2, 0.2], USERS) + 0.004  # higher, within the paired noise

    class Noisy(ProfileScorer):
        def published(self, choice, fresh):
            return [noisy if choice.profile_half_life_days == 7.0 else base for _ in fresh]

    choice, tuning = tune_hybrid(_grid(), Noisy(lambda reg, d, hl, w: 0.5, by_days), "collab")
    assert choice.profile_half_life_days == 0.0 and tuning.profile.rule["best"] == 7.0 and not tuning.profile.rule["wins"]
    hybrid = ProfileScorer(lambda reg, d, hl, w: 0.6 if w == 1.0 else 0.3, by_days, ranks={4: 0.595, 8: 0.6},
                           projected={4: 0.59})
    choice, tuning = tune_hybrid(_grid(), hybrid, "collab")
    assert choice.weight == 1.0 and choice.profile_half_life_days == 0.0 and tuning.profile is None
    assert all(c[1].profile_half_life_days == 0.0 for c in hybrid.named("published"))
    assert tune_hybrid(_grid(profile_half_life_days=[]), content, "collab")[1].profile is None
    assert tune_hybrid(_grid(), Scorer(lambda reg, d, hl, w: 0.5), "collab")[1].profile is None  # no times


class DecayScorer(Scorer):
    """A scorer whose fits can decay interactions by age: ``by_decay(days, weight)`` is added
    to the grid's table (0 days: nothing added)."""

    fit_times = True

    def __init__(self, hybrid, by_decay, **kw):
        super().__init__(hybrid, **kw)
        self.by_decay = by_decay

    def hybrid(self, reg, dropout, half_life, weights, train_half_life_days=0.0):
        self.calls.append(("hybrid", (reg, dropout, half_life, train_half_life_days), list(weights)))
        extra = self.by_decay if train_half_life_days else (lambda d, w: 0.0)
        return [_hits(self.tables["hybrid"](reg, dropout, half_life, w) + extra(train_half_life_days, w))
                for w in weights]

    def full_rank(self, reg, dropout, train_half_life_days=0.0):
        self.calls.append(("full_rank", (reg, dropout, train_half_life_days)))
        return self.full


def test_a_fit_decayed_by_age_is_judged_on_the_validation_users_each_half_life_at_its_best_weight():
    """After the grid, the chosen model is fitted with each half-life of decay and none, every
    weight but 0, once each (at the grid's reg, dropout and half-life); the best half-life is
    kept only where it beats none at its best weight by more than one standard error, with the
    simplest weight within one standard error of that half-life's best (from the same scores,
    not scored again), and every later stage (width, freshness) is the decayed model's."""
    means = {0.0: 0.30, 1.0: 0.60, 3.0: 0.55}
    base = lambda reg, d, hl, w: means[w] - (0.1 if reg != 10.0 or hl else 0.0)  # noqa: E731
    kw = dict(ranks={4: 0.3, 8: 0.3}, projected={4: 0.3, 16: 0.3}, published=lambda fw, slots: 0.58)
    grid = _grid(weight=[0.0, 1.0, 3.0], train_half_life_days=[30.0, 90.0])
    by_decay = lambda days, w: (0.1 if w == 3.0 else -0.1) if days == 30.0 else -0.2  # noqa: E731
    scorer = DecayScorer(base, by_decay, **kw)
    choice, tuning = tune_hybrid(grid, scorer, "collab")
    assert (choice.train_half_life_days, choice.weight, choice.rank) == (30.0, 3.0, 16)
    assert tuning.decay.chosen == {"train_half_life_days": 30.0} and tuning.decay.rule["wins"]
    judged = sorted(c[1] for c in scorer.named("hybrid") if c[2] == [1.0, 3.0])
    assert judged == [(10.0, 0.0, 0.0, d) for d in (0.0, 30.0, 90.0)]  # one fit each, every weight but 0
    assert ("full_rank", (10.0, 0.0, 30.0)) in scorer.calls
    assert all(c[1].train_half_life_days == 30.0 for c in scorer.named("at_rank") + scorer.named("published"))
    # each half-life at its own best weight: no decay's small weight within the (unpaired) noise of
    # the best point does not hide a decay that wins, paired, at a larger one
    ahead = {(0.0, 0.0): 0.3, (0.0, 1.0): 0.48, (0.0, 3.0): 0.47, (30.0, 1.0): 0.40, (30.0, 3.0): 0.50,
             (90.0, 1.0): 0.4, (90.0, 3.0): 0.4}
    scorer = DecayScorer(lambda reg, d, hl, w: ahead[0.0, w], lambda days, w: ahead[days, w] - ahead[0.0, w], **kw)
    choice, tuning = tune_hybrid(grid, scorer, "collab")
    assert choice.train_half_life_days == 30.0 and tuning.decay.rule["best"] == {"train_half_life_days": 30.0,
                                                                                  "weight": 3.0}
    # higher, but within its paired noise: no decay, and the search says why
    noisy = _hits(0.6) + np.where(np.arange(USERS) % 2, 0.2, -0.2) + 0.004  # +0.004, its standard error 0.01

    class Noisy(DecayScorer):
        def hybrid(self, reg, dropout, half_life, weights, train_half_life_days=0.0):
            out = super().hybrid(reg, dropout, half_life, weights, train_half_life_days)
            return [noisy if train_half_life_days else s for s in out]

    scorer = Noisy(base, lambda d, w: 0.0, **kw)
    choice, tuning = tune_hybrid(grid, scorer, "collab")
    assert (choice.train_half_life_days, choice.weight) == (0.0, 1.0) and not tuning.decay.rule["wins"]
    assert tuning.decay.chosen == {"train_half_life_days": 0.0} and tuning.decay.rule["best"]["train_half_life_days"]
    # content alone, no half-life, or no times to decay by: no decay stage
    assert tune_hybrid(grid, DecayScorer(lambda reg, d, hl, w: 0.5, lambda days, w: 0.3), "collab")[1].decay is None
    assert tune_hybrid(_grid(weight=[0.0, 1.0, 3.0], train_half_life_days=[]), scorer, "collab")[1].decay is None
    untimed = DecayScorer(base, lambda days, w: 0.3, **kw)
    untimed.fit_times = False
    assert tune_hybrid(grid, untimed, "collab")[1].decay is None
