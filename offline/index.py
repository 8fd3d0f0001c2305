"""Index stage: the FAISS index that fits the catalog, with its measured recall.

Exact inner product (``IndexFlatIP``) up to ``flat_max_items``; above it an HNSW graph
(``auto``; fastest queries, slower to build) or an IVF-Flat index (``ivf``; fast to build, and
what faiss-gpu builds). The search-time knob (HNSW ``efSearch``, IVF ``nprobe``) is set to the
smallest value that reaches ``target_recall`` @K against exact search on profile-like queries,
and written into the index file, so the online tier searches with it.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import faiss
import numpy as np

from groundrec.offline.config import IndexConfig
from groundrec.shared.errors import UserError

TRAIN_POINTS_PER_LIST = 64


@dataclass
class IndexReport:
    kind: str
    factory: str
    n_items: int
    dim: int
    nlist: int | None
    nprobe: int | None
    recall_at_k: float
    k: int
    recall_sample: int
    build_seconds: float
    on_gpu: bool
    ef_search: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _gpu_available(cfg: IndexConfig) -> bool:
    return cfg.use_gpu == "auto" and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def choose_nlist(n: int) -> int:
    """~sqrt(n) lists (1,000 for 1M items), at least 39 training points per list (FAISS's
    minimum). More lists search faster but train slower; nprobe is then tuned for recall."""
    return int(max(1, min(math.sqrt(n), n // 39)))


PROFILE_SIZES = (1, 2, 3, 5)


def profile_queries(vectors: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` profile-like queries: normalised means of 1, 2, 3 or 5 random items (equal shares).
    Items alone flatter an index (an item finds itself); means of several items sit between
    clusters and are the hard case, so the tuned knob must hold for them too."""
    sizes = np.resize(np.array(PROFILE_SIZES), m)
    out = np.empty((m, vectors.shape[1]), dtype=np.float32)
    for size in PROFILE_SIZES:
        rows = np.flatnonzero(sizes == size)
        out[rows] = vectors[rng.integers(0, len(vectors), (len(rows), size))].sum(axis=1)
    out += 1e-3 * rng.standard_normal(out.shape).astype(np.float32)  # a single item: not exactly itself
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def tied_recall(approx: np.ndarray, kth: np.ndarray, queries: np.ndarray, vectors: np.ndarray) -> float:
    """recall@k where a returned item counts when its exact score reaches the exact k-th score
    (``kth``, per query): an item tied with the k-th is as good an answer (identical texts
    share a vector; counted by id, a catalog of such groups read as recall 0.46, and HNSW's
    efSearch climbed to its ceiling for nothing)."""
    valid = approx >= 0
    scores = np.einsum("qd,qkd->qk", queries, vectors[np.where(valid, approx, 0)])
    hits = valid & (scores >= kth[:, None] - 1e-5 * np.maximum(1.0, np.abs(kth[:, None])))
    return float(hits.sum() / approx.size)


def _smallest_meeting(recall_with, start: int, limit: int, target: float) -> tuple[int, float]:
    """The smallest knob value in [start, limit] whose recall reaches ``target`` (or ``limit``):
    double until met, then bisect down. Recall grows with the knob. The caller sets the
    returned value on its index (the last probe may have been a smaller one)."""
    low, value = start - 1, start
    recall = recall_with(value)
    while recall < target and value < limit:
        low, value = value, min(value * 2, limit)
        recall = recall_with(value)
    while value - low > 1 and recall >= target:
        mid = (low + value) // 2
        r = recall_with(mid)
        if r >= target:
            value, recall = mid, r
        else:
            low = mid
    return value, recall


def build_index(vectors: np.ndarray, cfg: IndexConfig, seed: int = 0) -> tuple[faiss.Index, IndexReport]:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    if n == 0:
        raise UserError("no vectors to index: every item was skipped")
    started = time.perf_counter()
    kind = cfg.kind if cfg.kind != "auto" else ("flat" if n <= cfg.flat_max_items else "hnsw")
    on_gpu = _gpu_available(cfg)
    k = min(cfg.recall_k, n)
    rng = np.random.default_rng(seed)
    queries = profile_queries(vectors, min(cfg.recall_sample, n), rng)
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
        index.add(vectors)
        report = IndexReport("flat", "Flat", n, d, None, None, 1.0, k, len(queries),
                             time.perf_counter() - started, False)
        return index, report

    exact = faiss.IndexFlatIP(d)
    exact.add(vectors)
    kth = exact.search(queries, k)[0][:, -1]
    del exact

    if kind == "hnsw":
        # No GPU build for HNSW in FAISS; the graph is built on every CPU core.
        index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.hnsw_ef_construction
        index.add(vectors)

        def recall_hnsw(ef: int) -> float:
            index.hnsw.efSearch = ef
            return tied_recall(index.search(queries, k)[1], kth, queries, vectors)

        ef, recall = _smallest_meeting(recall_hnsw, k, max(4096, k), cfg.target_recall)
        index.hnsw.efSearch = ef
        report = IndexReport("hnsw", f"HNSW{cfg.hnsw_m},Flat", n, d, None, None, recall, k, len(queries),
                             time.perf_counter() - started, False, ef_search=ef)
        return index, report

    nlist = choose_nlist(n)
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    train = vectors[rng.choice(n, size=min(n, max(nlist * TRAIN_POINTS_PER_LIST, 10_000)), replace=False)]
    if on_gpu:
        res = faiss.StandardGpuResources()
        gpu = faiss.index_cpu_to_gpu(res, 0, index)
        gpu.train(train)
        gpu.add(vectors)
        index = faiss.index_gpu_to_cpu(gpu)
    else:
        index.train(train)
        index.add(vectors)

    def recall_ivf(p: int) -> float:
        index.nprobe = p
        return tied_recall(index.search(queries, k)[1], kth, queries, vectors)

    nprobe, recall = _smallest_meeting(recall_ivf, 1, nlist, cfg.target_recall)
    index.nprobe = nprobe
    report = IndexReport("ivf", f"IVF{nlist},Flat", n, d, nlist, nprobe, recall, k, len(queries),
                         time.perf_counter() - started, on_gpu)
    return index, report
