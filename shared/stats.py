"""Tests and intervals over users, numpy and ``math`` only (both tiers may call them: the online
report, and the job's promotion gate, which may not import the online tier).

The user is the unit throughout: one user's lists correlate, so every interval resamples
users and every test compares per-user figures. A rate over lists (clicks per impression) is
a ratio of per-user sums, ``sum(num) / sum(den)``; its spread is taken over users too.

- ``bootstrap_ratios``: percentile bootstrap over users of one or more ratios of sums, the
  resamples drawn once for all of them (seeded, vectorised).
- ``delta_interval``: the normal interval of a ratio of sums by the delta method over users
  (the bootstrap's large-sample limit, for many small groups such as days).
- ``two_sample_test``: two groups holding different users (A/B arms): the difference of two
  ratios, its standard error by the delta method per group, and a two-sided p-value: Welch's
  normal z on users' linearised contributions where both groups hold ``PERMUTE_BELOW`` users
  or more, else a permutation test over users (the normal p of 2 users an arm could read
  0.003 where no split of 4 users can be rarer than 1 in 3).
- ``paired_test``: the same users under two systems (interleaving credits, the gate).
- ``sign_test``: how many users preferred each side (exact binomial up to 2000 users)."""

from __future__ import annotations

import math

import numpy as np

from groundrec.shared.errors import UserError

_CELLS = 4_000_000  # resample x user cells drawn at a time (bounded memory)
_CACHE = 1 << 17  # resample x user cells counted at a time


def bootstrap_ratios(num: np.ndarray, den: np.ndarray, n_boot: int = 1000, seed: int = 0,
                     alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ratio, low, high) per column of ``num`` / ``den`` (users x k, or one column): each
    resample draws the users with replacement and sums both. A resample with no denominator
    gives no ratio (dropped). One user has no interval (NaN): every resample is that user, a
    width of zero that says nothing (as the delta method gives none)."""
    num2, den2 = np.atleast_2d(np.asarray(num, np.float64).T).T, np.atleast_2d(np.asarray(den, np.float64).T).T
    n = len(num2)
    if n == 0:
        raise UserError("no users to bootstrap over")
    with np.errstate(invalid="ignore", divide="ignore"):
        point = num2.sum(0) / den2.sum(0)
    both_t = np.ascontiguousarray(np.hstack([num2, den2]).T)
    rng = np.random.default_rng(seed)
    sums = np.empty((n_boot, both_t.shape[0]))
    step, block = max(1, _CELLS // n), max(1, _CACHE // n)
    for start in range(0, n_boot, step):
        b = min(step, n_boot - start)
        draws = rng.integers(0, n, (b, n))
        for i in range(0, b, block):  # counted a few resamples at a time: the counts stay in cache
            rows = draws[i:i + block]
            m = len(rows)
            times = np.bincount((rows + (np.arange(m) * n)[:, None]).ravel() if m > 1 else rows[0],
                                minlength=m * n).reshape(m, n)  # how often each user was drawn
            sums[start + i:start + i + m] = (both_t @ times.T).T
    k = num2.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = sums[:, :k] / sums[:, k:]
    lo, hi = np.full(k, np.nan), np.full(k, np.nan)
    if n < 2:
        return point, lo, hi
    for j in range(k):
        ok = ratios[np.isfinite(ratios[:, j]), j]
        if len(ok):
            lo[j], hi[j] = np.quantile(ok, [alpha / 2, 1 - alpha / 2])
    return point, lo, hi


def _ratio_var(num: np.ndarray, den: np.ndarray) -> tuple[float, float]:
    """(ratio, variance of the ratio) by the delta method with users as independent clusters."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    total = den.sum()
    if total <= 0:
        return math.nan, math.nan
    r = num.sum() / total
    n = len(num)
    if n < 2:  # one user: no spread to estimate (a rounding residue must not make it infinite)
        return float(r), math.nan
    resid = num - r * den
    var = float((resid ** 2).sum()) / total ** 2 * n / (n - 1)
    return float(r), var


def delta_interval(num: np.ndarray, den: np.ndarray, alpha: float = 0.05) -> tuple[float, float, float]:
    """(ratio, low, high): the normal interval of ``sum(num) / sum(den)`` over users."""
    r, var = _ratio_var(num, den)
    half = _z(alpha) * math.sqrt(var) if var == var else math.nan
    return r, r - half, r + half


PERMUTE_BELOW = 500  # users in the smaller group under which ``two_sample_test`` permutes instead of z


