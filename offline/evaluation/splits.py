"""Train / validation / test splits of interactions, per user (or one cut in time for all).

Interactions arrive as three aligned arrays (user code, item row, timestamp in seconds).
Every user's interactions are split into train, validation and test parts; an evaluation
then asks for (history, relevant items) per user: validation users rank with their train
part as history, test users with train + validation. Items already in the history cannot
be relevant (seen items are excluded from the ranking), and users left with no history or
nothing relevant are dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from groundrec.offline.evaluation.config import SplitConfig
from groundrec.offline.holdout import moment_start
from groundrec.shared.errors import UserError

DAY = 86_400


@dataclass
class UserParts:
    train: np.ndarray  # positions into the interaction arrays, in time order
    valid: np.ndarray
    test: np.ndarray


@dataclass
class Split:
    parts: dict[int, UserParts]
    description: str

    def counts(self) -> dict[str, int]:
        return {name: int(sum(len(getattr(p, name)) for p in self.parts.values())) for name in ("train", "valid", "test")}


@dataclass
class EvalUsers:
    """The users of one evaluation stage, aligned lists."""

    users: list[int] = field(default_factory=list)
    history: list[np.ndarray] = field(default_factory=list)  # item rows, time order
    history_ts: list[np.ndarray] = field(default_factory=list)
    relevant: list[set[int]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.users)


def _temporal_parts(order: np.ndarray, ts: np.ndarray, cfg: SplitConfig) -> UserParts:
    """``order``: this user's positions sorted by time; ``ts`` their timestamps."""
    n = len(order)
    if cfg.holdout == "last_day":
        days = ts // DAY
        distinct = np.unique(days)
        test_from = np.searchsorted(days, distinct[-1])
        valid_from = np.searchsorted(days, distinct[-2]) if len(distinct) > 1 else test_from
    else:  # a count of interactions, each cut moved back to the start of its moment: a basket stays whole
        # (cut inside one, its other items were history: retail's test became completing a visible basket)
        size = cfg.n if cfg.holdout == "last_n" else max(1, int(np.ceil(cfg.frac * n)))
        test_from = moment_start(ts, max(0, n - size))
        valid_from = moment_start(ts, max(0, test_from - size))
    return UserParts(order[:valid_from], order[valid_from:test_from], order[test_from:])


def _random_parts(positions: np.ndarray, rng: np.random.Generator, ratios: tuple[float, float, float]) -> UserParts:
    """``positions`` (one user's, in time order) drawn at random into the parts, each part in
    time order (sorting the positions themselves put them in the input file's order)."""
    shuffled = rng.permutation(len(positions))  # the same draw as permuting the positions
    n = len(shuffled)
    n_test = int(round(ratios[2] * n))
    n_valid = int(round(ratios[1] * n))
    n_train = n - n_test - n_valid
    return UserParts(positions[np.sort(shuffled[:n_train])], positions[np.sort(shuffled[n_train:n_train + n_valid])],
                     positions[np.sort(shuffled[n_train + n_valid:])])


def cold_items(items: np.ndarray, cfg: SplitConfig) -> tuple[np.ndarray, np.ndarray]:
    """The item cold-start split's held-out items: (validation items, test items), disjoint
    random samples of ``cold_share`` of the items that have interactions each."""
    present = np.unique(items)
    n = max(1, int(round(cfg.cold_share * len(present))))
    chosen = np.random.default_rng(cfg.seed).permutation(present)
    return np.sort(chosen[n:2 * n]), np.sort(chosen[:n])


def split_interactions(users: np.ndarray, ts: np.ndarray, cfg: SplitConfig,
                       items: np.ndarray | None = None) -> Split:
    """Split every user's interactions; ``ts`` in seconds (ties keep their input order).
    ``items`` (item rows, aligned) is needed by the cold_items split only."""
    order = np.lexsort((np.arange(len(users)), ts, users))
    if cfg.kind == "cold_items":
        if items is None:
            raise UserError("the cold_items split needs the interactions' items")
        return _cold_item_split(order, users, items, cfg)
    if cfg.kind == "global_time":
        return _global_time_split(order, users, ts, cfg)
    boundaries = np.flatnonzero(np.diff(users[order])) + 1
    rng = np.random.default_rng(cfg.seed)
    parts: dict[int, UserParts] = {}
    for chunk in np.split(order, boundaries) if len(order) else []:
        u = int(users[chunk[0]])
        if cfg.kind == "temporal":
            parts[u] = _temporal_parts(chunk, ts[chunk], cfg)
        else:
            parts[u] = _random_parts(chunk, rng, cfg.ratios)
    if cfg.kind == "temporal":
        what = {"last_day": "last interaction day", "last_n": f"last {cfg.n} interaction(s)",
                "last_frac": f"last {cfg.frac:.0%} of interactions"}[cfg.holdout]
        what += "" if cfg.holdout == "last_day" else " (interactions at one moment kept in one part)"
        desc = (f"per-user temporal split: each user's {what} is test, the same amount before it "
                "validation, the rest train")
    else:
        desc = f"per-user random split {':'.join(f'{r:g}' for r in cfg.ratios)} (seed {cfg.seed})"
    return Split(parts, desc)


