"""Tuning grids: what a choice on a grid's edge means. Used by the job's learn stage and by
``groundrec eval``'s tuned rows."""

from __future__ import annotations


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
