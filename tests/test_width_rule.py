"""The hybrid's width rule (offline/width_rule.py): which narrower rank and projection pass,
on all validation users and on the cold and warm slices, and whether a choice made on one half
of the users holds on the other."""

import numpy as np
import pytest

from groundrec.offline.width_rule import (Width, fold_halves, folds, narrowest, pick, smaller_ranks, user_slices,
                                          within)

USERS = 400


def _hits(mean: float) -> np.ndarray:
    """USERS per-user hits whose mean is ``mean``."""
    out = np.zeros(USERS)
    out[:round(mean * USERS)] = 1.0
    return out


def _chosen(width: Width) -> tuple:
    return width.rank, width.projected, width.score


def test_narrowest_takes_the_narrowest_rank_then_the_projection_within_tolerance():
    """The width rule on means (confidence 0): every narrower rank is scored, widest first, and
    the narrowest within the tolerance of the full rank's score wins; then the projection at
    that rank, if within it too; the score returned is the chosen setting's."""
    asked: list[int] = []

    def at(scores):
        return lambda r: asked.append(r) or _hits(scores[r])

    full = _hits(0.5)
    assert _chosen(narrowest(64, full, 0.02, at({16: 0.495, 32: 0.6}), None)) == (16, False, 0.495)
    assert asked == [32, 16]  # the widest first: an exact model's narrower widths from one SVD
    assert _chosen(narrowest(64, full, 0.02, at({16: 0.48, 32: 0.491}), lambda r: _hits(0.49))) == (32, True, 0.49)
    assert _chosen(narrowest(64, full, 0.02, at({16: 0.1, 32: 0.2}), lambda r: _hits(0.4875))) == (64, False, 0.5)
    assert _chosen(narrowest(64, full, 0.0, at({16: 0.1, 32: 0.2}), lambda r: _hits(0.5))) == (64, True, 0.5)
    assert _chosen(narrowest(1, _hits(0.3), 0.02, at({}), lambda r: _hits(0.0))) == (1, False, 0.3)  # nothing narrower
    top = narrowest(64, full, 0.02, at({16: 0.5, 32: 0.5}), lambda r: _hits(0.5), project_up_to=8)
    assert _chosen(top)[:2] == (16, False)
    width = narrowest(64, full, 0.02, at({16: 0.48, 32: 0.491}), lambda r: _hits(0.49)).tried
    assert [(w["rank"], w["projected"], w["within"]) for w in width] == [
        (64, False, True), (16, False, False), (32, False, True), (32, True, True)]


def test_the_ladder_of_narrower_ranks():
    assert smaller_ranks(128) == [32, 64] and smaller_ranks(3) == [1] and smaller_ranks(1) == []
    assert smaller_ranks(3658, 128) == [32, 64, 128, 256, 512]  # an exact model of 3,658 items
    assert smaller_ranks(300, 128) == [32, 64, 128, 256] and smaller_ranks(128, 128) == [32, 64]


def test_within_bounds_the_paired_loss_by_its_standard_error():
    rng = np.random.default_rng(0)
    full = (rng.random(2000) < 0.3).astype(float)
    narrow = full.copy()
    narrow[np.flatnonzero(full)[:6]] = 0  # 6 hits of 600 lost: 0.003, 1.0% of 0.3
    tight = within(full, narrow, 0.02, 1.0)
    assert tight["loss"] == pytest.approx(0.003) and tight["within"]  # se 0.0012: 0.0042 <= 0.006
    few = within(full[:200], narrow[:200], 0.02, 1.0)  # the same 6 losses among 200 users
    assert few["loss"] == pytest.approx(0.03) and not few["within"]
    churn = full[:400].copy()  # 20 users lose their hit and 20 others gain one: no loss on average, much noise
    lose, gain = np.flatnonzero(churn == 1)[:20], np.flatnonzero(churn == 0)[:20]
    churn[lose], churn[gain] = 0, 1
    assert within(full[:400], churn, 0.02, 0.0) == {"score": full[:400].mean(), "loss": 0.0,
                                                   "se": pytest.approx(np.sqrt(0.1 * 400 / 399 / 400)), "within": True}
    assert not within(full[:400], churn, 0.02, 1.0)["within"]