def two_sample_test(num_a: np.ndarray, den_a: np.ndarray, num_b: np.ndarray, den_b: np.ndarray,
                    n_perm: int = 10_000, seed: int = 0) -> dict:
    """Whether two groups of different users have the same ratio: ``diff`` = ratio b - ratio a,
    its standard error, z, the two-sided p-value and ``test``, how p was found: ``normal``
    (both groups ``PERMUTE_BELOW`` users or more) or ``permutation`` (``n_perm`` random splits
    of the pooled users into groups of the same sizes, seeded; p = (splits at least as far
    apart + 1) / (n_perm + 1))."""
    ra, va = _ratio_var(num_a, den_a)
    rb, vb = _ratio_var(num_b, den_b)
    se = math.sqrt(va + vb) if va == va and vb == vb else math.nan
    z = (rb - ra) / se if se > 0 else math.nan
    if min(len(num_a), len(num_b)) < PERMUTE_BELOW:  # a spread of 0 within each arm is testable too
        p = (_permutation_p(np.concatenate([num_a, num_b]), np.concatenate([den_a, den_b]), len(num_a),
                            abs(rb - ra), n_perm, seed) if len(num_a) and len(num_b) and rb == rb and ra == ra
             else math.nan)
        return {"diff": rb - ra, "se": se, "z": z, "p": p, "test": "permutation"}
    p = math.erfc(abs(z) / math.sqrt(2)) if se > 0 else math.nan  # no spread: nothing to test
    return {"diff": rb - ra, "se": se, "z": z, "p": p, "test": "normal"}


def _permutation_p(num: np.ndarray, den: np.ndarray, n_a: int, observed: float, n_perm: int, seed: int) -> float:
    """The share of random splits of the users (``num``, ``den``: one entry each) into ``n_a``
    and the rest whose ratios of sums lie at least ``observed`` apart (+1 on both sides)."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    n = len(num)
    side = min(n_a, n - n_a)  # the smaller side is drawn, the other is the rest
    total_num, total_den = num.sum(), den.sum()
    rng = np.random.default_rng(seed)
    extreme, step = 0, max(1, _CELLS // side)
    for start in range(0, n_perm, step):  # each split drawn alone: O(side), however many users the other holds
        drawn = np.stack([rng.choice(n, side, replace=False) for _ in range(min(step, n_perm - start))])
        s_num, s_den = num[drawn].sum(axis=1), den[drawn].sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            apart = np.abs(s_num / s_den - (total_num - s_num) / (total_den - s_den))
        extreme += int((apart >= observed * (1 - 1e-12)).sum())  # NaN (a side with no lists) is not as far apart
    return (extreme + 1) / (n_perm + 1)


def paired_test(a: np.ndarray, b: np.ndarray, n_perm: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value that ``a`` and ``b`` (one figure per user, the same users in the same
    order) have the same mean: a sign-flip randomisation test on the per-user differences.
    Up to 5000 users the flips are drawn (``n_perm`` of them, seeded; the smallest p is
    1 / (n_perm + 1)); above, the flips' distribution is replaced by the normal one with its
    exact mean 0 and variance sum(d^2) (z = sum(d) / sqrt(sum(d^2)))."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if len(d) == 0:
        raise UserError("no users to compare on")
    observed = abs(d.sum())
    if observed == 0:
        return 1.0
    if len(d) > 5000:
        return math.erfc(observed / math.sqrt(float((d ** 2).sum())) / math.sqrt(2))
    rng = np.random.default_rng(seed)
    extreme, step = 0, max(1, _CELLS // len(d))
    for start in range(0, n_perm, step):
        signs = rng.choice(np.array([-1.0, 1.0]), (min(step, n_perm - start), len(d)))
        extreme += int((np.abs(signs @ d) >= observed * (1 - 1e-12)).sum())
    return (extreme + 1) / (n_perm + 1)


def sign_test(wins_a: int, wins_b: int) -> float:
    """Two-sided p-value that a user with a preference is as likely to prefer a as b: exact
    binomial (``math.comb``) up to 2000 such users, the normal approximation with continuity
    correction above."""
    n, low = wins_a + wins_b, min(wins_a, wins_b)
    if n == 0:
        return 1.0
    if n <= 2000:
        tail = sum(math.comb(n, i) for i in range(low + 1)) / 2 ** n
        return min(1.0, 2 * tail)
    z = (abs(wins_a - wins_b) - 1) / math.sqrt(n)
    return min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2)))


def holm_adjusted(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down): a test of the family is significant at
    family-wise ``alpha`` exactly when its adjusted p is at most ``alpha``. A NaN (no test)
    stays NaN and is no member of the family."""
    order = sorted((i for i, p in enumerate(pvalues) if not math.isnan(p)), key=lambda i: pvalues[i])
    out, running = [math.nan] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * pvalues[i]))
        out[i] = running
    return out


def _z(alpha: float) -> float:
    """The normal quantile 1 - alpha/2, by bisection on erfc (no scipy)."""
    lo, hi = 0.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if math.erfc(mid / math.sqrt(2)) > alpha else (lo, mid)
    return (lo + hi) / 2
