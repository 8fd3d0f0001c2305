"""Uncertainty: bootstrap confidence intervals over users and a paired randomisation test."""

from __future__ import annotations

import numpy as np

from groundrec.shared.errors import UserError
from groundrec.shared.stats import holm_adjusted


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap over users of the mean of ``values``. One user
    has no interval (NaN, as ``shared.stats.bootstrap_ratios``): every resample is that user."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        raise UserError("no users to bootstrap over")
    if len(values) == 1:
        return float(values[0]), float("nan"), float("nan")
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
        raise UserError("no users to compare on")
    observed = abs(d.mean())
    if observed == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    extreme = 0
    step = max(1, min(1000, 4_000_000 // len(d)))  # flips x users a pass: bounded memory (100k users: 40 a pass)
    for start in range(0, n_perm, step):
        m = min(step, n_perm - start)
        signs = rng.integers(0, 2, (m, len(d))) * 2 - 1
        extreme += int((np.abs((signs * d).mean(axis=1)) >= observed - 1e-12).sum())
    return (extreme + 1) / (n_perm + 1)


def holm(pvalues: dict[tuple[str, str], float], alpha: float) -> dict[tuple[str, str], bool]:
    """Holm-Bonferroni: which of the pairwise differences are significant at family-wise ``alpha``."""
    return {pair: p <= alpha for pair, p in zip(pvalues, holm_adjusted(list(pvalues.values())))}


def summarise(rows, cfg) -> dict:
    """CIs per row and metric; paired tests between every pair of rows, Holm-corrected; the best row."""
    primary = cfg.primary_metric
    for row in rows:
        row.ci = {m: bootstrap_ci(v, cfg.bootstrap, cfg.alpha, cfg.seed) for m, v in row.per_user.items()}
    labels = [f"{r.system} / {r.representation}" for r in rows]
    n_pairs = len(rows) * (len(rows) - 1) // 2
    # The smallest p-value a randomisation test can give is 1/(flips+1); Holm's strictest
    # threshold is alpha/pairs. Enough flips that a real difference can pass it.
    permutations = max(cfg.permutations, int(np.ceil(2 * n_pairs / cfg.alpha)))
    pvalues = {(labels[i], labels[j]): paired_test(rows[i].per_user[primary], rows[j].per_user[primary],
                                                   permutations, cfg.seed)
               for i in range(len(rows)) for j in range(i + 1, len(rows))}
    significant = holm(pvalues, cfg.alpha)
    adjusted = dict(zip(pvalues, holm_adjusted(list(pvalues.values()))))  # what "Holm" tests: shown beside the raw p
    best = max(range(len(rows)), key=lambda i: rows[i].ci[primary][0])
    vs_best = {}
    for i, label in enumerate(labels):
        if i == best:
            continue
        pair = (labels[min(i, best)], labels[max(i, best)])
        vs_best[label] = {"p": pvalues[pair], "p_holm": adjusted[pair], "significant": significant[pair]}
    return {
        "permutations": permutations,
        "rows": [{"label": lab, "system": r.system, "representation": r.representation, "params": r.params,
                  "note": r.note, "valid_" + primary: r.valid_primary,
                  "metrics": {m: {"mean": c[0], "ci_low": c[1], "ci_high": c[2]} for m, c in r.ci.items()},
                  "lists": r.lists, "vs_best": vs_best.get(lab), "warnings": r.warnings, "widened": r.widened,
                  "width": getattr(r, "width", []), "width_folds": getattr(r, "width_folds", []),
                  "slices": {name: {"users": len(v), **({"mean": c[0], "ci_low": c[1], "ci_high": c[2]} if len(v) else {})}
                             for name, v in r.slices.items()
                             for c in [bootstrap_ci(v, cfg.bootstrap, cfg.alpha, cfg.seed) if len(v) else None]}}
                 for lab, r in zip(labels, rows)],
        "best": labels[best],
        "pairwise": [{"a": a, "b": b, "p": p, "p_holm": adjusted[(a, b)], "significant": significant[(a, b)]}
                     for (a, b), p in pvalues.items()],
    }
