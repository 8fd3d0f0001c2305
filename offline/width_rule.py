"""The hybrid's width rule: how narrow a collaborative part (its rank, then a projection to
the content's width) is published, from per-user validation scores. Pure functions: the
tuner (``tuning.tune_hybrid``) scores the widths and this module decides, for the job and for
``groundrec eval`` alike.

A narrower width is taken when
- over every validation user, its paired loss against the full model plus ``confidence``
  standard errors is within ``tolerance`` of the full model's score (a loss inside the noise
  of few users is not taken for none), and
- on each slice of the users (``slices``: the users whose held-out items include a cold one,
  an item with no training interaction, which only content and the freshness prior can
  find, and the rest), its loss is not beyond the tolerance of that slice's score by more
  than ``confidence`` standard errors: a width that clearly costs one slice is refused even
  when the average hides it; a slice of a few dozen users, too noisy to show a loss, does
  not block.

What width costs is reported per width (the loss and its standard error, on all users and per
slice) and, for the choice, on data it was not made on (``folds``): the rule applied to one
seeded half of the users, its choice's loss measured on the other half, both ways round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from groundrec.offline.selection import mean_and_se

FOLD_SEED = 20261205  # the two halves of the validation users (fixed: the same halves every run)


def smaller_ranks(rank: int, unit: int | None = None) -> list[int]:
    """The narrower ranks tried below a model's own ``rank``, narrowest first: a quarter, a
    half, one, two and four times ``unit`` (the configured rank; by default ``rank`` itself,
    which leaves a quarter and a half of it)."""
    unit = rank if unit is None else unit
    return sorted({r for r in (unit // 4, unit // 2, unit, 2 * unit, 4 * unit) if 1 <= r < rank})


def user_slices(held_out: list, new_rows: np.ndarray) -> dict[str, np.ndarray]:
    """The slices the rule judges on their own: "cold", the users whose held-out items
    (``held_out``: one iterable of item rows per user) include one of ``new_rows`` (no training
    interaction), and "warm", the rest."""
    new = set(np.asarray(new_rows).tolist())
    cold = np.array([not new.isdisjoint(int(i) for i in h) for h in held_out], bool)
    return {"cold": cold, "warm": ~cold}


def within(full: np.ndarray, narrow: np.ndarray, tolerance: float, confidence: float,
           slices: dict[str, np.ndarray] | None = None) -> dict:
    """The width rule for one narrower setting against the full model's per-user scores
    (paired, the same users): the loss's mean plus ``confidence`` standard errors within
    ``tolerance`` of the full model's mean score (the bound holds on users the choice was not
    made on about as often as one standard error says: 84% at 1), and on each slice (a mask
    over the users; slices of fewer than two users are left out) the loss's mean minus
    ``confidence`` standard errors within the tolerance of the slice's own score."""
    full, narrow = np.asarray(full, np.float64), np.asarray(narrow, np.float64)
    loss, se = mean_and_se(full - narrow)
    out = {"score": float(narrow.mean()), "loss": loss, "se": se,
           "within": bool(loss + confidence * se <= tolerance * float(full.mean()) + 1e-12)}
    if slices:
        out["slices"] = {}
        for name, mask in slices.items():
            mask = np.asarray(mask, bool)
            if mask.sum() < 2:
                continue
            s_loss, s_se = mean_and_se(full[mask] - narrow[mask])
            ok = s_loss - confidence * s_se <= tolerance * float(full[mask].mean()) + 1e-12
            out["slices"][name] = {"users": int(mask.sum()), "score": float(narrow[mask].mean()), "loss": s_loss,
                                   "se": s_se, "within": bool(ok)}
            out["within"] = out["within"] and bool(ok)
    return out


