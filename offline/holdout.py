"""The learn stage's validation: up to ``valid_users`` users hold out their last new items (a
block: about ``valid_items`` in all, ``hold_out_recent``), each user's block found from the one
history before it, and whether a hybrid finds them in its top K (recall@K per user) — at each
weight of a grid, at a narrower rank, and as the service scores the published version
(projected, new items lifted, places kept for them). A user's rows are scored from one
profile, once (``owner``: each row's user)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from groundrec.offline import collab
from groundrec.shared.scoring.collab import collab_queries, hybrid_queries, index_rows
from groundrec.shared.scoring.profiles import latest
from groundrec.shared.scoring.ranking import lift, target_in_top_k, target_in_top_k_of_blends, top_k_matrix

K = 20
CHUNK = 256  # validation rows scored at a time
METRIC = f"recall@{K} of each user's last new item(s)"
MAX_PER_USER = 25  # most items held out of one user (when too few users have a last new item)
SCORED_CELLS = 2_000_000_000  # held-out items x catalog items, at most: what one scoring pass of the validation costs


def hold_out_last(histories: list[np.ndarray], max_users: int, seed: int = 0,
                  times: list[np.ndarray] | None = None) -> tuple[list[np.ndarray], list[int], list[np.ndarray]]:
    """Training histories (every user; a held-out user without their last moment), the held-out
    users (up to ``max_users``, drawn at random) and each one's targets: the items of their last
    moment that are new to them. Without ``times`` (each history's sorted timestamps) every
    item is a moment: a user's last item when it is new to them. A user of one moment has
    nothing to be found from and is never drawn."""
    cuts, targets = [], []
    for u, h in enumerate(histories):
        cut = len(h) - 1 if times is None or not len(h) else moment_start(np.asarray(times[u])[:len(h)], len(h) - 1)
        seen = set(h[:cut].tolist()) if cut > 0 else set()
        cuts.append(cut)
        targets.append(np.asarray(list(dict.fromkeys(i for i in h[cut:].tolist() if i not in seen)), np.int64)
                       if cut > 0 else np.zeros(0, np.int64))
    candidates = [u for u in range(len(histories)) if len(targets[u])]
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(candidates, min(max_users, len(candidates)), replace=False).tolist()) if candidates else []
    train = list(histories)
    for u in chosen:
        train[u] = histories[u][:cuts[u]]
    return train, chosen, [targets[u] for u in chosen]


@dataclass(frozen=True)
class HeldOut:
    """The learn stage's validation set. ``train``: every user's training history (a held-out
    user's ends before their first held-out item); ``users``: the held-out users (sorted);
    per validation row (one held-out item each, a user's rows in time order): ``rows`` its
    user's place in ``users``, ``targets`` the item. Every row of a user is found from the
    user's training part, the history before their first held-out item (what a request would
    send: one list must find all of the user's held-out items, as ``groundrec eval``'s test
    finds a user's later block)."""

    train: list[np.ndarray]
    users: list[int]
    rows: np.ndarray
    targets: np.ndarray

    def per_user(self, values) -> np.ndarray:
        """Per-row values (hits) as each user's mean over their rows (recall of their held-out
        items): what every rule compares, so that a user's rows count once and are paired."""
        values = np.asarray(values, np.float64)
        if len(self.rows) == len(self.users):
            return values
        return np.bincount(self.rows, values, len(self.users)) / np.bincount(self.rows, minlength=len(self.users))

    @property
    def user_histories(self) -> list[np.ndarray]:
        """Each held-out user's history before their block: what all their rows are scored from."""
        return [self.train[u] for u in self.users]

    @property
    def histories(self) -> list[np.ndarray]:
        """Each row's history (its user's ``user_histories`` entry, repeated per row)."""
        return [self.train[self.users[i]] for i in self.rows]

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


def hold_out_recent(histories: list[np.ndarray], max_users: int, max_items: int, seed: int = 0,
                    times: list[np.ndarray] | None = None) -> HeldOut:
    """Every user with a new item in the later half of their history (a random ``max_users`` of
    them when more, and never more users than ``max_items``) holds out their last new items
    there, as many as their share of ``max_items`` (``_shares``; at most ``MAX_PER_USER``): a
    block, like ``groundrec eval``'s temporal test, found from the history before it (a user's
    training part: by position, at least the first half of the history). One held-out item a user, found
    from the history just before it, chose for one step ahead (on retail reg 31.6 where the
    block chooses 100, 0.0042 lower on eval's test: docs/hybrid.md, "The validation's horizon
    on every catalog"); few items a user leave every one-standard-error rule sliding by the noise.
    ``times`` (each history's timestamps, sorted): held out by moments (a basket, one invoice, one
    day's purchases), never across one: a user's training part ends where the moment of their
    first held-out item begins, the block is the user's share of the new items from there on,
    drawn at random where there are more (not the last of a basket in file order), and only new
    items after a user's first moment can be held out (a user of one moment has nothing before
    it to be found from)."""
    news = [[p for p in _new_positions(np.asarray(h)) if p >= len(h) // 2] for h in histories]  # the later half
    if times is not None:
        news = [[p for p in positions if moment_start(times[u], p) > 0] for u, positions in enumerate(news)]
    users = [u for u, positions in enumerate(news) if positions]
    most = min(max_users, max_items)
    if len(users) > most:
        users = sorted(np.random.default_rng(seed).choice(users, most, replace=False).tolist())
    share = _shares(max_items, len(users), seed)
    train, rows, targets = list(histories), [], []
    for i, u in enumerate(users):
        positions = news[u][-share[i]:]
        cut = positions[0] if times is None else moment_start(times[u], positions[0])
        positions = [p for p in news[u] if p >= cut]  # with times: every new item of the moments held out
        if len(positions) > share[i]:  # more than its share: a random one of them, not the last in file order
            positions = sorted(np.random.default_rng([seed, u]).choice(positions, share[i], replace=False).tolist())
        train[u] = histories[u][:cut]  # all found from one list: the history before the first of them
        rows += [i] * len(positions)
        targets += [histories[u][p] for p in positions]
    return HeldOut(train, users, np.asarray(rows, np.int64), np.asarray(targets, np.int64))


def split_at(histories: list[np.ndarray], times: list[np.ndarray],
             cutoff: float) -> tuple[list[int], list[list[int]]]:
    """Each history (``times`` sorted) cut at ``cutoff``: where its part at or before it ends,
    and the items new to it after (in order, once each; none for a history with no part
    before). The promotion gate's window's rule."""
    cut = [int(np.searchsorted(t, cutoff, side="right")) for t in times]
    after = []
    for h, k in zip(histories, cut):
        seen = set(h[:k].tolist())
        after.append([int(i) for i in dict.fromkeys(h[k:].tolist()) if i not in seen] if k else [])
    return cut, after


def moment_start(times: np.ndarray, at: int) -> int:
    """The first position (``times`` sorted) with the timestamp of position ``at`` (``at`` itself
    past the end): a cut there keeps interactions made at one moment (a basket, an invoice) in
    one part, for the job's validation and eval's per-user splits alike."""
    return int(np.searchsorted(times, times[at], side="left")) if at < len(times) else at


def items_to_hold_out(max_items: int, n_items: int) -> int:
    """How many items the validation holds out of a catalog of ``n_items``: ``max_items``, or
    fewer where scoring each against every item would pass ``SCORED_CELLS`` per pass (every
    held-out item's row is scored against the whole catalog, at every point of the grids). A
    1M-item catalog holds out 2,000 (with one item a user, the validation its learn-stage
    benchmark was measured with: docs/benchmarks.md); retail's 3,658 items, the full 10,000."""
    return int(max(1, min(max_items, SCORED_CELLS // max(n_items, 1))))


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


def _chunks(owner: np.ndarray):
    """The rows in order, about ``CHUNK`` at a time and never splitting a user's: (the users'
    slice, the rows' slice, each row's user counted from the slice's first). ``owner``: each
    row's user, non-decreasing (a user's rows are consecutive)."""
    if not len(owner):
        return
    bounds = np.searchsorted(owner, np.arange(owner[-1] + 2))  # each user's first row, and the end
    first = 0
    while first <= owner[-1]:
        last = max(first + 1, int(np.searchsorted(bounds, bounds[first] + CHUNK, side="right")) - 1)
        rows = slice(int(bounds[first]), int(bounds[last]))
        yield slice(first, last), rows, owner[rows] - first
        first = last


def _owner(owner: np.ndarray | None, n: int) -> np.ndarray:
    return np.arange(n) if owner is None else np.asarray(owner, np.int64)


def validation_hits(model: collab.CollabModel, content: np.ndarray, profiles: np.ndarray, held: list[np.ndarray],
                    targets: np.ndarray, weights: list[float], half_life: float = 0.0,
                    owner: np.ndarray | None = None) -> dict[object, np.ndarray]:
    """Whether each held-out row's target is in the top K of content alone, the collaborative
    part alone and the hybrid at each weight (keys "content", "collaborative" and each weight).
    ``profiles`` and ``held`` (the history a list is made from) are per user, ``targets`` per
    row, ``owner`` each row's user (None: a row each)."""
    found: dict[object, list] = {"content": [], "collaborative": [], **{w: [] for w in weights}}
    for users, rows, local in _chunks(_owner(owner, len(targets))):  # bounded memory: about CHUNK rows at a time
        content_part = (profiles[users] @ content.T)[local]
        cf = model.item_side.scores(collab_queries(model.query, [latest(h) for h in held[users]], half_life))[local]
        seen, wanted = [held[users][i] for i in local], targets[rows]
        found["content"].append(hits(content_part.copy(), seen, wanted))
        found["collaborative"].append(hits(cf.copy(), seen, wanted))
        for weight, hit in zip(weights, target_in_top_k_of_blends(content_part, cf, seen, wanted, weights, K)):
            found[weight].append(hit)
    return {key: np.concatenate(value) if value else np.zeros(0, bool) for key, value in found.items()}


def published_scores(model: collab.CollabModel | None, content: np.ndarray, profiles: np.ndarray,
                     held: list[np.ndarray], weight: float, projection: collab.Projection | None,
                     half_life: float = 0.0, owner: np.ndarray | None = None, prior: np.ndarray | None = None):
    """The hybrid at ``weight`` scored as the service scores it (projected profiles against the
    projected index when there is a projection; content alone at weight 0, ``model`` unused),
    about ``CHUNK`` rows at a time, each user's once: (the rows' slice, each row's history,
    their scores). ``profiles``, ``held`` per user, ``owner`` each row's user (None: a row
    each); ``prior``: per item, added to every row (the version's recent-popularity prior), or
    a function of the users (an index array) giving a row of it per user."""
    index = index_rows(content, weight * model.item, projection.item) if projection is not None and weight else None
    for users, rows, local in _chunks(_owner(owner, len(held))):
        each = prior(np.arange(users.start, users.stop))[local] if callable(prior) else prior  # a row each, or one
        if not weight:
            scores = profiles[users] @ content.T
            yield rows, [held[users][i] for i in local], _with(scores[local], each)
            continue
        queries = collab_queries(model.query, [latest(h) for h in held[users]], half_life)
        if projection is not None:
            scores = hybrid_queries(profiles[users], queries, projection.query) @ index.T
        else:  # the content product plus the collaborative part, as the service's flat index scores it
            scores = profiles[users] @ content.T + weight * model.item_side.scores(queries)
        yield rows, [held[users][i] for i in local], _with(scores[local], each)


def _with(scores: np.ndarray, prior: np.ndarray | None) -> np.ndarray:
    if prior is not None:
        scores += prior
    return scores


def published_hits(model: collab.CollabModel, content: np.ndarray, profiles: np.ndarray, held: list[np.ndarray],
                   targets: np.ndarray, weight: float, projection: collab.Projection | None, half_life: float = 0.0,
                   new: np.ndarray | None = None, fresh: tuple[tuple[float, int], ...] = ((0.0, 0),),
                   owner: np.ndarray | None = None, prior: np.ndarray | None = None) -> dict[tuple[float, int], np.ndarray]:
    """``validation_hits``'s hybrid at ``weight`` (``published_scores``), for each (freshness
    prior weight added to the new items ``new``, places kept for them) in turn."""
    found: dict[tuple[float, int], list] = {point: [] for point in fresh}
    for rows, seen, scores in published_scores(model, content, profiles, held, weight, projection, half_life, owner,
                                               prior):
        for fw, slots in fresh:
            scored = lift(scores.copy(), [fw] * len(scores), new)
            if slots:
                top = top_k_matrix(scored, K, seen, new, slots)
                found[fw, slots].append((top == targets[rows][:, None]).any(axis=1))
            else:
                found[fw, slots].append(hits(scored, seen, targets[rows]))
    return {point: np.concatenate(h) if h else np.zeros(0, bool) for point, h in found.items()}


def published_lists(model: collab.CollabModel, content: np.ndarray, profiles: np.ndarray, held: list[np.ndarray],
                    weight: float, projection: collab.Projection | None, half_life: float, new: np.ndarray,
                    fresh_weight: float, slots: int, owner: np.ndarray | None = None,
                    prior: np.ndarray | None = None) -> np.ndarray:
    """The hybrid's top-K lists (item rows, one per validation row, K each) as published:
    ``published_scores`` with its freshness prior and kept places, seen items excluded."""
    lists = [top_k_matrix(lift(scores, [fresh_weight] * len(scores), new), K, seen, new, slots)
             for _, seen, scores in published_scores(model, content, profiles, held, weight, projection, half_life,
                                                      owner, prior)]
    return np.concatenate(lists) if lists else np.zeros((0, K), np.int64)
