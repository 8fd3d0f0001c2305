"""Collaborative item vectors with grounded content as side information: EASE or DLAE,
exact where the version fits its budget, else factorised.

EASE (Steck 2019) scores item j for a user as the sum over the history of B[i, j], with
B = I - P / diag(P), P = (X'X + reg I)^-1, diag(B) = 0 and X the users x items interaction
matrix; DLAE (Steck 2020) is its generalisation with input dropout (``ease``). B is
fitted in closed form on the *head*: the ``max_dense_items`` most-interacted
items (20,000 by default, ~3 GB of float64 while fitting), which carry most interactions of
a catalog. When the version it makes fits ``full_rank_max_mb`` (``full_rank_fits``), the
model is exact: a head item's query-side vector is its row of B and its item-side vector
the unit vector of its column, so a score is exactly EASE's. Otherwise, and for a narrower
width (``CollabModel.truncated``), a rank-r truncated SVD of B (scikit-learn's randomized
SVD) splits it into a *query-side* vector per item (U S, summed over a history) and an
*item-side* vector (V, what the index holds). Either way retrieval stays one
nearest-neighbour search. (EASE restricted to the
top-r singular subspace of X itself was tried in development and ranked far worse on a dense
catalog: the important directions of B are not X's largest ones.)

Every other item (never interacted with, or in the tail beyond the head) gets both vectors
from a ridge map of its content embedding onto the head items' vectors, so a new item still
ranks by what it looks like to buyers of similar items. Pure functions of arrays: the offline
job learns on its whole window, ``groundrec eval`` on each split's training part only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from groundrec.shared.scoring.collab import Projection
from groundrec.shared.scoring.item_side import ItemSide
from groundrec.shared.errors import UserError


@dataclass
class CollabModel:
    query: np.ndarray  # (items x rank) float32: summed over a history, then unit-normalised
    item: np.ndarray  # (items x rank) float32: scored against the query
    fitted: np.ndarray  # bool per item: in the EASE head; the others' vectors come from content
    info: dict = field(default_factory=dict)
    # An exact model's leading right singular vectors of B (head x r), as far as computed:
    # what its narrower widths are cut from (``truncated``).
    basis: np.ndarray | None = field(default=None, repr=False, compare=False)
    seed: int = 0  # of the randomized SVDs
    # content -> [query, item] (d x 2 rank): how an item nobody interacted with got its vectors
    # (the ridge map, scaled as ``item``); a live item's vectors are made by it (None: no map).
    content_map: np.ndarray | None = field(default=None, repr=False, compare=False)
    _item_side: ItemSide | None = field(default=None, repr=False, compare=False)

    @property
    def item_side(self) -> ItemSide:
        """``item`` as it is scored (``ItemSide``: an exact model's head gathered, not multiplied),
        built on first use."""
        if self._item_side is None:
            self._item_side = ItemSide(self.item)
        return self._item_side

    @property
    def rank(self) -> int:
        return int(self.query.shape[1])

    @property
    def exact(self) -> bool:
        """At full rank: the head's rows of B beside unit item vectors (``fit``'s exact form)."""
        return bool(self.info.get("full_rank"))

    def truncated(self, rank: int) -> "CollabModel":
        """The leading ``rank`` factors (a factorised model's come sorted by singular value; an
        exact model is rotated onto B's leading right singular vectors, which gives the
        factorised model of that rank, content-mapped rows included), rescaled as ``fit``
        scales its item-side vectors, so a weight means the same at every rank. At or beyond
        the model's own rank: the model itself."""
        if rank >= self.rank:
            return self
        cmap = self.content_map
        if self.exact:
            basis = self.leading_basis(rank)
            query, item = self.query @ basis, self.item @ basis
            if cmap is not None:  # the map's rows turn as the items' rows do
                cmap = np.hstack([cmap[:, :self.rank] @ basis, cmap[:, self.rank:] @ basis])
        else:
            query, item = self.query[:, :rank].copy(), self.item[:, :rank].copy()
            if cmap is not None:
                cmap = np.hstack([cmap[:, :rank], cmap[:, self.rank:self.rank + rank]])
        scale = float(np.linalg.norm(item[self.fitted], axis=1).mean()) if self.fitted.any() else 0.0
        if scale > 0:
            item /= scale
            if cmap is not None:
                cmap[:, rank:] /= scale
        return CollabModel(query, item, self.fitted, {**self.info, "rank": rank, "full_rank": False,
                                                      "model": model_name(float(self.info.get("dropout", 0.0)))},
                           seed=self.seed, content_map=cmap)

    def leading_basis(self, rank: int) -> np.ndarray:
        """An exact model's ``rank`` leading right singular vectors of B: one randomized SVD at
        the widest rank asked for so far, narrower ones its leading columns (so a ladder of
        widths asked widest first costs one SVD)."""
        if self.basis is None or self.basis.shape[1] < rank:
            self.basis = factorize(self.query[self.fitted], rank, self.seed)[1]
        return self.basis[:, :rank]

    def interactions_only(self) -> "CollabModel":
        """The same model without the content-mapped rows: pure collaborative filtering."""
        keep = self.fitted[:, None]
        return CollabModel(self.query * keep, self.item * keep, self.fitted, {**self.info, "items_from_content": 0},
                           self.basis, self.seed)


