"""Model selection on validation users: one procedure for the job's learn stage and for
``groundrec eval``. A grid is a dict of axes (name -> values); every point is scored per
validation user; the rule picks a point (the best mean, or the one-standard-error rule
towards the simplest value of one axis); a numeric value chosen on the edge of its axis is
widened one step beyond it and the new points scored, a bounded number of times, and every
widening is recorded. Decisions are pure functions of the scores."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np


def _numeric(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def edges(axes: dict[str, list], chosen: dict, limits: dict[str, tuple[float, float]]) -> list[tuple[str, bool, object]]:
    """The chosen values on the edge of their axis that a step beyond could improve on: (axis,
    upwards, the next value). A value on an edge with nothing beyond it (0, a limit) is not
    one."""
    out = []
    for name, value in chosen.items():
        values = axes[name]
        if len(values) < 2 or not _numeric(value) or value not in (values[0], values[-1]):
            continue
        upwards = value == values[-1]
        new = step_beyond(values, upwards, limits.get(name))
        if new is not None and new not in values:
            out.append((name, upwards, new))
    return out


def mean_and_se(values) -> tuple[float, float]:
    """The mean of per-user values and its standard error over users (0 for fewer than two):
    what every one-standard-error rule of the project compares."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return 0.0, 0.0
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def one_standard_error(per_user: dict, simplest_first: list, reference: np.ndarray | None = None) -> object:
    """The one-standard-error rule: the first key of ``simplest_first`` whose mean per-user
    score is within one standard error (over users) of the best key's mean. On a few hundred
    validation users many settings differ by noise; this prefers the simpler one (for a
    hybrid: a smaller collaborative weight, down to content alone) unless the better score
    stands out of that noise. ``reference``: the per-user scores of the best point an earlier
    stage of the search scored, when better than any here (the threshold stays that of the
    best point seen, or each stage would lower it: ``coarse_to_fine``)."""
    best = max(per_user, key=lambda key: (per_user[key].mean(), -simplest_first.index(key)))
    top = per_user[best] if reference is None or reference.mean() <= per_user[best].mean() else reference
    mean, se = mean_and_se(top)
    return next(key for key in simplest_first if per_user[key].mean() >= mean - se)


def step_beyond(values: list, upwards: bool, limits: tuple[float, float] | None = None):
    """The next value beyond the edge of a sorted numeric axis, or None: geometric for
    floats (the ratio of the two outermost positive values, x10 when there is none), one
    step of the outermost difference for integers; never 0 or less, never outside
    ``limits`` (exclusive)."""
    if len(values) < 2 or not all(_numeric(v) for v in values):
        return None
    outer, inner = (values[-1], values[-2]) if upwards else (values[0], values[1])
    if all(isinstance(v, (int, np.integer)) for v in values):
        new = outer + (outer - inner)
    elif outer <= 0:
        return None
    else:
        ratio = outer / inner if inner > 0 else (10.0 if upwards else 0.1)
        new = float(f"{outer * ratio:.6g}")  # 0.01, not 0.010000000000000002
    if new <= 0 or (limits is not None and not limits[0] < new < limits[1]):
        return None
    return new


def _merged(*values: list) -> list:
    both = list(dict.fromkeys(v for vs in values for v in vs))
    return sorted(both, key=float) if all(_numeric(v) for v in both) else both


@dataclass
class Search:
    chosen: dict  # the chosen point
    score: float  # its mean validation score
    scores: dict[tuple, np.ndarray]  # every point scored (its values in axis order) -> per-user scores
    axes: dict[str, list]  # the grid as searched, widenings included
    widened: list[dict] = field(default_factory=list)  # {"axis", "value"}: each value added beyond an edge
    warnings: list[str] = field(default_factory=list)  # values still on a widenable edge when the budget ran out
    rule: dict | None = None  # a paired rule that decided after the search (``tuning.tune_recent``)

    def report(self) -> dict:
        return {"chosen": self.chosen, "score": self.score, "grid": self.axes, "widened": self.widened,
                "warnings": self.warnings, **({"rule": self.rule} if self.rule is not None else {})}


