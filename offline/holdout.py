"""The learn stage's validation: each sampled user's last new item held out (and, where too few
users have one, about ``valid_items`` of the users' last new items, at most ``MAX_PER_USER``
each: ``hold_out_recent``), and whether a hybrid finds it in its top K (recall@K over those
users) — at each weight of a grid, at a narrower rank, and as the service scores the published
version (projected, new items lifted, places kept for them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from groundrec.offline import collab
from groundrec.shared.scoring.collab import collab_queries, hybrid_queries, index_rows
from groundrec.shared.scoring.profiles import latest, mean_profiles
from groundrec.shared.scoring.ranking import lift, target_in_top_k, target_in_top_k_of_blends, top_k_matrix

K = 20
CHUNK = 256  # validation rows scored at a time
METRIC = f"recall@{K} of each user's last new item(s)"
MAX_PER_USER = 25  # most items held out of one user (when too few users have a last new item)


def hold_out_last(histories: list[np.ndarray], max_users: int, seed: int = 0) -> tuple[list[np.ndarray], list[int], np.ndarray]:
    """Training histories (every user; a held-out user without their last item), the held-out
    users and their targets: a user's last item when it is new to them."""
    candidates = [u for u, h in enumerate(histories) if len(h) >= 2 and h[-1] not in set(h[:-1].tolist())]
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(candidates, min(max_users, len(candidates)), replace=False).tolist()) if candidates else []
    train = list(histories)
    for u in chosen:
        train[u] = histories[u][:-1]
    return train, chosen, np.array([histories[u][-1] for u in chosen], dtype=np.int64)


@dataclass(frozen=True)
class HeldOut:
    """The learn stage's validation set. ``train``: every user's training history (a held-out
    user's ends before their first held-out item); ``users``: the held-out users (sorted);
    per validation row (one held-out item each, a user's rows in time order): ``rows`` its
    user's place in ``users``, ``histories`` the history before its user's first held-out item
    (what a request would send: one list must find all of the user's held-out items, as
    ``groundrec eval``'s test finds a user's later block), ``targets`` the item."""

    train: list[np.ndarray]
    users: list[int]
    rows: np.ndarray
    histories: list[np.ndarray]
    targets: np.ndarray

    def per_user(self, values) -> np.ndarray:
        """Per-row values (hits) as each user's mean over their rows (recall of their held-out
        items): what every rule compares, so that a user's rows count once and are paired."""
        values = np.asarray(values, np.float64)
        if len(self.rows) == len(self.users):
            return values
        return np.bincount(self.rows, values, len(self.users)) / np.bincount(self.rows, minlength=len(self.users))

    @property
    def targets_by_user(self) -> list[np.ndarray]:
        return [self.targets[self.rows == i] for i in range(len(self.users))]


def _new_positions(h: np.ndarray) -> list[int]:
    """The positions (after the first) whose item is new to the history before it."""
    seen: set[int] = set()
    out = []
    for p, item in enumerate(h.tolist()):
        if p and item not in seen:
            out.append(p)
        seen.add(item)
    return out


