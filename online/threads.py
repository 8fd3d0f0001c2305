"""Native thread pools of the serving process, set on purpose: BLAS/OpenMP (threadpoolctl),
FAISS's OpenMP and onnxruntime each get ``n`` threads. One process on two cores with
dozens of request threads, each running an 8-thread BLAS call, collapses; the service
scales with processes (``--workers``) and batches instead."""

from __future__ import annotations

import faiss
from threadpoolctl import threadpool_info, threadpool_limits


def limit_threads(n: int) -> dict[str, int]:
    """Apply the limit to this process and return what each pool now reports."""
    threadpool_limits(n)
    faiss.omp_set_num_threads(n)
    return observed_threads()


def observed_threads() -> dict[str, int]:
    pools: dict[str, int] = {}
    for info in threadpool_info():
        key = info["user_api"]  # blas | openmp
        pools[key] = max(pools.get(key, 0), int(info["num_threads"]))
    pools["faiss"] = int(faiss.omp_get_max_threads())
    return pools