def search(axes: dict[str, list], score: Callable[[list[dict]], list[np.ndarray]], *, simplest: str | None = None,
           widenings: int = 0, limits: dict[str, tuple[float, float]] | None = None,
           relevant: Callable[[dict], dict] | None = None, section: str = "tuning",
           simplest_is_largest: bool = False, reference: np.ndarray | None = None) -> Search:
    """Score every point of ``axes`` (``score`` gets a batch of points and returns each one's
    per-user validation scores), choose, then widen and rescore while a chosen numeric value
    sits on the edge of its axis, at most ``widenings`` times.

    The rule: with ``simplest``, the point with the smallest ``simplest`` value whose mean is
    within one standard error of the best (ties: the better mean, then grid order); without,
    the best mean (ties: the first in grid order). ``simplest_is_largest``: the rule prefers the
    largest ``simplest`` value instead (the most of something that costs nothing measurable,
    e.g. the lift of new items). ``relevant(chosen)`` names the values that
    matter (e.g. a hybrid's regularisation does not when its weight is 0): only those are
    widened or warned about. ``limits``: open bounds per axis (e.g. a share in (0, 1)).
    ``reference``: an earlier stage's best per-user scores (``one_standard_error``)."""
    axes = {name: sorted(set(values), key=float) if all(_numeric(v) for v in values) else list(values)
            for name, values in axes.items()}
    names, limits, scores, widened = list(axes), limits or {}, {}, []
    relevant = relevant or (lambda point: point)
    for round_ in range(widenings + 1):
        todo = [p for p in itertools.product(*axes.values()) if p not in scores]
        if todo:
            scores.update(zip(todo, score([dict(zip(names, p)) for p in todo])))
        order = list(itertools.product(*axes.values()))
        position = {p: i for i, p in enumerate(order)}
        if simplest is None:
            key = max(order, key=lambda p: (scores[p].mean(), -position[p]))
        else:
            at = names.index(simplest)
            key = one_standard_error({p: scores[p] for p in order},
                                     sorted(order, key=lambda p: (-p[at] if simplest_is_largest else p[at],
                                                                  -scores[p].mean(), position[p])), reference)
        chosen = dict(zip(names, key))
        beyond = edges(axes, relevant(chosen), limits)
        if not beyond or round_ == widenings:
            break
        for name, _, new in beyond:
            axes[name] = sorted([*axes[name], new])
            widened.append({"axis": name, "value": new})
    return Search(chosen, float(scores[key].mean()), scores, axes, widened, _warnings(beyond, chosen, section))


def _warnings(beyond: list[tuple[str, bool, object]], chosen: dict, section: str) -> list[str]:
    return [f"{name}={chosen[name]} is the {'largest' if up else 'smallest'} value tried: widen the grid "
            f"({section}) {'upwards' if up else 'downwards'}" for name, up, _ in beyond]


def midpoints(values: list, value) -> list:
    """The values halfway between ``value`` and its neighbours on a sorted numeric axis:
    geometric between positive values, arithmetic next to 0 (10 between 0 and 20)."""
    at = values.index(value)
    out = []
    for other in values[max(at - 1, 0):at] + values[at + 1:at + 2]:
        low, high = sorted((value, other))
        mid = float(np.sqrt(low * high)) if low > 0 else (low + high) / 2
        out.append(float(f"{mid:.3g}"))  # 316, not 316.22776601683796
    return [m for m in out if m not in values]