def hold_out_recent(histories: list[np.ndarray], max_users: int, max_items: int, seed: int = 0) -> HeldOut:
    """Where at least ``max_users`` users' last item is new to them, one each from that many of
    them drawn at random (``hold_out_last``); else at most ``max_items`` held-out items: from every user with a new item in the later half of their history (a random
    ``max_items`` of them when more), their last new items there, as many as their share of
    ``max_items`` (``_shares``; at most ``MAX_PER_USER``; a user's training part keeps at least
    the first half of their history). A catalog of few users with long histories gets a
    validation set large enough to choose on, not a few hundred single items: every
    one-standard-error rule slides by the noise of this set (docs/hybrid.md)."""
    train, users, targets = hold_out_last(histories, max_users, seed)
    if len(users) >= max_users or not histories:
        return HeldOut(train, users, np.arange(len(users)), [train[u] for u in users], targets)
    news = [[p for p in _new_positions(np.asarray(h)) if p >= len(h) // 2] for h in histories]  # the later half
    users = [u for u, positions in enumerate(news) if positions]
    if len(users) > max_items:
        users = sorted(np.random.default_rng(seed).choice(users, max_items, replace=False).tolist())
    share = _shares(max_items, len(users), seed)
    train, rows, held, targets = list(histories), [], [], []
    for i, u in enumerate(users):
        positions = news[u][-share[i]:]
        train[u] = histories[u][:positions[0]]
        for p in positions:  # all found from one list: the history before the first of them
            rows.append(i)
            held.append(train[u])
            targets.append(histories[u][p])
    return HeldOut(train, users, np.asarray(rows, np.int64), held, np.asarray(targets, np.int64))


def _shares(budget: int, n: int, seed: int = 0) -> np.ndarray:
    """How many items each of ``n`` users may hold out of ``budget`` (n <= budget): an even
    share, the remainder one more each to users drawn at random, at most ``MAX_PER_USER``."""
    base, extra = divmod(budget, max(n, 1))
    share = np.full(n, base, np.int64)
    share[np.random.default_rng(seed + 1).choice(n, extra, replace=False)] += 1
    return np.minimum(share, MAX_PER_USER)


def hits(scores: np.ndarray, seen: list[np.ndarray], targets: np.ndarray) -> np.ndarray:
    """Whether each row's target is in its top K (seen items excluded, in place)."""
    return target_in_top_k(scores, seen, targets, K)


def content_profiles(content: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
    return mean_profiles(content, [latest(h) for h in histories])


def validation_hits(model: collab.CollabModel, content: np.ndarray, profiles: np.ndarray, held: list[np.ndarray],
                    targets: np.ndarray, weights: list[float], half_life: float = 0.0) -> dict[object, np.ndarray]:
    """Whether each held-out user's target is in the top K of content alone, the collaborative
    part alone and the hybrid at each weight (keys "content", "collaborative" and each weight)."""
    found: dict[object, list] = {"content": [], "collaborative": [], **{w: [] for w in weights}}
    for start in range(0, len(held), CHUNK):  # bounded memory: CHUNK x items scores at a time
        part = slice(start, start + CHUNK)
        content_part = profiles[part] @ content.T
        cf = model.item_side.scores(collab_queries(model.query, [latest(h) for h in held[part]], half_life))
        found["content"].append(hits(content_part.copy(), held[part], targets[part]))
        found["collaborative"].append(hits(cf.copy(), held[part], targets[part]))
        for weight, hit in zip(weights, target_in_top_k_of_blends(content_part, cf, held[part], targets[part],
                                                                 weights, K)):
            found[weight].append(hit)
    return {key: np.concatenate(value) for key, value in found.items()}


def published_scores(model: collab.CollabModel, content: np.ndarray, profiles: np.ndarray, held: list[np.ndarray],
                     weight: float, projection: collab.Projection | None, half_life: float = 0.0):
    """The hybrid at ``weight`` scored as the service scores it (projected profiles against the
    projected index when there is a projection), ``CHUNK`` users at a time: (their slice, their
    scores)."""
    index = index_rows(content, weight * model.item, projection.item) if projection is not None else None
    for start in range(0, len(held), CHUNK):
        part = slice(start, start + CHUNK)
        queries = collab_queries(model.query, [latest(h) for h in held[part]], half_life)
        if projection is not None:
            yield part, hybrid_queries(profiles[part], queries, projection.query) @ index.T
        else:  # the content product plus the collaborative part, as the service's flat index scores it
            yield part, profiles[part] @ content.T + weight * model.item_side.scores(queries)


def published_hits(model: collab.CollabModel, content: np.ndarray, profiles: np.ndarray, held: list[np.ndarray],
                   targets: np.ndarray, weight: float, projection: collab.Projection | None, half_life: float = 0.0,
                   new: np.ndarray | None = None,
                   fresh: tuple[tuple[float, int], ...] = ((0.0, 0),)) -> dict[tuple[float, int], np.ndarray]:
    """``validation_hits``'s hybrid at ``weight`` (``published_scores``), for each (freshness
    prior weight added to the new items ``new``, places kept for them) in turn."""
    found: dict[tuple[float, int], list] = {point: [] for point in fresh}
    for part, scores in published_scores(model, content, profiles, held, weight, projection, half_life):
        for fw, slots in fresh:
            scored = lift(scores.copy(), [fw] * len(scores), new)
            if slots:
                top = top_k_matrix(scored, K, held[part], new, slots)
                found[fw, slots].append((top == targets[part][:, None]).any(axis=1))
            else:
                found[fw, slots].append(hits(scored, held[part], targets[part]))
    return {point: np.concatenate(h) for point, h in found.items()}


def published_lists(model: collab.CollabModel, content: np.ndarray, profiles: np.ndarray, held: list[np.ndarray],
                    weight: float, projection: collab.Projection | None, half_life: float, new: np.ndarray,
                    fresh_weight: float, slots: int) -> np.ndarray:
    """The hybrid's top-K lists (item rows, users x K) as published: ``published_scores`` with
    its freshness prior and kept places, seen items excluded."""
    lists = [top_k_matrix(lift(scores, [fresh_weight] * len(scores), new), K, held[part], new, slots)
             for part, scores in published_scores(model, content, profiles, held, weight, projection, half_life)]
    return np.concatenate(lists) if lists else np.zeros((0, K), np.int64)
