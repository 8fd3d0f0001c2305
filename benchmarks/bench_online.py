"""Online tier benchmarks, each side by side in one run.

  retrieval  in-process recommend on a published version vs the VLM4Rec reference
             (mean of history vectors, scikit-learn cosine to every item, argsort)
  text       single-query latency: ONNX fp32 / int8 (onnxruntime) vs sentence-transformers
  batch      in-process, one compute thread (as the service runs): users one at a time vs
             recommend_batch in batches of --batch (default 32); identical top-K checked;
             optionally another version (e.g. a hybrid) or the same one with request fields set
             (e.g. a feature turned off) or, for an exact hybrid, the same version scored as
             one product with its index rows (--one-product) in the same alternating rounds, and
             optionally beside a thread that always wants the GIL (--gil-contender), as the
             service's busy event loop does
  serve-memory  memory of `groundrec serve` with a version loaded, process by process (RSS and PSS)
  gemm       the flat index's matrix product, one thread, at several batch sizes: profiles
             times the index's own (items x dim) rows vs times the transposed copy
             (dim x items, contiguous) that the Retriever scores with, and optionally another
             version's (e.g. a hybrid's wider index) in the same rounds
  ann        1,000,000 clustered 384-d vectors: HNSW (or IVF) built by the offline index stage,
             single-query p50/p99 and recall@20 vs exact search

Usage:
  python benchmarks/bench_online.py retrieval --artifacts DIR --interactions FILE
  python benchmarks/bench_online.py text --artifacts DIR
  python benchmarks/bench_online.py batch --artifacts DIR --interactions FILE [--batch 32]
                                          [--compare-artifacts OTHER_DIR] [--gil-contender]
                                          [--compare-request '{"fresh_slots": 0}'] [--one-product] [--timed]
  python benchmarks/bench_online.py serve-memory --artifacts DIR [--workers 2] [--compute thread] [--config serve.yaml]
  python benchmarks/bench_online.py ann [--kind both|hnsw|ivf] [--items 1000000]
  python benchmarks/bench_online.py gemm --artifacts DIR [--batches 1,8,16,32,64] [--compare-artifacts OTHER]
"""

from __future__ import annotations

import argparse
import json
import gc
import os
import sys
import threading
import time

import numpy as np

from groundrec.offline.interactions import seconds
from groundrec.online.loadtest import load_histories
from groundrec.online.profiling import load_sequence
from groundrec.online.retrieve import Retriever
from groundrec.online.schemas import HistoryEntry, UserQuery
from groundrec.online.version import load_version
from groundrec.shared.artifact import VersionFiles
from groundrec.shared.tables import read_table


def _pct(times: list[float]) -> str:
    a = np.array(times) * 1000
    return f"p50 {np.percentile(a, 50):.2f} ms, p99 {np.percentile(a, 99):.2f} ms"