def coarse_to_fine(axes: dict[str, list], score: Callable[[list[dict]], list[np.ndarray]], *, later: str, at: str,
                   refine: tuple[str, ...] = (), **rules) -> Search:
    """``search`` in stages, for an axis that multiplies the cost of another and for grids
    too coarse to land near the best value:

    1. every axis but ``later``, which stays at its smallest value;
    2. ``later``'s whole grid with ``at`` fixed at the value stage 1 chose, every other axis
       searched again from its values as widened so far (each stage has the widening
       budget): with ``later`` of n values and ``at`` of m, m + n - 1 values of the pair are
       scored instead of m x n;
    3. for each axis of ``refine`` in turn (when ``relevant`` to the choice), the ``midpoints``
       between the chosen value and its neighbours, every other axis fixed at its choice
       except the rule's ``simplest``.

    A point is scored once across the stages, and the result is the last stage's choice
    with every score, value and widening; warnings are those of the final choice on the
    grid as searched."""
    known: dict[tuple, np.ndarray] = {}
    names = list(axes)
    relevant, limits = rules.get("relevant") or (lambda point: point), rules.get("limits") or {}

    def cached(points: list[dict]) -> list[np.ndarray]:
        keys = [tuple(p[n] for n in names) for p in points]
        todo = [p for p, key in zip(points, keys) if key not in known]
        known.update(zip((tuple(p[n] for n in names) for p in todo), score(todo) if todo else []))
        return [known[key] for key in keys]

    found = [search({**axes, later: _merged(axes[later])[:1]}, cached, **rules)]
    tried = lambda: {n: _merged(*(f.axes[n] for f in found)) for n in names}  # noqa: E731  (widenings included)
    # The rule's threshold is the best point's of every stage so far: a later stage's grid may
    # lack it (it holds the earlier choice, a simpler point within one standard error of it).
    best = lambda: max(known.values(), key=lambda u: u.mean())  # noqa: E731
    if len(set(axes[later])) > 1:
        found.append(search({**tried(), later: list(axes[later]), at: [found[-1].chosen[at]]}, cached,
                            **rules, reference=best()))
    for axis in refine:
        chosen = found[-1].chosen
        if axis not in relevant(chosen):  # e.g. a hybrid's reg when its weight is 0
            continue
        grid = {n: [chosen[n]] for n in names}
        grid[axis] = sorted([chosen[axis], *midpoints(tried()[axis], chosen[axis])], key=float)
        if rules.get("simplest"):
            grid[rules["simplest"]] = tried()[rules["simplest"]]
        found.append(search(grid, cached, **{**rules, "widenings": 0}, reference=best()))
    merged = tried()
    last = found[-1]
    warnings = _warnings(edges(merged, relevant(last.chosen), limits), last.chosen, rules.get("section", "tuning"))
    return Search(last.chosen, last.score, {k: v for f in found for k, v in f.scores.items()}, merged,
                  [w for f in found for w in f.widened], warnings)


def beats_by_one_standard_error(candidate, incumbent) -> dict:
    """The paired rule for replacing a published model by another: on the same validation
    users (per-user scores, aligned), the candidate wins only when the mean of its per-user
    differences from the incumbent is above one standard error of those differences. A gain
    inside the noise of the validation users keeps the incumbent (the simpler, known model), and
    so does a single user (a standard error needs two). Returns both means, the mean difference, its standard error, the users and ``wins``."""
    candidate, incumbent = np.asarray(candidate, np.float64), np.asarray(incumbent, np.float64)
    if candidate.shape != incumbent.shape:
        raise ValueError(f"paired scores need the same users: {candidate.shape} vs {incumbent.shape}")
    n = len(candidate)
    mean, se = mean_and_se(candidate - incumbent)
    return {"candidate": float(candidate.mean()) if n else 0.0, "incumbent": float(incumbent.mean()) if n else 0.0,
            "diff": mean, "se": se, "users": n, "wins": bool(n > 1 and mean > se)}  # one user: no error to beat


def kept_if_it_beats_none(found: Search, axis: str) -> tuple[float, Search]:
    """The best value of a one-axis search, kept only where it beats 0 (none) by more than one
    standard error of the paired per-user differences (``beats_by_one_standard_error``,
    the learned encoder's rule, here for the best of several values: a looser bar); the search
    with what is published as ``chosen`` and the paired comparison as ``rule``."""
    best = float(found.chosen[axis])
    rule = beats_by_one_standard_error(found.scores[(best,)], found.scores[(0.0,)])
    value = best if best and rule["wins"] else 0.0
    return value, replace(found, chosen={axis: value}, score=float(found.scores[(value,)].mean()),
                          rule={"best": best, **rule}, warnings=found.warnings if value else [])  # none: no edge