def _coded_parts(order: np.ndarray, users: np.ndarray, part: np.ndarray) -> dict[int, UserParts]:
    """Each user's positions (``order``: sorted by user, then time) split by ``part`` (0 train,
    1 validation, 2 test, per interaction)."""
    parts: dict[int, UserParts] = {}
    for chunk in np.split(order, np.flatnonzero(np.diff(users[order])) + 1) if len(order) else []:
        where = part[chunk]
        parts[int(users[chunk[0]])] = UserParts(chunk[where == 0], chunk[where == 1], chunk[where == 2])
    return parts


def global_cuts(ts: np.ndarray, frac: float) -> tuple[float, float]:
    """(validation's first time, test's first time): the last ``frac`` of the interactions by
    time is test and the ``frac`` before it validation (an interaction at a cut's time falls after it)."""
    ordered = np.sort(ts)
    n = len(ordered)
    test_from = max(0, n - max(1, int(np.ceil(frac * n))))
    valid_from = max(0, test_from - max(1, int(np.ceil(frac * n))))
    return float(ordered[valid_from]), float(ordered[test_from])


def _global_time_split(order: np.ndarray, users: np.ndarray, ts: np.ndarray, cfg: SplitConfig) -> Split:
    valid_at, test_at = global_cuts(ts, cfg.frac) if len(ts) else (0.0, 0.0)
    part = np.where(ts >= test_at, 2, np.where(ts >= valid_at, 1, 0))
    parts = _coded_parts(order, users, part)
    day = lambda t: np.datetime_as_string(np.datetime64(int(t), "s"), unit="D")  # noqa: E731
    desc = (f"global temporal split: one cut in time for every user; interactions from {day(test_at)} on (the last "
            f"{cfg.frac:.0%}) are test, from {day(valid_at)} validation, the rest train: no system learns from "
            "anyone's future")
    return Split(parts, desc)


def _cold_item_split(order: np.ndarray, users: np.ndarray, items: np.ndarray, cfg: SplitConfig) -> Split:
    valid_items, test_items = cold_items(items, cfg)
    part = np.where(np.isin(items, test_items), 2, np.where(np.isin(items, valid_items), 1, 0))
    parts = _coded_parts(order, users, part)
    desc = (f"item cold-start split: {len(test_items)} random items with interactions ({cfg.cold_share:.0%}, seed "
            f"{cfg.seed}) are test items and {len(valid_items)} others validation items; every interaction with "
            "them is held out, and each user ranks every item with the rest of their interactions as history")
    return Split(parts, desc)


def eval_users(split: Split, stage: str, items: np.ndarray, ts: np.ndarray) -> EvalUsers:
    """(history, relevant) per user for ``stage`` = "valid" or "test"."""
    if stage not in ("valid", "test"):
        raise UserError(f"stage must be 'valid' or 'test', not {stage!r}")
    out = EvalUsers(dropped={"no history": 0, "nothing held out": 0, "held-out items all seen": 0})
    for u, p in sorted(split.parts.items()):
        hist = p.train if stage == "valid" else np.concatenate([p.train, p.valid])
        held = getattr(p, stage)
        if len(held) == 0:
            out.dropped["nothing held out"] += 1
            continue
        if len(hist) == 0:
            out.dropped["no history"] += 1
            continue
        hist = hist[np.argsort(ts[hist], kind="stable")]
        seen = set(items[hist].tolist())
        relevant = set(items[held].tolist()) - seen
        if not relevant:
            out.dropped["held-out items all seen"] += 1
            continue
        out.users.append(u)
        out.history.append(items[hist])
        out.history_ts.append(ts[hist].astype(np.float64))
        out.relevant.append(relevant)
    return out