def pick(rank: int, full: np.ndarray, ranks: dict[int, np.ndarray], projected: dict[int, np.ndarray],
         tolerance: float, confidence: float, slices: dict[str, np.ndarray] | None = None,
         users: np.ndarray | None = None) -> tuple[int, bool, list[dict]]:
    """The rule on ``users`` (default all): the narrowest of ``ranks`` (per-user scores by
    rank) that passes ``within`` against ``full`` (else the model's own ``rank``), then that
    rank projected if ``projected`` holds its scores and it passes too. Returns the rank,
    whether projected, and every width judged (narrowest rank first, the projection last)."""
    at = slice(None) if users is None else users
    f, parts = full[at], {name: np.asarray(m, bool)[at] for name, m in (slices or {}).items()}
    judged, chosen = [], rank
    for r in sorted(ranks):
        judged.append({"rank": r, "projected": False, **within(f, ranks[r][at], tolerance, confidence, parts)})
        if judged[-1]["within"] and chosen == rank:
            chosen = r
    if chosen in projected:
        judged.append({"rank": chosen, "projected": True,
                       **within(f, projected[chosen][at], tolerance, confidence, parts)})
        return chosen, judged[-1]["within"], judged
    return chosen, False, judged


def fold_halves(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` validation users cut in two seeded halves (sorted positions): the same every run."""
    order = np.random.default_rng(FOLD_SEED).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2:])


def folds(rank: int, full: np.ndarray, ranks: dict[int, np.ndarray], projected: dict[int, np.ndarray],
          tolerance: float, confidence: float, slices: dict[str, np.ndarray] | None = None) -> list[dict]:
    """Whether the tolerance holds on users the choice was not made on: the users cut in two
    seeded halves, the rule (``pick``) applied to each half, and its choice's loss against the
    full model measured on the other half (``holds``: the loss within the tolerance of that
    half's full score). A projection is judged only where it was scored (the rank chosen on
    every user)."""
    if len(full) < 4:
        return []
    halves, out = fold_halves(len(full)), []
    for chose_on, other in (halves, halves[::-1]):
        r, is_projected, _ = pick(rank, full, ranks, projected, tolerance, confidence, slices, chose_on)
        scores = projected[r] if is_projected else full if r == rank else ranks[r]
        base = float(full[other].mean())
        loss = base - float(scores[other].mean())
        out.append({"rank": r, "projected": is_projected, "users": len(chose_on), "other_users": len(other),
                    "loss_on_other": loss, "holds": bool(loss <= tolerance * base + 1e-12)})
    return out


@dataclass(frozen=True)
class Width:
    """The width chosen: its rank, whether projected, its validation score, every width tried
    (the full model first; loss, standard error and slices against it) and the two folds."""

    rank: int
    projected: bool
    score: float
    tried: list[dict] = field(default_factory=list)
    folds: list[dict] = field(default_factory=list)


def narrowest(rank: int, full: np.ndarray, tolerance: float, score_at: Callable[[int], np.ndarray],
              projected_score: Callable[[int], np.ndarray] | None, unit: int | None = None,
              confidence: float = 0.0, project_up_to: int | None = None,
              slices: dict[str, np.ndarray] | None = None) -> Width:
    """The hybrid's width: every rank of ``smaller_ranks(rank, unit)`` is scored
    (``score_at(rank)``: per-user scores; widest first, so an exact model's narrower widths
    come from one SVD) and the rule (``pick``) takes the narrowest that passes; then that rank
    projected to the content's width (``projected_score(rank)``; None: not tried; nor above
    ``project_up_to``) if it passes too."""
    full = np.asarray(full, np.float64)
    head = {"rank": rank, "projected": False, "score": float(full.mean()), "loss": 0.0, "se": 0.0, "within": True}
    ranks = {r: np.asarray(score_at(r), np.float64) for r in sorted(smaller_ranks(rank, unit), reverse=True)}
    chosen, _, _ = pick(rank, full, ranks, {}, tolerance, confidence, slices)
    projected = {}
    if projected_score is not None and (project_up_to is None or chosen <= project_up_to):
        projected[chosen] = np.asarray(projected_score(chosen), np.float64)
    chosen, is_projected, judged = pick(rank, full, ranks, projected, tolerance, confidence, slices)
    score = float(full.mean()) if chosen == rank and not is_projected else next(
        w["score"] for w in judged if w["rank"] == chosen and w["projected"] == is_projected)
    return Width(chosen, is_projected, score, [head, *judged],
                 folds(rank, full, ranks, projected, tolerance, confidence, slices))