def interaction_matrix(histories: list[np.ndarray], n_items: int,
                       weights: list[np.ndarray] | None = None) -> sp.csr_matrix:
    """Users x items, 1 where the user interacted with the item (repeats count once); with
    ``weights`` (one per history entry, ``decay_weights``) the largest of its entries' weights,
    all scaled to a mean square of 1: X'X keeps its scale, so ``reg`` means what it means without."""
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    cols = np.concatenate(histories) if histories else np.zeros(0, np.int64)
    if weights is None:
        x = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(histories), n_items))
        x.data[:] = 1.0
        return x
    w = np.concatenate(weights).astype(np.float32) if histories else np.zeros(0, np.float32)
    key = rows.astype(np.int64) * n_items + cols
    order = np.lexsort((-w, key))  # per (user, item) its largest weight first
    first = order[np.r_[True, np.diff(key[order]) != 0]] if len(order) else order
    kept = w[first] * np.float32(np.sqrt(len(first) / max(float(np.square(w[first], dtype=np.float64).sum()), 1e-300)))
    return sp.csr_matrix((kept, (rows[first], cols[first])), shape=(len(histories), n_items))


def decay_weights(times: list[np.ndarray], half_life_days: float) -> list[np.ndarray] | None:
    """Each interaction's weight in the fit, ``0.5 ** (its age / half_life_days)``, its age in
    days before the newest interaction fitted (so it does not depend on the clock: the job,
    the gate and eval weigh alike); None for 0 (every interaction 1)."""
    if not half_life_days:
        return None
    newest = max((float(t.max()) for t in times if len(t)), default=0.0)
    return [np.power(0.5, (newest - np.asarray(t, np.float64)) / (half_life_days * 86_400.0)) for t in times]


def head_items(counts: np.ndarray, max_dense_items: int) -> np.ndarray:
    """The rows EASE fits: interacted items, the most interacted first, at most the budget."""
    warm = np.flatnonzero(counts > 0)
    if len(warm) > max_dense_items:
        warm = warm[np.argsort(-counts[warm], kind="stable")[:max_dense_items]]
    return np.sort(warm)


def ease(x: sp.csr_matrix, reg: float, dropout: float = 0.0) -> np.ndarray:
    """The item-item matrix B (dense float32, items x items) over the columns of ``x``.

    ``dropout`` 0: EASE (Steck 2019), ``B = I - P / diag(P)``, ``P = (G + reg I)^-1``, G = X'X.
    ``dropout`` p > 0: DLAE (Steck 2020, "Autoencoders that don't overfit towards the
    identity"), the closed form of a linear autoencoder trained with input dropout p:
    ``B = I - P Lambda``, ``P = (G + Lambda)^-1``, ``Lambda = diag(reg + p / (1 - p) x G_jj)``,
    so a popular item is regularised more. Its diagonal is set to 0 like EASE's (it only
    scores an item already in the history, which is never recommended, and the factorisation
    then spends no rank on it). P is inverted through its Cholesky factor (LAPACK potrf +
    potri: a third of a general inverse's work) in float32: reg keeps it well conditioned."""
    from scipy.linalg import lapack

    if not 0 <= dropout < 1:
        raise UserError(f"dropout must be in [0, 1), got {dropout}")
    p = np.asarray((x.T @ x).todense(), dtype=np.float32)
    penalty = reg + (dropout / (1 - dropout)) * np.diag(p).astype(np.float64)
    p[np.diag_indices_from(p)] += penalty.astype(np.float32)
    p, info = lapack.spotrf(p, lower=0, overwrite_a=1, clean=1)
    if info == 0:
        p, info = lapack.spotri(p, lower=0, overwrite_c=1)
    if info != 0:
        raise UserError(f"EASE: the regularised Gram matrix is not positive definite (LAPACK info {info}); raise reg")
    p = np.triu(p)
    p += np.triu(p, 1).T  # potri fills the upper triangle only
    if dropout:
        p *= -penalty.astype(np.float32)  # column j times -Lambda_j (the identity is on the diagonal)
    else:
        p /= -np.diag(p).copy()  # column j divided by -P[j, j]
    p[np.diag_indices_from(p)] = 0.0
    return p