def retrieval(args) -> None:
    from sklearn.metrics.pairwise import cosine_similarity

    version = load_version(args.artifacts)
    vectors = np.asarray(version.vectors)
    histories = [[i for i in h if i in version.row_of] for h in load_histories(args.interactions)]
    histories = [h for h in histories if h]
    k = args.k
    retriever = Retriever(version, fallback="error")
    print(f"{len(histories)} users, {version.index.ntotal} items, index {version.manifest.index['factory']}, k={k}")

    def reference(h):  # the VLM4Rec algorithm as its authors wrote it
        rows = [version.row_of[i] for i in h]
        sims = cosine_similarity(vectors[rows].mean(axis=0, keepdims=True), vectors)[0]
        sims[rows] = -np.inf
        top = np.argsort(-sims)[:k]
        return top, sims[top]

    def agrees(items, ref) -> tuple[bool, bool]:
        """(same ids in the same order, same score sequence: equal up to the order of tied items)"""
        ids, scores = [version.row_of[x.item_id] for x in items], np.array([x.score for x in items])
        return ids == list(ref[0]), len(ids) == len(ref[0]) and bool(np.allclose(scores, ref[1], atol=1e-5))

    ref_times, ours_times, same, tied, ref_lists = [], [], 0, 0, []
    for h in histories:
        t = time.perf_counter()
        ref = reference(h)
        ref_times.append(time.perf_counter() - t)
        ref_lists.append(ref)
    queries = [UserQuery(history=list(h), k=k) for h in histories]
    for q, ref in zip(queries, ref_lists):
        t = time.perf_counter()
        res = retriever.recommend(q)
        ours_times.append(time.perf_counter() - t)
        exact, up_to_ties = agrees(res.items, ref)
        same, tied = same + exact, tied + up_to_ties
    t = time.perf_counter()
    batch = retriever.recommend_batch(queries)
    batch_s = time.perf_counter() - t
    same_batch = sum(agrees(r.items, ref)[1] for r, ref in zip(batch, ref_lists))
    ref_rate, ours_rate, batch_rate = len(histories) / sum(ref_times), len(histories) / sum(ours_times), len(histories) / batch_s
    print(f"VLM4Rec reference (sklearn): {ref_rate:8.0f} users/s  {_pct(ref_times)}")
    print(f"groundrec recommend, single: {ours_rate:8.0f} users/s  {_pct(ours_times)}  "
          f"({ours_rate / ref_rate:.1f}x)\n  top-{k} identical: {same}/{len(histories)}; identical up to the order of tied "
          f"scores: {tied}/{len(histories)}")
    print(f"groundrec recommend_batch  : {batch_rate:8.0f} users/s  ({batch_rate / ref_rate:.1f}x), "
          f"identical up to ties: {same_batch}/{len(histories)}")


def text(args) -> None:
    from groundrec.offline.encode import load_sentence_transformer
    from groundrec.shared.onnx_encoder import OnnxTextEncoder

    version = load_version(args.artifacts)
    texts = [t for t in version.items.column("text").to_pylist()[: args.queries]]
    st = load_sentence_transformer(version.manifest.models["encoder"]["resolved"])
    encoders = {"sentence-transformers (PyTorch)": lambda x: st.encode(x, normalize_embeddings=True)}
    onnx = {v: OnnxTextEncoder(version.path / "encoder", v) for v in ("fp32", "int8")}
    for v, enc in onnx.items():
        encoders[f"ONNX {v} (onnxruntime)"] = enc.encode
    results = {}
    for name, fn in encoders.items():
        fn(texts[:2])
        times = []
        for t in texts:
            s = time.perf_counter()
            fn([t])
            times.append(time.perf_counter() - s)
        results[name] = np.median(times)
        print(f"{name:34}: single query {_pct(times)}")
    a, b = onnx["int8"].encode(texts), onnx["fp32"].encode(texts)
    cos = np.sum(a * b, axis=1)
    print(f"int8 vs fp32 cosine: mean {cos.mean():.4f}, min {cos.min():.4f}; "
          f"int8 p50 speed-up vs fp32 {results['ONNX fp32 (onnxruntime)'] / results['ONNX int8 (onnxruntime)']:.2f}x, "
          f"vs PyTorch {results['sentence-transformers (PyTorch)'] / results['ONNX int8 (onnxruntime)']:.2f}x")


