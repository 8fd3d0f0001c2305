"""Publish a synthetic version of any size, for benchmarks that need a large catalog served:
clustered unit 384-d vectors (as `bench_online.py ann` draws them), indexed by the offline
index stage (HNSW above `flat_max_items`, efSearch tuned to the recall target), written and
published through the artifact contract like a job's version (no encoder: /search is not
served). Also writes histories.jsonl: users whose 1-20 items come from one or two clusters.

    python benchmarks/synthetic_version.py OUT [--items 1000000] [--users 5000]
    python benchmarks/bench_http.py --artifacts OUT/art --histories OUT/histories.jsonl --skip-ceiling
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa

from groundrec.offline.config import IndexConfig
from groundrec.offline.index import build_index
from groundrec.offline.publish import write_version_files
from groundrec.shared import artifact
from groundrec.shared.version_info import code_version

DIM = 384


def clustered_vectors(n: int, clusters: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(size=(clusters, DIM)).astype(np.float32)
    label = rng.integers(0, clusters, n)
    x = centres[label]
    x += noise * rng.normal(size=x.shape).astype(np.float32) / np.sqrt(DIM) * np.linalg.norm(centres, axis=1).mean()
    faiss.normalize_L2(x)
    return x, label


def histories(label: np.ndarray, users: int, rng: np.random.Generator) -> list[list[str]]:
    by_cluster: dict[int, np.ndarray] = {}
    order = np.argsort(label, kind="stable")
    starts = np.searchsorted(label[order], np.arange(label.max() + 2))
    out = []
    for _ in range(users):
        picked: list[int] = []
        for c in rng.integers(0, label.max() + 1, rng.integers(1, 3)):
            members = by_cluster.setdefault(int(c), order[starts[c]:starts[c + 1]])
            if len(members):
                picked += rng.choice(members, size=min(len(members), int(rng.integers(1, 11))), replace=False).tolist()
        out.append([f"s{i:08d}" for i in picked])
    return [h for h in out if h]


def publish_synthetic(out: Path, items: int, users: int, clusters: int, noise: float, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    vectors, label = clustered_vectors(items, clusters, noise, rng)
    started = time.perf_counter()
    index, report = build_index(vectors, IndexConfig())
    print(f"index: {report.kind} over {items} items, recall@{report.k} {report.recall_at_k:.3f}, "
          f"built in {time.perf_counter() - started:.1f} s", flush=True)
    ids = [f"s{i:08d}" for i in range(items)]
    table = pa.table({"item_id": ids, "title": [f"synthetic item {i} (cluster {c})" for i, c in enumerate(label)],
                      "grounded": pa.array([True] * items)})
    root = out / "art"
    with artifact.publishing(root) as pub:  # the lock, staging and checksums, like the job's versions
        write_version_files(pub.staged, index, vectors, table, pa.table({"item_id": pa.array([], pa.string())}))
        pub.publish(artifact.Manifest(
            version=pub.version, created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            code_version=code_version(), models={"synthetic": {"clusters": clusters, "noise": noise, "seed": seed}},
            prompt={}, text_template="", dim=DIM, counts={"indexed": items}, index=report.to_dict(),
            timings_s={"index": report.build_seconds}, catalog_text_columns=["title"]))
    path = out / "histories.jsonl"
    path.write_text("".join(json.dumps({"history": h}) + "\n" for h in histories(label, users, rng)))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--clusters", type=int, default=10_000)
    ap.add_argument("--noise", type=float, default=1.0)
    args = ap.parse_args()
    path = publish_synthetic(args.out, args.items, args.users, args.clusters, args.noise)
    print(f"published under {args.out / 'art'}; histories: {path}")


if __name__ == "__main__":
    main()