def model_name(dropout: float, full_rank: bool = False) -> str:
    form = "full rank" if full_rank else "factorised"
    return f"DLAE (dropout {dropout:g}), {form}" if dropout else f"EASE, {form}"


def full_rank_fits(head: int, n_items: int, dim: int, budget_mb: float) -> bool:
    """Whether an exact (full-rank) model of ``head`` items fits ``budget_mb``: what a version
    then holds, float32, is its collaborative vectors (query and item side, items x head each)
    and its index rows (items x (dim + head)), so 4 x items x (dim + 3 x head) bytes. (Fitting
    B itself, head x head, is bounded by ``max_dense_items`` either way.)"""
    return head >= 2 and 4 * n_items * (dim + 3 * head) <= budget_mb * 2**20


def factorize(b: np.ndarray, rank: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Query-side (U S) and item-side (V) factors of B's best rank-``rank`` approximation."""
    from sklearn.utils.extmath import randomized_svd

    u, s, vt = randomized_svd(b, rank, n_oversamples=16, n_iter=6, random_state=seed)
    return u * s, vt.T


def content_map(content: np.ndarray, target: np.ndarray, ridge: float = 1.0) -> np.ndarray:
    """Ridge regression ``content -> target`` (d x r): what an unfitted item's vectors should be."""
    gram = content.T @ content
    gram[np.diag_indices_from(gram)] += ridge
    return np.linalg.solve(gram, content.T @ target)


def fit(histories: list[np.ndarray], n_items: int, content: np.ndarray | None, rank: int = 128,
        reg: float = 100.0, seed: int = 0, max_dense_items: int = 20_000, dropout: float = 0.0,
        full_rank_max_mb: float = 0.0, weights: list[np.ndarray] | None = None) -> CollabModel:
    """Learn the model from training histories (rows of the catalog). ``content``: the items'
    unit content vectors (rows of zeros for items without one), or None: then items outside
    the head get zero vectors (they are never recommended by this part). Exact (full rank)
    when ``full_rank_fits`` the budget, else factorised at ``rank`` (``full_rank_max_mb`` is 0 by default
    here; the job's and eval's grids, ``CollabGrid``, pass theirs through ``fit_grid``: 2048 by default)."""
    started = time.perf_counter()
    x = interaction_matrix(histories, n_items, weights)
    counts = np.asarray((x > 0).sum(axis=0)).ravel()
    head = head_items(counts, max_dense_items)
    exact = full_rank_fits(len(head), n_items, content.shape[1] if content is not None else 0, full_rank_max_mb)
    rank = len(head) if exact else max(1, min(rank, len(head) - 1))
    query = np.zeros((n_items, rank), np.float32)
    item = np.zeros_like(query)
    if exact:  # a head item's row of B beside the unit vector of its column: scores are EASE's
        query[head] = ease(x[:, head], reg, dropout)
        item[head, np.arange(rank)] = 1.0
    elif len(head) >= 2:
        query[head], item[head] = factorize(ease(x[:, head], reg, dropout), rank, seed)
    fitted = np.zeros(n_items, bool)
    fitted[head] = len(head) >= 2
    info = {"model": model_name(dropout, exact), "rank": rank, "full_rank": exact, "reg": float(reg),
            "dropout": float(dropout), "users": int(x.shape[0]), "interactions": int(x.nnz),
            "items_with_interactions": int((counts > 0).sum()), "head_items": int(fitted.sum()),
            "max_dense_items": int(max_dense_items), "items_from_content": 0}
    cmap = None
    if content is not None and fitted.any():
        has_content = np.linalg.norm(content, axis=1) > 0
        train, rest = fitted & has_content, ~fitted & has_content
        if train.sum() >= 2:
            maps = content_map(content[train].astype(np.float64), np.hstack([query[train], item[train]]))
            cmap = maps.astype(np.float32)
        if train.sum() >= 2 and rest.any():
            rest_rows = np.flatnonzero(rest)
            for start in range(0, len(rest_rows), 65_536):  # float32 blocks: bounded memory at 1M items
                rows = rest_rows[start:start + 65_536]
                mapped = np.asarray(content[rows], dtype=np.float32) @ maps.astype(np.float32)
                query[rows], item[rows] = mapped[:, :rank], mapped[:, rank:]
            info["items_from_content"] = int(rest.sum())
    # One global scale: a head item-side vector has norm 1 on average, so the weight that
    # mixes these scores with content cosines means the same on every catalog.
    scale = float(np.linalg.norm(item[fitted], axis=1).mean()) if fitted.any() else 0.0
    if scale > 0:
        item /= scale
        if cmap is not None:
            cmap[:, rank:] /= scale
    info["fit_seconds"] = round(time.perf_counter() - started, 3)
    return CollabModel(query, item, fitted, info, seed=seed, content_map=cmap)


def fit_grid(histories: list[np.ndarray], n_items: int, content: np.ndarray | None, grid, reg: float,
             dropout: float = 0.0, seed: int = 0, weights: list[np.ndarray] | None = None) -> CollabModel:
    """``fit`` with a collaborative grid's rank, head and full-rank budget (``config.CollabGrid``):
    how the learn stage, the gate and ``groundrec eval`` fit every model."""
    return fit(histories, n_items, content, grid.rank, reg, seed, grid.max_dense_items, dropout,
               grid.full_rank_max_mb, weights)


def fit_projection(items: np.ndarray | list[np.ndarray], profiles: np.ndarray, dim: int,
                   chunk: int = 65_536) -> Projection:
    """Scores ``p . x`` kept as well as ``dim`` dimensions can for profiles like ``profiles``:
    with S the square root of their second-moment matrix, the top ``dim`` right singular
    vectors W of ``items @ S`` give ``item = S W`` and ``query = S^-1 W``, which minimises the
    squared score error summed over items and expected over those profiles (a small ridge
    keeps S invertible). ``items``: full-width item vectors (rows), or their column blocks side
    by side (never stacked whole); read in chunks, so a 1M-item catalog costs one
    (d + rank)^2 matrix."""
    blocks = items if isinstance(items, (list, tuple)) else [items]
    width = sum(b.shape[1] for b in blocks)
    if dim >= width:
        raise UserError(f"projection to {dim} dimensions from {width}: nothing to save")
    p = np.asarray(profiles, dtype=np.float64)
    second = p.T @ p / max(len(p), 1)
    second[np.diag_indices_from(second)] += 1e-4 * max(np.trace(second), 1e-12) / width
    values, vectors = np.linalg.eigh(second)
    root = (vectors * np.sqrt(values)) @ vectors.T
    root_inv = (vectors / np.sqrt(values)) @ vectors.T
    gram = np.zeros((width, width))
    for start in range(0, len(blocks[0]), chunk):
        rows = np.hstack([np.asarray(b[start:start + chunk], dtype=np.float64) for b in blocks]) @ root
        gram += rows.T @ rows
    energy, basis = np.linalg.eigh(gram)
    top = np.argsort(-energy)[:dim]
    kept = float(energy[top].sum() / energy.sum()) if energy.sum() > 0 else 1.0
    return Projection((root @ basis[:, top]).astype(np.float32), (root_inv @ basis[:, top]).astype(np.float32),
                      {"dim": int(dim), "from": int(width), "profiles": int(len(p)), "energy_kept": round(kept, 6),
                       "method": "profile-weighted truncated SVD"})
