"""From scores to a list: seen items excluded, the popularity prior added, the top k taken
with ties broken by the lower row (deterministic, so a batch and a single request agree, and
eval ranks exactly as the service does)."""

from __future__ import annotations

from itertools import chain, islice

import numpy as np

DIVERSE_HEAD = 64  # diversity takes its k from at most this many times k of the best (``select``)


def add_prior(scores: np.ndarray, weights, log_pop: np.ndarray) -> np.ndarray:
    """``scores + w x ln(1 + count)``, in place for a matrix: one weight per row of a
    (users x items) matrix, or one weight for a single score vector (then a new array)."""
    if scores.ndim == 1:
        return scores + weights * log_pop if weights else scores
    weights = np.asarray(weights, dtype=np.float32)
    if weights.any():
        scores += weights[:, None] * log_pop
    return scores


def lift(scores: np.ndarray, weights, rows: np.ndarray | None) -> np.ndarray:
    """``scores + w`` on ``rows`` only (the freshness prior of the new items), in place: one
    weight for a score vector, one per row of a (users x items) matrix. Only the lifted
    columns are touched: new items are usually few."""
    if rows is None or not len(rows):
        return scores
    if scores.ndim == 1:
        if weights:
            scores[rows] += weights
        return scores
    weights = np.asarray(weights, dtype=scores.dtype)
    if weights.any():
        scores[:, rows] += weights[:, None]
    return scores


def exclude(scores: np.ndarray, seen: list) -> np.ndarray:
    """Each row's seen item rows (any iterable of ints: a set, a list, an array) set to -inf,
    in place; a single score vector takes one iterable. One fancy assignment for the whole
    matrix, without a Python pair per item."""
    if scores.ndim == 1:
        if len(seen):
            scores[np.fromiter(seen, np.intp, len(seen))] = -np.inf
        return scores
    lengths = [len(rows) for rows in seen]
    total = sum(lengths)
    if total:
        if all(isinstance(rows, np.ndarray) for rows in seen):  # histories: one copy, not a Python int per item
            cols = np.concatenate(seen).astype(np.intp, copy=False)
        else:
            cols = np.fromiter(chain.from_iterable(seen), np.intp, total)
        scores[np.repeat(np.arange(len(lengths)), lengths), cols] = -np.inf
    return scores


