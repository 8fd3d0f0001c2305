"""Tuning grids: what a choice on a grid's edge means. Used by the job's learn stage and by
``groundrec eval``'s tuned rows."""

from __future__ import annotations

import numpy as np


def edge_warnings(grid: list[dict], chosen: dict, section: str = "tuning") -> list[str]:
    """A tuned value on the edge of its grid: the best may lie beyond it. ``section``: the
    config section that holds the grid, named in the advice."""
    out = []
    for key, value in chosen.items():
        values = sorted({g[key] for g in grid if isinstance(g.get(key), (int, float)) and not isinstance(g.get(key), bool)})
        if len(values) < 2 or value not in values:
            continue
        if value == values[-1]:
            out.append(f"{key}={value} is the largest value tried: widen the grid ({section}) upwards")
        elif value == values[0] and value > 0:
            out.append(f"{key}={value} is the smallest value tried: widen the grid ({section}) downwards")
    return out


def one_standard_error(per_user: dict, simplest_first: list) -> object:
    """The one-standard-error rule: the first key of ``simplest_first`` whose mean per-user
    score is within one standard error (over users) of the best key's mean. On a few hundred
    validation users many settings differ by noise; this prefers the simpler one (for a
    hybrid: a smaller collaborative weight, down to content alone) unless the better score
    stands out of that noise."""
    best = max(per_user, key=lambda key: (per_user[key].mean(), -simplest_first.index(key)))
    scores = np.asarray(per_user[best], dtype=np.float64)
    se = scores.std(ddof=1) / np.sqrt(len(scores)) if len(scores) > 1 else 0.0
    return next(key for key in simplest_first if per_user[key].mean() >= scores.mean() - se)
