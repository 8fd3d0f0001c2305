"""online/threads.py: the limit reaches every native pool (BLAS/OpenMP through threadpoolctl,
FAISS's OpenMP), and what it reports is what the pools say. Run in a fresh interpreter so the
pools of this test process are left as they are."""

from __future__ import annotations

import json
import subprocess
import sys

CODE = """
import json, faiss
from threadpoolctl import threadpool_info
from groundrec.online.threads import limit_threads, observed_threads
out = {}
for n in (1, 2, 1):
    reported = limit_threads(n)
    seen = {i["user_api"]: int(i["num_threads"]) for i in threadpool_info()}
    out[len(out)] = {"n": n, "reported": reported, "seen": seen, "faiss": faiss.omp_get_max_threads(),
                     "observed": observed_threads()}
print(json.dumps(out))
"""


def test_limit_threads_sets_and_reports_every_pool():
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True,
                              env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "3"})
    runs = json.loads(r.stdout).values()
    for run in runs:
        n, reported = run["n"], run["reported"]
        assert reported == run["observed"]
        assert reported["faiss"] == run["faiss"] == n  # started at 3 (OMP_NUM_THREADS): the limit set it
        assert "blas" in reported and reported["blas"] == n and run["seen"]["blas"] == n
        assert all(v == n for v in run["seen"].values()), run["seen"]