def ann(args) -> None:
    import os
    import tempfile

    import faiss

    from common import PeakMemory
    from groundrec.offline.index import PROFILE_SIZES, build_index, profile_queries
    from groundrec.offline.config import IndexConfig

    rng = np.random.default_rng(0)
    n, d = args.items, 384
    centres = rng.normal(size=(args.clusters, d)).astype(np.float32)
    x = centres[rng.integers(0, args.clusters, n)]
    # noise of ``--noise`` times a centre's norm: at 1.0 clusters overlap and neighbours span IVF lists
    x += args.noise * rng.normal(size=x.shape).astype(np.float32) / np.sqrt(d) * np.linalg.norm(centres, axis=1).mean()
    faiss.normalize_L2(x)
    # Held-out users drawn like the build's tuning sample (means of 1/2/3/5 random items), other seed.
    queries = profile_queries(x, args.queries, np.random.default_rng(12345))
    sizes = np.resize(np.array(PROFILE_SIZES), args.queries)
    exact = faiss.IndexFlatIP(d)
    exact.add(x)
    _, truth = exact.search(queries, 20)
    s = time.perf_counter()
    for q in queries[:50]:
        exact.search(q[None], 20)
    print(f"{n} x {d} clustered vectors ({args.clusters} clusters, noise {args.noise}); exact (Flat) single "
          f"query: {1000 * (time.perf_counter() - s) / 50:.1f} ms mean")
    del exact
    for kind in (["hnsw", "ivf"] if args.kind == "both" else [args.kind]):
        t = time.perf_counter()
        with PeakMemory() as mem:
            index, report = build_index(x, IndexConfig(kind=kind, recall_k=20, target_recall=args.target_recall,
                                                       hnsw_m=args.m, hnsw_ef_construction=args.ef_construction))
        with tempfile.TemporaryDirectory() as tmp:
            faiss.write_index(index, os.path.join(tmp, "i"))
            size = os.path.getsize(os.path.join(tmp, "i")) / 2**30
        knob = f"nprobe {report.nprobe}" if report.kind == "ivf" else f"efSearch {report.ef_search}"
        print(f"{report.factory}: built in {time.perf_counter() - t:.1f} s (peak RSS {mem.peak_gib:.2f} GiB), "
              f"index file {size:.2f} GiB, {knob}, recall@20 on the build sample {report.recall_at_k:.3f}")
        times, hits = [], np.zeros(args.queries)
        for n_q, (q, tr) in enumerate(zip(queries, truth)):
            s = time.perf_counter()
            _, got = index.search(q[None], 20)
            times.append(time.perf_counter() - s)
            hits[n_q] = len(set(got[0]) & set(tr)) / 20
        by_size = ", ".join(f"{z} item(s) {hits[sizes == z].mean():.3f}" for z in PROFILE_SIZES)
        print(f"  single query: {_pct(times)}; recall@20 vs exact on {args.queries} held-out profiles: "
              f"{hits.mean():.3f} ({by_size})")
        del index


def _gil_contender() -> threading.Event:
    """A thread that always wants the GIL (pure Python work, no I/O), standing in for the
    service's event loop under load, with the service's switch interval. Every GIL release in
    the measured code (a BLAS call, an array operation over a large enough array) lets it
    run, and the measured code waits up to the switch interval to get the GIL back."""
    from groundrec.online.config import ServeConfig

    sys.setswitchinterval(ServeConfig.model_fields["gil_switch_interval_ms"].default / 1000)
    stop = threading.Event()

    def spin() -> None:
        scratch: dict[int, str] = {}
        while not stop.is_set():
            for i in range(200):
                scratch[i] = str(i)

    threading.Thread(target=spin, daemon=True).start()
    return stop


def _timed_histories(path: str, max_len: int = 50) -> list[list[HistoryEntry]]:
    """Each user's latest ``max_len`` interactions as history entries with their times (seconds)."""
    table = read_table(path).sort_by([("user_id", "ascending"), ("timestamp", "ascending")])
    users: dict[str, list[HistoryEntry]] = {}
    for u, i, t in zip(table.column("user_id").to_pylist(), table.column("item_id").to_pylist(),
                       seconds(table.column("timestamp"), "timestamp")):  # as the job reads them
        users.setdefault(str(u), []).append(HistoryEntry(item_id=str(i), timestamp=float(t)))
    return [h[-max_len:] for h in users.values()]


