"""Uncertainty: bootstrap confidence intervals over users and a paired randomisation test."""

from __future__ import annotations

import numpy as np


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap over users of the mean of ``values``."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        raise ValueError("no users to bootstrap over")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, 200):  # bounded memory: 200 resamples at a time
        stop = min(n_boot, start + 200)
        means[start:stop] = values[rng.integers(0, len(values), (stop - start, len(values)))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(values.mean()), float(lo), float(hi)


def paired_test(a: np.ndarray, b: np.ndarray, n_perm: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value that systems a and b have the same mean on the same users: a
    sign-flip randomisation test on the per-user differences (exact under the null that
    a and b are exchangeable for each user)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(d) == 0:
        raise ValueError("no users to compare on")
    observed = abs(d.mean())
    if observed == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    extreme = 0
    for start in range(0, n_perm, 1000):
        m = min(1000, n_perm - start)
        signs = rng.integers(0, 2, (m, len(d))) * 2 - 1
        extreme += int((np.abs((signs * d).mean(axis=1)) >= observed - 1e-12).sum())
    return (extreme + 1) / (n_perm + 1)


def holm(pvalues: dict[tuple[str, str], float], alpha: float) -> dict[tuple[str, str], bool]:
    """Holm-Bonferroni: which of the pairwise differences are significant at family-wise ``alpha``."""
    ordered = sorted(pvalues.items(), key=lambda kv: kv[1])
    significant, m, still = {}, len(ordered), True
    for rank, (pair, p) in enumerate(ordered):
        still = still and p <= alpha / (m - rank)
        significant[pair] = still
    return significant
