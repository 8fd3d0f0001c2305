"""Learn stage of the offline job: the collaborative part of a hybrid version.

From the interactions (mapped onto the items being published) and the items' content
embeddings: hold out each sampled user's last new item, choose the collaborative model
(EASE or DLAE, its regularisation, the query's half-life) and the hybrid weight on those
users in the stages of ``choose_hybrid`` (recall@K of content alone, collaborative alone and
the hybrid, all recorded; the smallest weight within one standard error of the best, 0
meaning content only), then the narrowest rank within ``rank_tolerance``, then whether the index can
be projected to the content's width within the same tolerance (``collab.Projection``), then
refit on every interaction in the window. The hybrid score is exactly what the service
computes: cosine of the mean content profile + weight x the collaborative score
(``offline.collab``), through the projection when there is one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from groundrec.offline import collab
from groundrec.offline.config import CollabConfig, CollabGrid
from groundrec.offline.selection import Search, coarse_to_fine, search
from groundrec.offline.interactions import Interactions
from groundrec.shared.errors import UserError
from groundrec.shared.scoring.collab import collab_queries, hybrid_queries, index_rows
from groundrec.shared.scoring.popularity import counts_of_rows, new_items
from groundrec.shared.scoring.profiles import latest, mean_profiles
from groundrec.shared.scoring.ranking import lift, target_in_top_k, target_in_top_k_of_blends, top_k_matrix

K = 20
CHUNK = 256  # validation users scored at a time
PROJECTION_USERS = 20_000  # most training users whose profiles fit the projection


@dataclass
class Learned:
    model: collab.CollabModel | None  # None: validation chose weight 0, the version is content only
    weight: float
    report: dict  # what the manifest records: as ``collab`` for a hybrid, as ``learn`` otherwise
    projection: collab.Projection | None = None  # a hybrid indexed at the content's width
    half_life: float = 0.0  # recency of the collaborative query, in items (0: none)
    fresh_weight: float = 0.0  # added to the score of an item with no interaction in the window
    counts: np.ndarray | None = None  # interactions per published item in the window (what "new" means)
    fresh_slots: int = 0  # of each list, the places kept for new items (the version's default)

    @property
    def hybrid(self) -> bool:
        return self.model is not None


def histories_in_time_order(inter: Interactions) -> list[np.ndarray]:
    """Each user's item rows, oldest first (users with no interaction are left out)."""
    order = np.lexsort((inter.ts, inter.users))
    users, items = inter.users[order], inter.items[order]
    cuts = np.flatnonzero(np.diff(users)) + 1
    return [h for h in np.split(items, cuts) if len(h)]


def in_window(inter: Interactions, days: float | None) -> Interactions:
    if days is None or len(inter.ts) == 0:
        return inter
    keep = inter.ts >= inter.ts.max() - days * 86_400
    return Interactions(inter.users[keep], inter.items[keep], inter.ts[keep], inter.user_ids, inter.dropped_unknown_items)


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


def _hits(scores: np.ndarray, seen: list[np.ndarray], targets: np.ndarray) -> np.ndarray:
    return target_in_top_k(scores, seen, targets, K)