def batch(args) -> None:
    from groundrec.online.threads import limit_threads

    print("threads:", limit_threads(1))
    contender = _gil_contender() if args.gil_contender else None
    if contender:
        print(f"with a GIL-hungry thread beside the measured one (switch interval {sys.getswitchinterval() * 1e3:g} ms)")
    paths = [args.artifacts] + ([args.compare_artifacts] if args.compare_artifacts else [])
    arms = {}
    for path in paths:  # with --compare-artifacts, e.g. a hybrid version against content-only
        version = load_version(path)
        if args.timed:  # each item with its time, as the service fills a user_id's history for a default that reads times
            histories = [[e for e in h if e.item_id in version.row_of] for h in _timed_histories(args.interactions)]
        else:
            histories = [[i for i in h if i in version.row_of] for h in load_histories(args.interactions)]
        queries = [UserQuery(history=list(h), k=args.k) for h in histories if h]
        sequence = load_sequence(VersionFiles(version.path), version, 1)  # the encoder, where the version has one
        arms[path] = (Retriever(version, fallback="error", sequence=sequence), queries)
        print(f"{path}: {len(queries)} users, {version.index.ntotal} items, index {version.manifest.index['factory']} "
              f"{version.index.d} wide, k={args.k}, batches of {args.batch}")
    if args.compare_request:  # the same retriever, each request with these fields set (e.g. a feature off)
        fields = json.loads(args.compare_request)
        retriever, queries = arms[args.artifacts]
        paths.append(f"{args.artifacts} with {fields}")
        arms[paths[-1]] = (retriever, [q.model_copy(update=fields) for q in queries])
        print(f"{paths[-1]}: the same retriever and users, each request with {fields}")
    if args.one_product:  # the same version, its flat index scored as one product with the index rows
        from groundrec.online.flat_scores import FlatScores

        retriever, queries = arms[args.artifacts]
        dense = Retriever(retriever.v, fallback="error")
        if dense.flat is None or not dense.flat.split:
            raise SystemExit(f"--one-product needs a flat exact hybrid version (scored split): {args.artifacts} is not")
        dense.ranker.scorer = FlatScores(dense.v, dense.v.index, split=False)  # what .flat reads
        paths.append(f"{args.artifacts} as one product")
        arms[paths[-1]] = (dense, queries)
        print(f"{paths[-1]}: the same version and users, its index rows ({dense.flat.t.shape[0]} wide) in one product")
    gc.collect()
    gc.freeze()  # as the service does after loading a version: the collector skips it from then on
    modes = ["one at a time", f"batches of {args.batch}"]
    rounds = {(path, mode): [] for path in paths for mode in modes}
    answers = {}
    for _ in range(args.repeats):  # alternate, so every arm sees the same machine state
        for path, (retriever, queries) in arms.items():
            t = time.perf_counter()
            single = [retriever.recommend(q) for q in queries]
            rounds[(path, modes[0])].append(len(queries) / (time.perf_counter() - t))
            t = time.perf_counter()
            batched = [r for s in range(0, len(queries), args.batch)
                       for r in retriever.recommend_batch(queries[s:s + args.batch])]
            rounds[(path, modes[1])].append(len(queries) / (time.perf_counter() - t))
            answers[path] = (single, batched)
    med = {key: float(np.median(v)) for key, v in rounds.items()}
    for path in paths:
        single, batched = answers[path]
        same = sum([x.item_id for x in a.items] == [x.item_id for x in b.items] for a, b in zip(single, batched))
        tied = sum(np.allclose([x.score for x in a.items], [x.score for x in b.items], atol=1e-5)
                   for a, b in zip(single, batched))
        if len(paths) > 1:
            print(path)
        for mode in modes:
            print(f"{mode:16s} {med[(path, mode)]:9.1f} users/s (median of {args.repeats})")
        print(f"batched / one at a time = {med[(path, modes[1])] / med[(path, modes[0])]:.1f}x; "
              f"top-{args.k} identical id for id for {same}/{len(single)} users, same score sequence (equal up to "
              f"the order of tied items) for {tied}/{len(single)}")
    for other in paths[1:]:
        for mode in modes:
            print(f"{mode}: {other} at {med[(other, mode)] / med[(paths[0], mode)]:.1%} of {paths[0]}'s rate")
        if arms[other][1] is arms[paths[0]][1]:  # the same users: are the lists the same?
            same = sum([x.item_id for x in a.items] == [x.item_id for x in b.items]
                       for a, b in zip(answers[paths[0]][1], answers[other][1]))
            print(f"{other}: top-{args.k} identical to {paths[0]}'s id for id for {same}/{len(answers[other][1])} users")
    if contender:
        contender.set()