def top_k(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k best finite entries of a score vector as (row, score), best first, ties broken
    by the lower row."""
    return top_k_rows(scores[None, :], [k])[0]


def top_k_rows(scores: np.ndarray, ks: list[int]) -> list[list[tuple[int, float]]]:
    """``top_k`` for every row of a (users x items) score matrix, without a partition of the
    whole row: the row's items are dealt into about 8 x k blocks, and the k-th largest block
    maximum is a floor that the row's k-th best score reaches (k blocks each hold an item at or
    above it). Only the few items at or above that floor are sorted, so ties at the k-th place
    are all among them and go to the lowest rows. A row with fewer than k usable blocks sorts
    all its finite items. A block is every ``blocks``-th item (item i in block i mod blocks),
    so the maxima are an elementwise maximum of contiguous runs, several times faster than a
    reduction over short contiguous blocks when k is large (a max_per head of 4 x k). The
    whole batch goes through a fixed handful of array operations, not a few per row (in the
    service, each one over a large array may hand the GIL to the event loop)."""
    n = scores.shape[1]
    kmax = min(max(ks), n)
    if kmax == 0:
        return [[] for _ in ks]
    block = max(1, n // (8 * kmax))
    blocks = n // block
    floor = np.partition(scores[:, :blocks * block].reshape(len(ks), block, blocks).max(axis=1),
                         blocks - kmax, axis=1)[:, blocks - kmax]
    # A row whose floor is -inf keeps every finite score (the lowest finite value is the floor).
    floor = np.where(np.isfinite(floor), floor, np.finfo(scores.dtype).min)
    kept = np.flatnonzero(scores >= floor[:, None])  # much faster than np.nonzero on the 2-d mask
    rows, cols = np.divmod(kept, n)
    values = scores.reshape(-1)[kept]
    order = np.lexsort((cols, -values, rows))  # by row, then score descending, then item
    starts = np.searchsorted(rows[order], np.arange(len(ks) + 1)).tolist()
    cols, values = cols[order].tolist(), values[order].tolist()
    return [list(zip(cols[start:min(start + k, end)], values[start:min(start + k, end)]))
            for k, start, end in zip(ks, starts, starts[1:])]


def top_k_matrix(scores: np.ndarray, k: int, seen: list | None = None, new_rows: np.ndarray | None = None,
                 slots: int = 0) -> np.ndarray:
    """``searcher.Searcher.top_matrix`` (kept for callers not yet moved to the searcher)."""
    from groundrec.shared.scoring.searcher import Searcher

    return Searcher(scores.shape[1], new_rows).top_matrix(scores, k, seen, slots)


def missing_new(ranked: list[tuple[int, float]], slots: int, is_new) -> int:
    """How many more new items (rows in ``is_new``) a list needs to hold ``slots`` of them:
    only such a list needs the best new items looked up (``reserve`` leaves the others as
    they are), which keeps the lookup cheap when new items are most of a catalog."""
    return max(slots - sum(row in is_new for row, _ in ranked), 0)


def best_new(scores: np.ndarray, users: list[int], new_rows: np.ndarray, ks: list[int]) -> list[list[tuple[int, float]]]:
    """For these rows of a (users x items) score matrix, the best ``ks`` new items each (item
    rows and scores, best first): what ``reserve`` takes as ``fresh``."""
    if not users:
        return []
    block = scores if len(users) == len(scores) else scores[users]  # usually every row: no copy
    best = top_k_rows(block.take(new_rows, axis=1), ks)  # take: a fifth of the time of np.ix_
    return [[(int(new_rows[c]), s) for c, s in pairs] for pairs in best]


def reserve(ranked: list[tuple[int, float]], fresh: list[tuple[int, float]], k: int, slots: int,
            is_new) -> list[tuple[int, float]]:
    """The first ``k`` of ``ranked`` (best first) holding at least ``slots`` new items (rows
    in ``is_new``) when there are that many: the best of ``fresh`` (the new items, best first)
    not in the list replace its lowest-scored other items. The list stays in score order and
    the scores unchanged: a reserved share for the items the collaborative part cannot know,
    which their content places (the user sets it per request)."""
    out = list(ranked[:k])
    missing = missing_new(out, slots, is_new)
    if not missing:
        return out
    present = {row for row, _ in out}
    extra = [pair for pair in fresh if pair[0] not in present][:missing]
    drop = len(extra) - (k - len(out))  # room left by a short list is used first
    for at in range(len(out) - 1, -1, -1):
        if drop <= 0:
            break
        if out[at][0] not in is_new:
            del out[at]
            drop -= 1
    return sorted(out + extra, key=lambda p: (-p[1], p[0]))[:k]


def picked_from(usable, k: int, pick) -> list[tuple[int, float]]:
    """``k`` items taken by ``pick`` (max_per, diversity) from an ordered stream of (row, score):
    its first 16k, and once more its next 64k when the pick comes back short (a head of one
    value's items gave fewer than k). Bounded on purpose: a pick that can never fill k reads
    80k items, never the whole catalog. Without a pick, the first k."""
    if not pick:
        return list(islice(usable, k))
    head = list(islice(usable, 16 * k))
    taken = pick(head, k)
    if len(taken) < k and len(head) == 16 * k:
        taken = pick(head + list(islice(usable, 64 * k)), k)
    return taken


def target_in_top_k(scores: np.ndarray, seen: list, targets: np.ndarray, k: int) -> np.ndarray:
    """Whether each row's ``targets`` item is in its top k (seen items excluded, ties to the
    lower row as ``top_k_rows`` breaks them), counted without a sort: the items ahead of it."""
    exclude(scores, seen)
    at = scores[np.arange(len(targets)), targets][:, None]
    ahead = (scores > at).sum(axis=1)
    close = np.flatnonzero(ahead < k)  # ties can only add to these rows' counts: the others miss already
    if len(close):
        ties = (scores[close] == at[close]) & (np.arange(scores.shape[1]) < targets[close, None])
        ahead[close] += ties.sum(axis=1)
    return ahead < k


def target_in_top_k_of_blends(first: np.ndarray, second: np.ndarray, seen: list, targets: np.ndarray,
                              weights: list[float], k: int) -> np.ndarray:
    """``target_in_top_k(first + w * second, ...)`` for each weight w >= 0 of ``weights``
    (float32 rows; one row of the result per weight), without a full pass per weight: an item
    scored below the target on both parts can only tie it, never pass it, so each weight is
    counted over the items at or above the target's score on one part at least (those within
    float32 rounding of it included, so ties break as ``target_in_top_k`` breaks them); a user
    with k items clearly above the target on both parts misses at every weight."""
    if any(w < 0 for w in weights):
        raise ValueError(f"blend weights must be >= 0, got {weights}")
    rows = np.arange(len(targets))
    eps = float(np.finfo(np.float32).eps)
    # Rounding bound of (first + w * second) per row: scores within it may tie after rounding.
    slack = 4 * eps * (np.abs(first).max(axis=1) + max(weights, default=0.0) * np.abs(second).max(axis=1))
    exclude(first, seen)
    exclude(second, seen)
    at_first, at_second = first[rows, targets], second[rows, targets]
    near = (first >= (at_first - slack)[:, None]) | (second >= at_second[:, None])
    clearly_ahead = ((first > (at_first + slack)[:, None]) & (second >= at_second[:, None])).sum(axis=1)
    hits = np.zeros((len(weights), len(targets)), bool)
    w = np.asarray(weights, dtype=np.float32)  # each weight as float32 arithmetic takes it: the same sums
    for row in np.flatnonzero(clearly_ahead < k):  # every weight of a row in one (weights x items) block
        items = np.flatnonzero(near[row])
        blended = first[row, items] + w[:, None] * second[row, items]
        at = (at_first[row] + w * at_second[row])[:, None]
        hits[:, row] = (blended > at).sum(axis=1) + ((blended == at) & (items < targets[row])).sum(axis=1) < k
    return hits


def at_most_per(ranked: list[tuple[int, float]], groups: list[np.ndarray], limits: list[int],
                k: int) -> list[tuple[int, float]]:
    """The first ``k`` of ``ranked`` (best first) keeping, for each grouping, at most its limit
    of items per group (``groups[j][row]``: the row's group code, -1 for none, never limited).
    An item over any limit is skipped and the next one taken, so the list stays in score order.
    (Codes are read through a memoryview, as Python ints: the batch path takes every max_per
    list through here, and a numpy scalar per item costs several times as much.)"""
    if not groups:
        return list(ranked)[:k]
    codes = [memoryview(np.ascontiguousarray(g)) for g in groups]
    out = []
    if len(codes) == 1:  # the usual case (one column), without a loop over groupings per item
        code, limit, count = codes[0], limits[0], {}
        for pair in ranked:
            c = code[pair[0]]
            if c >= 0:
                n = count.get(c, 0)
                if n >= limit:
                    continue
                count[c] = n + 1
            out.append(pair)
            if len(out) == k:
                break
        return out
    taken: list[dict[int, int]] = [{} for _ in groups]
    for pair in ranked:
        item_codes = [code[pair[0]] for code in codes]
        if any(c >= 0 and taken[j].get(c, 0) >= limits[j] for j, c in enumerate(item_codes)):
            continue
        for j, c in enumerate(item_codes):
            if c >= 0:
                taken[j][c] = taken[j].get(c, 0) + 1
        out.append(pair)
        if len(out) == k:
            break
    return out


def select(ranked, k: int, groups: list[np.ndarray] = (), limits: list[int] = (), vectors: np.ndarray | None = None,
           diversity: float = 0.0) -> list[tuple[int, float]]:
    """``k`` items from ``ranked`` ((row, score), best first): ``at_most_per`` the limits and,
    with ``diversity`` > 0 (and unit item ``vectors``), greedily the candidate that maximises
    ``(1 - diversity) x score - diversity x its largest cosine to the items already taken``
    (maximal marginal relevance, Carbonell & Goldstein 1998). Scores are returned unchanged;
    the order is the order of taking."""
    if not diversity or vectors is None:
        return at_most_per(ranked, list(groups), list(limits), k)
    cand = list(ranked)[:DIVERSE_HEAD * k]  # a bounded head: a catalog's vectors gathered per request were gigabytes
    if not cand:
        return []
    rows = np.array([r for r, _ in cand], dtype=np.intp)
    scores = np.array([s for _, s in cand], dtype=np.float64)
    v = np.asarray(vectors[rows], dtype=np.float64)
    codes = [np.asarray(g)[rows] for g in groups]
    closest = np.full(len(cand), -np.inf)  # largest cosine to what is taken (none yet: no penalty)
    available = np.ones(len(cand), dtype=bool)
    taken: list[dict[int, int]] = [{} for _ in groups]
    out = []
    # Linear in the candidates per item taken (no candidates x candidates matrix: a head of
    # thousands would be gigabytes); an item of a group at its limit leaves with the whole group.
    while len(out) < k and available.any():
        value = (1 - diversity) * scores - diversity * np.maximum(closest, 0.0)
        value[~available] = -np.inf
        j = int(np.argmax(value))
        available[j] = False
        for i, c in enumerate(int(code[j]) for code in codes):
            if c >= 0:
                taken[i][c] = taken[i].get(c, 0) + 1
                if taken[i][c] >= limits[i]:
                    available[codes[i] == c] = False
        out.append(cand[j])
        closest = np.maximum(closest, v @ v[j])
    return out