def _content_profiles(content: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
    return mean_profiles(content, [latest(h) for h in histories])


def hybrid_profiles(content: np.ndarray, model: collab.CollabModel, histories: list[np.ndarray],
                    half_life: float = 0.0) -> np.ndarray:
    """Full-width hybrid profiles, as the service builds them: the mean content profile beside
    the collaborative query (both over the latest items)."""
    recent = [latest(h) for h in histories]
    return hybrid_queries(mean_profiles(content, recent), collab_queries(model.query, recent, half_life), None)


def _projection_sample(histories: list[np.ndarray], seed: int) -> list[np.ndarray]:
    usable = [h for h in histories if len(h)]
    if len(usable) <= PROJECTION_USERS:
        return usable
    return [usable[i] for i in np.sort(np.random.default_rng(seed).choice(len(usable), PROJECTION_USERS, replace=False))]


def project(content: np.ndarray, model: collab.CollabModel, weight: float, histories: list[np.ndarray],
            seed: int = 0, half_life: float = 0.0) -> collab.Projection:
    """The projection of a hybrid to the content's width, fitted on these users' profiles."""
    return collab.fit_projection([content, weight * model.item],
                                 hybrid_profiles(content, model, _projection_sample(histories, seed), half_life),
                                 content.shape[1])


def choose_hybrid(grid: CollabGrid, score: Callable[[list[dict]], list[np.ndarray]], section: str) -> Search:
    """The one choice of the collaborative model and its weight, for the job and for eval: the
    smallest weight (0: content alone) within one standard error of the best validation score
    over reg x half_life x weight with the first dropout (EASE by default), then the dropout
    grid at the chosen reg only (each dropout value costs one fit, not one per reg), then reg
    and half_life each refined halfway to their neighbours (two fits, four scoring passes):
    a decade apart, the grid alone lands up to a factor of 3 from the best reg
    (``selection.coarse_to_fine``)."""
    return coarse_to_fine({"reg": grid.reg, "dropout": grid.dropout, "half_life": grid.half_life, "weight": grid.weight},
                          score, later="dropout", at="reg", refine=("reg", "half_life") if grid.refine else (),
                          simplest="weight", widenings=grid.widenings, relevant=lambda p: p if p["weight"] else {},
                          limits={"dropout": (0.0, 1.0)}, section=section)


def _dropout(dropout: float) -> str:
    return f" dropout={dropout:g}" if dropout else ""


def _hl(half_life: float) -> str:
    """The half-life's part of a validation score's name (none when the query has no decay)."""
    return f" half_life={half_life:g}" if half_life else ""


def smaller_ranks(rank: int) -> list[int]:
    """The narrower ranks tried after the full one, narrowest first: a quarter and a half."""
    return sorted({r for r in (rank // 4, rank // 2) if 1 <= r < rank})


def narrowest(rank: int, score: float, tolerance: float, score_at: Callable[[int], float],
              projected_score: Callable[[int], float] | None) -> tuple[int, bool, float]:
    """The hybrid's width, one rule for the job and for eval: the narrowest of ``smaller_ranks``
    whose validation score (``score_at(rank)``) is within ``tolerance`` of the full rank's
    ``score`` (else the full rank), then whether that rank projected to the content's width
    (``projected_score(rank)``; None: not tried) is too. Returns the rank, whether projected,
    and the validation score of what was chosen."""
    floor = score * (1 - tolerance)
    for r in smaller_ranks(rank):
        if (at := score_at(r)) >= floor:
            rank, score = r, at
            break
    if projected_score is not None and (at := projected_score(rank)) >= floor:
        return rank, True, at
    return rank, False, score


def _validation_hits(model: collab.CollabModel, content: np.ndarray, profiles: np.ndarray, held: list[np.ndarray],
                     targets: np.ndarray, weights: list[float], half_life: float = 0.0) -> dict[object, np.ndarray]:
    """Whether each held-out user's target is in the top K of content alone, the collaborative
    part alone and the hybrid at each weight (keys "content", "collaborative" and each weight)."""
    hits: dict[object, list] = {"content": [], "collaborative": [], **{w: [] for w in weights}}
    for start in range(0, len(held), CHUNK):  # bounded memory: CHUNK x items scores at a time
        part = slice(start, start + CHUNK)
        content_part = profiles[part] @ content.T
        cf = collab_queries(model.query, [latest(h) for h in held[part]], half_life) @ model.item.T
        hits["content"].append(_hits(content_part.copy(), held[part], targets[part]))
        hits["collaborative"].append(_hits(cf.copy(), held[part], targets[part]))
        for weight, hit in zip(weights, target_in_top_k_of_blends(content_part, cf, held[part], targets[part],
                                                                 weights, K)):
            hits[weight].append(hit)
    return {key: np.concatenate(value) for key, value in hits.items()}


def _published_hits(model: collab.CollabModel, content: np.ndarray, profiles: np.ndarray, held: list[np.ndarray],
                    targets: np.ndarray, weight: float, projection: collab.Projection | None, half_life: float = 0.0,
                    new: np.ndarray | None = None,
                    fresh: tuple[tuple[float, int], ...] = ((0.0, 0),)) -> dict[tuple[float, int], np.ndarray]:
    """``_validation_hits``'s hybrid at ``weight``, scored as the service scores it (projected
    profiles against the projected index when there is a projection), for each (freshness
    prior weight added to the new items ``new``, places kept for them) in turn."""
    index = index_rows(content, weight * model.item, projection.item if projection is not None else None)
    hits: dict[tuple[float, int], list] = {point: [] for point in fresh}
    for start in range(0, len(held), CHUNK):
        part = slice(start, start + CHUNK)
        searched = hybrid_queries(profiles[part], collab_queries(model.query, [latest(h) for h in held[part]],
                                                                 half_life),
                                  projection.query if projection is not None else None)
        scores = searched @ index.T
        for fw, slots in fresh:
            scored = lift(scores.copy(), [fw] * len(scores), new)
            if slots:
                top = top_k_matrix(scored, K, held[part], new, slots)
                hits[fw, slots].append((top == targets[part][:, None]).any(axis=1))
            else:
                hits[fw, slots].append(_hits(scored, held[part], targets[part]))
    return {point: np.concatenate(h) for point, h in hits.items()}


def learn(inter: Interactions, content: np.ndarray, cfg: CollabConfig, seed: int = 0) -> Learned:
    started = time.perf_counter()
    inter = in_window(inter, cfg.window_days)
    histories = histories_in_time_order(inter)
    if len(histories) < 2 or len(np.unique(inter.items)) < 2:
        raise UserError(f"interactions: {len(inter.items)} usable rows from {len(histories)} users; a hybrid version "
                         "needs interactions with at least 2 published items (check interactions.item_column matches "
                         "the catalog ids)")
    n = len(content)
    train, users, targets = hold_out_last(histories, cfg.valid_users, seed)
    tuned: dict = {}
    # No validation user: content only, nothing scored.
    reg, dropout, weight, half_life, rank, projected, chosen_score, found = (cfg.reg[0], cfg.dropout[0], 0.0, 0.0,
                                                                             cfg.rank, False, None, None)
    fresh_weight, fresh_slots, fresh_found, slots_found = 0.0, 0, None, None
    if users:
        held = [train[u] for u in users]
        profiles = _content_profiles(content, held)
        fits: dict[tuple[float, float], collab.CollabModel] = {}

        def fitted(reg: float, dropout: float) -> collab.CollabModel:
            # The grid is scored one model at a time: keep the three fits used last (each is
            # 2 x items x rank floats, 1 GB at 1M items), not one per grid point; three, so the
            # chosen model outlives the two fits of the refinement around it.
            if (reg, dropout) not in fits:
                while len(fits) >= 3:
                    fits.pop(next(iter(fits)))
                fits[reg, dropout] = collab.fit(train, n, content, cfg.rank, reg, seed, cfg.max_dense_items, dropout)
            fits[reg, dropout] = fits.pop((reg, dropout))  # the most recently used last
            return fits[reg, dropout]

        def score(points: list[dict]) -> list[np.ndarray]:
            out = {}
            model_of = lambda p: (p["reg"], p["dropout"], p["half_life"])  # noqa: E731
            for reg, dropout, hl in dict.fromkeys(map(model_of, points)):
                weights = [p["weight"] for p in points if model_of(p) == (reg, dropout, hl)]
                hits = _validation_hits(fitted(reg, dropout), content, profiles, held, targets, weights, hl)
                name = f"reg={reg:g}{_dropout(dropout)}{_hl(hl)}"
                tuned["content"] = float(hits["content"].mean())
                tuned[f"collaborative {name}"] = float(hits["collaborative"].mean())
                for w in weights:
                    tuned[f"hybrid {name} weight={w:g}"] = float(hits[w].mean())
                    out[(reg, dropout, hl, w)] = hits[w]
            return [out[(*model_of(p), p["weight"])] for p in points]

        # The smallest weight (0: content alone) within one standard error of the best score.
        found = choose_hybrid(cfg, score, "collab")
        reg, dropout, half_life, weight = (found.chosen[k] for k in ("reg", "dropout", "half_life", "weight"))
        chosen_score = found.score
        if weight:  # a hybrid: the narrowest rank that scores within rank_tolerance of the full one
            chosen_fit = fitted(reg, dropout)
            name = f"reg={reg:g}{_dropout(dropout)}{_hl(half_life)}"

            def score_at(r: int) -> float:
                hits = _validation_hits(chosen_fit.truncated(r), content, profiles, held, targets, [weight], half_life)
                tuned[f"collaborative {name} rank={r}"] = float(hits["collaborative"].mean())
                tuned[f"hybrid {name} rank={r} weight={weight:g}"] = float(hits[weight].mean())
                return float(hits[weight].mean())

            projections: dict[int, collab.Projection] = {}

            def projected_score(r: int) -> float:
                ranked = chosen_fit.truncated(r)
                projections[r] = project(content, ranked, weight, train, seed, half_life)
                hits = _published_hits(ranked, content, profiles, held, targets, weight, projections[r], half_life)[0.0, 0]
                key = f"hybrid {name} rank={r} weight={weight:g} projected to {content.shape[1]}"
                tuned[key] = float(hits.mean())
                return tuned[key]

            rank, projected, chosen_score = narrowest(cfg.rank, chosen_score, cfg.rank_tolerance, score_at,
                                                      projected_score if cfg.project else None)
            # Last, the freshness prior on the published scoring: how much a new item (no
            # interaction in the training part) is lifted so that its content can place it.
            new = new_items(counts_of_rows(train, n))

            def fresh_scores(points: list[dict]) -> list[np.ndarray]:
                fresh = tuple((p.get("fresh_weight", fresh_weight), p.get("fresh_slots", 0)) for p in points)
                hits = _published_hits(chosen_fit.truncated(rank), content, profiles, held, targets, weight,
                                       projections.get(rank) if projected else None, half_life, new, fresh)
                for fw, slots in fresh:
                    tuned[f"published fresh_weight={fw:g}" + (f" fresh_slots={slots}" if slots else "")] = float(
                        hits[fw, slots].mean())
                return [hits[point] for point in fresh]

            # The largest lift whose validation recall is within one standard error of the best
            # (new items get all the exposure that costs no measurable recall), then as many
            # places kept for new items as that rule allows.
            fresh_found = search({"fresh_weight": cfg.fresh_weight}, fresh_scores, simplest="fresh_weight",
                                 simplest_is_largest=True, widenings=cfg.widenings, section="collab")
            fresh_weight = fresh_found.chosen["fresh_weight"]
            slots_found = search({"fresh_slots": cfg.fresh_slots}, fresh_scores, simplest="fresh_slots",
                                 simplest_is_largest=True, section="collab")
            fresh_slots = int(slots_found.chosen["fresh_slots"])
    # Weight 0 scores exactly as content alone: publish content only (no refit, an index no
    # wider than the embeddings) and keep the report of what was tried.
    model = projection = None
    if weight:
        model = collab.fit(histories, n, content, cfg.rank, reg, seed, cfg.max_dense_items, dropout)
        model = model.truncated(rank)
        projection = project(content, model, weight, histories, seed, half_life) if projected else None
    iso = lambda t: datetime.fromtimestamp(int(t), timezone.utc).isoformat()  # noqa: E731
    report = {
        **(model.info if model else {"model": collab.model_name(dropout), "rank": cfg.rank, "reg": float(reg),
                                     "dropout": float(dropout)}),
        "weight": float(weight), "query_half_life": float(half_life) if weight else 0.0,
        "fresh_weight": float(fresh_weight), "fresh_slots": fresh_slots, "hybrid": model is not None,
        "projection": projection.info if projection else None,
        "window": {"days": cfg.window_days, "from": iso(inter.ts.min()), "to": iso(inter.ts.max()),
                   "interactions": int(len(inter.items)), "users": len(histories),
                   "unknown_items_dropped": int(inter.dropped_unknown_items)},
        "validation": {"users": len(users), "metric": f"recall@{K} of each user's last new item",
                       "chosen": {"reg": float(reg), "dropout": float(dropout), "half_life": float(half_life),
                                  "weight": float(weight),
                                  "rank": rank, "projected": projected, "score": chosen_score}, "scores": tuned,
                       "grid": found.axes if found else {"reg": cfg.reg, "dropout": cfg.dropout,
                                                         "half_life": cfg.half_life, "weight": cfg.weight},
                       "widened": (found.widened if found else []) + (fresh_found.widened if fresh_found else []),
                       "grid_warnings": (found.warnings if found else []) + (fresh_found.warnings if fresh_found else []),
                       "fresh": fresh_found.report() if fresh_found else None,
                       "fresh_slots": slots_found.report() if slots_found else None},
        "learn_seconds": round(time.perf_counter() - started, 2),
    }
    return Learned(model, float(weight), report, projection, float(half_life) if weight else 0.0, float(fresh_weight),
                   counts_of_rows(histories, n) if model is not None else None, fresh_slots)


def index_vectors(content: np.ndarray, learned: Learned | None) -> np.ndarray:
    """What the index holds: the content embeddings, and for a hybrid the item-side
    collaborative vectors times the weight beside them, projected to the content's width when
    validation allowed it."""
    if learned is None or not learned.hybrid:
        return content
    return index_rows(content, learned.weight * learned.model.item,
                      learned.projection.item if learned.projection is not None else None)