def gemm(args) -> None:
    from groundrec.online.threads import limit_threads

    print("threads:", limit_threads(1))

    def scored_matrix(path: str) -> np.ndarray:
        """What the Retriever multiplies profiles by: the flat index transposed (dim x items)."""
        flat = Retriever(load_version(path)).flat
        if flat is None or flat.split:
            raise SystemExit(f"gemm needs a version with a flat index scored by one product: {path} has none")
        return flat.t

    cols = scored_matrix(args.artifacts)
    rows = np.ascontiguousarray(cols.T)  # the index's own layout, items x dim
    other = scored_matrix(args.compare_artifacts) if args.compare_artifacts else None
    if other is not None:  # e.g. a hybrid version (a wider index) against content-only
        print(f"other: {other.shape[1]} items x {other.shape[0]} dims ({args.compare_artifacts})")
    rng = np.random.default_rng(0)
    print(f"{cols.shape[1]} items x {cols.shape[0]} dims; median ms per call over {args.repeats} rounds of 0.5 s")
    for size in [int(b) for b in args.batches.split(",")]:
        profiles = rng.standard_normal((size, cols.shape[0])).astype(np.float32)
        arms = {"rows": lambda: profiles @ rows.T, "transposed": lambda: profiles @ cols}
        if other is not None:
            wide = rng.standard_normal((size, other.shape[0])).astype(np.float32)
            arms["other transposed"] = lambda: wide @ other
        rounds: dict[str, list[float]] = {name: [] for name in arms}
        for _ in range(args.repeats):  # alternate, so every arm sees the same machine state
            for name, f in arms.items():
                n, t = 0, time.perf_counter()
                while time.perf_counter() - t < 0.5:
                    f()
                    n += 1
                rounds[name].append((time.perf_counter() - t) / n * 1e3)
        med = {name: float(np.median(v)) for name, v in rounds.items()}
        line = (f"batch {size:3d}: rows {med['rows']:7.2f} ms  transposed {med['transposed']:7.2f} ms "
                f"({med['transposed'] / size:.3f} ms/user)  rows / transposed = {med['rows'] / med['transposed']:.2f}x")
        if "other transposed" in med:
            line += (f"  other {med['other transposed']:7.2f} ms ({med['other transposed'] / size:.3f} ms/user), "
                     f"other / transposed = {med['other transposed'] / med['transposed']:.2f}x")
        print(line)