def test_a_width_that_clearly_costs_the_cold_slice_is_refused_though_the_average_hides_it():
    """4,000 users, 100 of them cold: the narrower width loses 12 of the cold users' 60 hits
    and nothing else. Over all users 0.003 (+ se 0.0009) is within 2% of 0.5; the cold slice's
    0.12 lies far beyond 2% of its 0.6 even less one standard error (0.032): refused."""
    full = np.zeros(4000)
    full[:2000] = 1.0  # warm users 0..3899 hold 1,940 hits, the cold ones (3900..) 60
    full[3900:3960] = 1.0
    full[1940:2000] = 0.0
    cold = np.zeros(4000, bool)
    cold[3900:] = True
    narrow = full.copy()
    narrow[3900:3912] = 0.0
    slices = {"cold": cold, "warm": ~cold}
    assert within(full, narrow, 0.02, 1.0)["within"]  # the average alone passes
    judged = within(full, narrow, 0.02, 1.0, slices)
    assert not judged["within"]
    assert judged["slices"]["cold"]["users"] == 100 and judged["slices"]["cold"]["loss"] == pytest.approx(0.12)
    assert not judged["slices"]["cold"]["within"] and judged["slices"]["warm"] == {
        "users": 3900, "score": pytest.approx(1940 / 3900), "loss": 0.0, "se": 0.0, "within": True}
    assert _chosen(narrowest(64, full, 0.02, lambda r: narrow, None, confidence=1.0, slices=slices)) == (64, False, 0.5)
    assert narrowest(64, full, 0.02, lambda r: narrow, None, confidence=1.0).rank == 16


def test_a_slice_too_small_to_show_a_loss_does_not_block():
    """10 cold users, one of their 5 hits lost: 0.1 with a standard error of 0.1 is not clearly
    beyond the tolerance; a slice of one user is left out of the judgement."""
    full = np.zeros(4000)
    full[:2000] = 1.0
    narrow = full.copy()
    narrow[0] = 0.0
    small = np.zeros(4000, bool)
    small[[0, 1, 2, 3, 4, 3000, 3001, 3002, 3003, 3004]] = True
    one = np.zeros(4000, bool)
    one[0] = True
    judged = within(full, narrow, 0.02, 1.0, {"cold": small, "alone": one})
    assert judged["within"] and set(judged["slices"]) == {"cold"}
    assert judged["slices"]["cold"]["loss"] == pytest.approx(0.1) and judged["slices"]["cold"]["se"] == pytest.approx(0.1)


def test_the_users_with_a_held_out_item_new_to_training_are_the_cold_slice():
    slices = user_slices([[1], [2, 3], {4}, np.array([5])], np.array([3, 5]))
    assert slices["cold"].tolist() == [False, True, False, True] and slices["warm"].tolist() == [True, False, True, False]


def test_a_choice_made_on_one_half_is_checked_on_the_other():
    """400 users, every one a hit at full rank 16; rank 4 loses 8 users, all in the second
    half: within 2% on all users (8 / 400), so published; chosen on the first half (no loss)
    it is rank 4 and loses 0.04 on the second (beyond 2%); chosen on the second, rank 8 (which
    loses nothing), and nothing lost on the first."""
    first, second = fold_halves(400)
    assert len(first) == len(second) == 200 and not set(first) & set(second)
    assert np.array_equal(fold_halves(400)[0], first)  # seeded: the same halves every run
    full, narrow = np.ones(400), np.ones(400)
    narrow[second[:8]] = 0.0
    width = narrowest(16, full, 0.02, lambda r: narrow if r == 4 else full, None)
    assert width.rank == 4 and width.folds == [
        {"rank": 4, "projected": False, "users": 200, "other_users": 200, "loss_on_other": pytest.approx(0.04),
         "holds": False},
        {"rank": 8, "projected": False, "users": 200, "other_users": 200, "loss_on_other": 0.0, "holds": True}]
    # the projection is judged where it was scored: at the rank chosen on every user
    rank, projected, judged = pick(16, full, {4: narrow, 8: full}, {4: full}, 0.02, 0.0, users=first)
    assert (rank, projected) == (4, True) and [(w["rank"], w["projected"]) for w in judged] == [
        (4, False), (8, False), (4, True)]
    assert folds(16, full[:3], {4: narrow[:3]}, {}, 0.02, 0.0) == []  # too few users to halve


def test_the_full_rank_projected_is_reported_at_its_projected_score():
    """No narrower rank passes and the full rank is published projected: the width's score and
    the folds' losses are the projection's (they were the unprojected model's: a loss of 0)."""
    rng = np.random.default_rng(0)
    full = rng.random(400)
    w = narrowest(128, full, 0.05, lambda r: full - 0.5, lambda r: full - 0.01, None, 0.0, 384)
    assert (w.rank, w.projected) == (128, True) and w.score == pytest.approx(full.mean() - 0.01)
    assert all(f["projected"] and f["loss_on_other"] == pytest.approx(0.01) for f in w.folds)