def serve_memory(args) -> None:
    """Resident memory of a real `groundrec serve` process with the version loaded."""
    import httpx

    from groundrec.online.testing import serving
    from groundrec.online.version import load_version

    def memory_gib(pid: int, field: str) -> float:  # Rss, or Pss: shared pages split among their users
        return next(int(line.split()[1]) for line in open(f"/proc/{pid}/smaps_rollup")
                    if line.startswith(field + ":")) / 2**20

    def tree(pid: int, depth: int = 0) -> list[tuple[int, int]]:
        kids = sorted({int(c) for task in os.listdir(f"/proc/{pid}/task")  # any thread may have started one
                       for c in open(f"/proc/{pid}/task/{task}/children").read().split()})
        return [(pid, depth)] + [t for c in kids for t in tree(c, depth + 1)]

    def role(pid: int, depth: int) -> str:
        cmdline = open(f"/proc/{pid}/cmdline").read()
        if depth == 0:
            return "server" if args.workers == 1 else "supervisor"
        if "resource_tracker" in cmdline:
            return "multiprocessing resource tracker"
        return "worker" if depth == 1 and args.workers > 1 else "compute process"

    extra = ["--config", args.config] if args.config else []  # e.g. an experiment pinning a second version
    with serving(args.artifacts, "--encoder-variant", args.encoder_variant, "--workers", str(args.workers),
                 "--compute", args.compute, *extra, timeout=180) as server:
        for _ in range(20 * args.workers):  # reach every worker (the kernel spreads connections)
            httpx.post(server.url + "/search", json={"text": "warm up", "k": 5})
        v = load_version(args.artifacts)
        print(f"groundrec serve ({args.encoder_variant} encoder, --workers {args.workers}, --compute {args.compute}) "
              f"with {v.index.ntotal} items x {v.index.d} ({type(v.index).__name__}), after load and one query:")
        total = 0.0
        for pid, depth in tree(server.pid):
            pss = memory_gib(pid, "Pss")
            total += pss
            print(f"  {'  ' * depth}{role(pid, depth)} (pid {pid}): RSS {memory_gib(pid, 'Rss'):.2f} GiB, PSS {pss:.2f} GiB")
        print(f"  total PSS (each shared page counted once): {total:.2f} GiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("retrieval")
    r.add_argument("--artifacts", required=True)
    r.add_argument("--interactions", required=True)
    r.add_argument("--k", type=int, default=20)
    t = sub.add_parser("text")
    t.add_argument("--artifacts", required=True)
    t.add_argument("--queries", type=int, default=300)
    i = sub.add_parser("ann")
    i.add_argument("--kind", choices=["hnsw", "ivf", "both"], default="both")
    i.add_argument("--items", type=int, default=1_000_000)
    i.add_argument("--clusters", type=int, default=10_000)
    i.add_argument("--noise", type=float, default=1.0)
    i.add_argument("--queries", type=int, default=1000)
    i.add_argument("--target-recall", type=float, default=0.95, help="recall the build tunes for")
    i.add_argument("--m", type=int, default=32, help="HNSW graph degree")
    i.add_argument("--ef-construction", type=int, default=80, help="HNSW build effort")
    b = sub.add_parser("batch")
    b.add_argument("--artifacts", required=True)
    b.add_argument("--interactions", required=True)
    b.add_argument("--k", type=int, default=20)
    b.add_argument("--batch", type=int, default=32)
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--compare-artifacts", help="a second version timed in the same alternating rounds")
    b.add_argument("--compare-request", help="JSON fields set on every request of a second arm over the same "
                                             "version, timed in the same rounds, e.g. '{\"fresh_slots\": 0}'")
    b.add_argument("--one-product", action="store_true", help="a further arm: the --artifacts version (a flat exact "
                   "hybrid) scored as one product with its index rows, not split (online/flat_scores.py)")
    b.add_argument("--gil-contender", action="store_true", help="time it beside a thread that always wants the GIL, "
                   "as a busy event loop does in the service")
    b.add_argument("--timed", action="store_true", help="each history item with its time (as the service fills a "
                   "user_id's history for a version whose default strategy reads times, e.g. recency), not bare ids")
    m = sub.add_parser("serve-memory")
    m.add_argument("--artifacts", required=True)
    m.add_argument("--encoder-variant", default="fp32", choices=["fp32", "int8"])
    m.add_argument("--workers", type=int, default=1, help="server processes (uvicorn workers)")
    m.add_argument("--compute", default="process", choices=["process", "thread"], help="where retrieval runs")
    m.add_argument("--config", help="a serve config YAML (e.g. an experiment whose arm pins another version)")
    g = sub.add_parser("gemm")
    g.add_argument("--artifacts", required=True)
    g.add_argument("--batches", default="1,8,16,32,64")
    g.add_argument("--compare-artifacts", help="a second version whose transposed matrix is timed in the same rounds")
    g.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    {"retrieval": retrieval, "text": text, "ann": ann, "batch": batch, "serve-memory": serve_memory,
     "gemm": gemm}[args.what](args)


if __name__ == "__main__":
    main()
