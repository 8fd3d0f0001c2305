"""The learned profile encoder in the offline job (offline/learn_sequence.py, the ``sequence``
section of offline/sequence_config.py): trained in the learn stage, scored on the hybrid's
validation users with the hybrid's metric, published only where it beats the hybrid by more
than one standard error of the paired differences; otherwise the version is the hybrid with
the encoder's scores in its manifest.

The data: text-only catalogs (no VLM) of items with random titles, and users whose histories
are hops ``x, x+1`` (item x is always followed by item x+1): which unseen neighbour comes
next is in the order alone. The hybrid's grid leaves out the recency of the collaborative
query (``half_life: [0]``), which would read the order of the last item."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

import torch  # noqa: E402  (installed by make install: a missing one fails, never skips)
import onnxruntime  # noqa: E402,F401

from groundrec.offline import collab, learn_sequence  # noqa: E402
from groundrec.offline.config import load_job_config  # noqa: E402
from groundrec.offline.holdout import K, published_hits, published_lists  # noqa: E402
from groundrec.offline.job import run_job  # noqa: E402
from groundrec.offline.sequence.model import SequenceConfig  # noqa: E402
from groundrec.offline.sequence_config import SequenceJobConfig, resolved_precision  # noqa: E402
from groundrec.online.config import ServeConfig  # noqa: E402
from groundrec.online.schemas import UserQuery  # noqa: E402
from groundrec.online.serving import build_serving  # noqa: E402
from groundrec.shared import artifact  # noqa: E402
from groundrec.shared.scoring.collab import collab_queries, hybrid_queries, index_rows  # noqa: E402
from groundrec.shared.scoring.profiles import latest, mean_profiles  # noqa: E402
from groundrec.shared.scoring.searcher import Searcher  # noqa: E402
from groundrec.shared.errors import UserError  # noqa: E402
from groundrec.shared.sequence_encoder import SequenceEncoder  # noqa: E402

WORDS = ["red", "blue", "green", "black", "white", "wool", "cotton", "linen", "denim", "silk", "shirt", "dress",
         "coat", "scarf", "boot", "bag", "hat", "skirt", "jacket", "sock", "striped", "plain", "checked", "slim"]


def hop_data(root, n_items=200, n_users=300, hops=12, ordered=True, seed=0, n_new=0):
    """catalog.parquet (item_id, title) and interactions.parquet: each user ``hops`` times an
    item x then x + 1 (in time order; ``ordered=False``: the same items in a random order);
    ``n_new`` more items in the catalog that nobody interacted with."""
    rng = np.random.default_rng(seed)
    ids = [f"p{i:04d}" for i in range(n_items + n_new)]
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"item_id": ids, "title": [" ".join(rng.choice(WORDS, 4)) for _ in ids]}),
                   root / "catalog.parquet")
    users, items, ts = [], [], []
    for u in range(n_users):
        history = [int(i) for x in rng.integers(0, n_items, hops) for i in (x, (x + 1) % n_items)]
        if not ordered:
            rng.shuffle(history)
        users += [f"u{u}"] * len(history)
        items += [ids[i] for i in history]
        ts += [1_700_000_000 + 1_000 * u + t for t in range(len(history))]
    pq.write_table(pa.table({"user_id": users, "item_id": items, "timestamp": pa.array(np.array(ts, "datetime64[s]"))}),
                   root / "interactions.parquet")
    return root


def job(data, out, cache, **extra):
    cfg = load_job_config(None, {
        "catalog.path": str(data / "catalog.parquet"), "out": str(out), "cache_dir": str(cache), "run.runner": "local",
        "export.enabled": False, "catalog.text_columns": ["title"], "encoder.template": "{title}",
        "interactions.path": str(data / "interactions.parquet"), "collab.rank": 32, "collab.reg": [10.0, 100.0],
        "collab.dropout": [0.0], "collab.weight": [0.0, 1.0, 10.0], "collab.half_life": [0.0], "collab.refine": False,
        "collab.valid_users": 100, "collab.valid_items": 100, "collab.full_rank_max_mb": 0,  # factorised at 32
        "sequence.dim": 32, "sequence.blocks": 1, "sequence.max_len": 30,
        "sequence.batch_size": 16, "sequence.lr": 0.003, "sequence.epochs": 15, "sequence.patience": 3,
        "sequence.enabled": True, **extra})
    summary = run_job(cfg, progress=False)
    return {"summary": summary, "dir": summary.version_dir, "manifest": artifact.verify(summary.version_dir)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("learn_sequence")
    ordered, shuffled = hop_data(root / "ordered", n_new=8), hop_data(root / "shuffled", ordered=False)
    return {"ordered": ordered, "shuffled": shuffled, "root": root,
            "won": job(ordered, root / "won", root / "cache")}


def _recorded_hybrid(manifest) -> float:
    """The hybrid's validation score at its published point, as the tuner recorded it."""
    c = manifest.collab
    name = f"published fresh_weight={c['fresh_weight']:g}" + (f" fresh_slots={c['fresh_slots']}"
                                                               if c["fresh_slots"] else "")
    return c["validation"]["scores"][name]


def test_an_order_the_hybrid_cannot_see_publishes_the_encoder_as_the_default(runs):
    won = runs["won"]
    m, seq = won["manifest"], won["manifest"].sequence
    v = seq["validation"]
    assert seq["published"] and m.default_strategy == "sequence"
    assert v["users"] == m.collab["validation"]["users"] == 100  # the hybrid's validation users
    assert v["hybrid"] == pytest.approx(_recorded_hybrid(m))  # ... and its score at the published point
    assert v["encoder"] > v["hybrid"] + v["se"] and v["diff"] == pytest.approx(v["encoder"] - v["hybrid"])
    assert v["encoder"] >= 0.9 and v["hybrid"] < 0.8
    assert seq["config"]["dim"] == 32 and seq["train_s"] > 0
    assert set(seq["training"]) == {"validation", "published"}  # trained again for the final index ...
    published, chosen = seq["training"]["published"], seq["training"]["validation"]
    refit = min(seq["config"]["refit_epochs"], chosen["best_epoch"])  # ... from validation's weights, a few epochs
    assert [e["epoch"] for e in published["epochs"]] == list(range(refit + 1))
    assert published["epochs"][0]["loss"] is None
    assert chosen["stopped"] in ("patience", "epochs") and published["stopped"] == "epochs"
    assert seq["parity"]["max_abs_diff"] <= 1e-4 and seq["parity"]["n_histories"] == 1000
    assert seq["parity"]["empty"] and seq["parity"]["length_1"] and seq["parity"]["over_long"]
    files = artifact.VersionFiles(won["dir"])
    assert files.has_sequence and set(artifact.sequence_files()) <= set(m.files)  # checksummed like encoder/
    assert won["summary"].sequence.startswith("published (default strategy): recall@20")
    assert "sequence_export" in won["summary"].timings_s


def test_a_request_naming_no_strategy_is_the_encoder_s_query_searched(runs):
    """The served list of a strategy-less request equals SequenceEncoder's query searched over
    the version's index rows (seen items out), holding the new items of the version's hybrid
    list for the same request (the ``mean`` strategy, its freshness prior and kept places)."""
    path = runs["won"]["dir"]
    retriever = build_serving(ServeConfig(artifacts=path.parent.parent), path.name, path).retriever  # the service's
    v = retriever.v
    encoder = SequenceEncoder(artifact.VersionFiles(runs["won"]["dir"]).sequence_dir)
    rows = v.index.reconstruct_n(0, v.index.ntotal)
    inter = pq.read_table(runs["ordered"] / "interactions.parquet")
    by_user: dict[str, list[int]] = {}
    for u, i in zip(inter.column("user_id").to_pylist(), inter.column("item_id").to_pylist()):
        by_user.setdefault(u, []).append(v.row_of[i])
    histories = [h[:n] for h, n in zip(list(by_user.values())[:12], range(3, 27, 2))]  # cut at odd lengths
    counts = v.items.column(artifact.WINDOW_INTERACTIONS).to_numpy()
    new = np.flatnonzero(counts == 0)
    hybrid = retriever.recommend_batch([UserQuery(history=[v.item_ids[r] for r in h], k=10, strategy="mean",
                                                  fresh_slots=2) for h in histories])
    others = np.array([[v.row_of[x.item_id] for x in got.items] for got in hybrid])
    assert np.isin(others, new).any()  # the hybrid's lists hold new items: the rule is exercised
    want = Searcher(len(rows), new).rank_holding_new_of(encoder.encode(histories) @ rows.T, others, 10, histories)
    answers = retriever.recommend_batch([UserQuery(history=[v.item_ids[r] for r in h], k=10, fresh_slots=2)
                                         for h in histories])
    for h, expected, got, other in zip(histories, want, answers, others):
        assert [v.row_of[x.item_id] for x in got.items] == [r for r, _ in expected]
        assert set(np.intersect1d(other, new).tolist()) <= {v.row_of[x.item_id] for x in got.items}
    one = retriever.recommend(UserQuery(history=[v.item_ids[r] for r in histories[0]], k=10, fresh_slots=2))
    assert [x.item_id for x in one.items] == [x.item_id for x in answers[0].items]
    explained = retriever.recommend(UserQuery(history=[v.item_ids[r] for r in histories[0]], k=10, fresh_slots=2,
                                              explain=True))  # a list made alone, its hybrid list batched
    assert [x.item_id for x in explained.items] == [x.item_id for x in answers[0].items]
    # A hybrid list no batch takes (a filter) is asked as its own request would be.
    kept = list(v.item_ids[::2])
    filtered = UserQuery(history=[v.item_ids[r] for r in histories[1]], k=10, filters={"item_id": kept})
    alone = [v.row_of[x.item_id] for x in retriever.recommend(filtered.model_copy(update={"strategy": "mean"})).items]
    assert len(alone) == 10 and all(v.item_ids[r] in kept for r in alone)
    assert retriever._hybrid_rows([filtered]) == [alone]
    nexts = [(h[-1] + 1) % 200 for h in histories]  # each cut ends on an x: x + 1 is next
    found = [n in [v.row_of[x.item_id] for x in got.items] for n, h, got in zip(nexts, histories, answers) if n not in h]
    assert len(found) >= 8 and sum(found) >= len(found) - 1  # (recall@20 on validation: 1.0)
    mean = retriever.recommend(UserQuery(history=[v.item_ids[r] for r in histories[0]], k=10, strategy="mean"))
    assert [x.item_id for x in mean.items] != [x.item_id for x in answers[0].items]
    # history_ignored: the encoder reads the latest max_len (30) known items, mean the latest 500
    long = [v.item_ids[r] for h in list(by_user.values())[:3] for r in h][:40]
    assert len(long) == 40 and encoder.max_len == 30
    assert retriever.recommend(UserQuery(history=long, k=5)).history_ignored == 10
    assert [r.history_ignored for r in retriever.recommend_batch([UserQuery(history=long, k=5)])] == [10]
    assert retriever.recommend(UserQuery(history=long, k=5, strategy="mean")).history_ignored == 0


def test_the_gate_scores_a_hybrid_that_defaults_to_the_encoder_as_the_service_answers(runs):
    """``gate.serving_system`` of a hybrid version defaulting to the encoder ranks each history
    as the service answers a request naming no strategy: the encoder's list holding the new
    items of the hybrid's (the version keeps a place for them)."""
    from groundrec.offline.gate import serving_system

    path = runs["won"]["dir"]
    retriever = build_serving(ServeConfig(artifacts=path.parent.parent), path.name, path).retriever
    v = retriever.v
    assert v.collab_fresh_slots >= 1 and len(retriever.new_rows)
    system, row_of = serving_system(path)
    inter = pq.read_table(runs["ordered"] / "interactions.parquet")
    by_user: dict[str, list[int]] = {}
    for u, i in zip(inter.column("user_id").to_pylist(), inter.column("item_id").to_pylist()):
        by_user.setdefault(u, []).append(row_of[i])
    histories = [np.array(h[:n], np.int64) for h, n in zip(list(by_user.values())[:20], range(2, 42, 2))]
    top = system.top(system.scores(histories, [np.zeros(len(h)) for h in histories]), 10, histories)
    answers = retriever.recommend_batch([UserQuery(history=[v.item_ids[r] for r in h], k=10) for h in histories])
    assert [[v.item_ids[r] for r in t if r >= 0] for t in top] == [[x.item_id for x in a.items] for a in answers]
    assert np.isin(top, retriever.new_rows).sum(axis=1).min() >= 1  # the hybrid's place, held


def test_without_an_order_to_learn_the_scores_are_recorded_and_the_rule_decides(runs):
    got = job(runs["shuffled"], runs["root"] / "shuffled_out", runs["root"] / "cache")
    m, seq = got["manifest"], got["manifest"].sequence
    v = seq["validation"]
    assert v["users"] == 100 and v["hybrid"] == pytest.approx(_recorded_hybrid(m))
    assert v["se"] > 0 and v["encoder"] == pytest.approx(v["hybrid"] + v["diff"], abs=1e-5)
    # Histories in random order hold nothing for the encoder to learn beyond the hybrid: not published.
    assert not seq["published"] and v["diff"] <= v["se"]
    assert m.default_strategy == "mean" and not artifact.VersionFiles(got["dir"]).has_sequence
    assert "parity" not in seq and list(seq["training"]) == ["validation"]
    assert got["summary"].sequence.startswith("not published: recall@20")
    # Nothing of the encoder is published (the rule's real answer: no mock of it)
    assert not (got["dir"] / artifact.SEQUENCE_DIR).exists()
    assert not any(f.startswith(artifact.SEQUENCE_DIR) for f in m.files)
    manifest = json.loads((got["dir"] / artifact.MANIFEST).read_text())
    assert manifest["default_strategy"] == "mean" and manifest["sequence"]["published"] is False


def test_a_training_or_export_that_fails_leaves_the_hybrid_and_says_why(runs, monkeypatch):
    """Only too little data (UserError) and the export's own check were caught: an out-of-memory
    training, a lost Ray task or an onnxruntime that refuses the graph stopped the whole job
    after its work, publishing nothing. The summary line says why too."""
    import onnxruntime.capi.onnxruntime_pybind11_state as ort_errors

    from groundrec.offline.sequence import export as sequence_export

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    with monkeypatch.context() as patched:
        patched.setattr(learn_sequence, "_train", out_of_memory)
        got = job(runs["ordered"], runs["root"] / "oom", runs["root"] / "cache")
    seq = got["manifest"].sequence
    assert not seq["published"] and got["manifest"].default_strategy == "mean"
    assert "training failed (RuntimeError: CUDA out of memory)" in seq["reason"]
    assert seq["reason"] in got["summary"].sequence

    def refused(*args, **kwargs):
        raise ort_errors.InvalidGraph("opset 99 is not supported")

    monkeypatch.setattr(sequence_export, "export_sequence_encoder", refused)
    got = job(runs["ordered"], runs["root"] / "refused", runs["root"] / "cache")
    m, seq = got["manifest"], got["manifest"].sequence
    assert not seq["published"] and m.default_strategy == "mean" and not (got["dir"] / artifact.SEQUENCE_DIR).exists()
    assert "ONNX export failed (InvalidGraph): opset 99" in seq["reason"]
    assert seq["validation"]["encoder"] > seq["validation"]["hybrid"]  # it won, and says why it is not served
    assert seq["reason"] in got["summary"].sequence


def test_sequence_off_trains_nothing(runs):
    got = job(runs["ordered"], runs["root"] / "off", runs["root"] / "cache", **{"sequence.enabled": False})
    assert got["manifest"].sequence is None and got["manifest"].default_strategy == "mean"
    assert got["summary"].sequence is None and not artifact.VersionFiles(got["dir"]).has_sequence


def test_the_encoder_is_scored_exactly_as_the_hybrid_s_published_point():
    """``served_hits`` with the hybrid's own queries and index rows is ``holdout.published_hits``
    (the same users, metric and exclusion); ``published_lists`` are the lists ``published_hits``
    scores (freshness prior, kept places); and with them, each encoder list holds the hybrid
    list's new items in place of its lowest others (a naive reference)."""
    rng = np.random.default_rng(1)
    n, d, r = 80, 12, 6
    content = rng.normal(size=(n, d)).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    model = collab.CollabModel(rng.normal(size=(n, r)).astype(np.float32), rng.normal(size=(n, r)).astype(np.float32),
                               np.ones(n, bool))
    held = [rng.choice(n, int(rng.integers(1, 9)), replace=False) for _ in range(300)]
    targets = np.array([int(rng.choice(np.setdiff1d(np.arange(n), h))) for h in held])
    profiles = mean_profiles(content, [latest(h) for h in held])
    new = np.arange(0, n, 7)
    want = published_hits(model, content, profiles, held, targets, 3.0, None, 5.0, new, ((0.0, 0), (0.3, 2)))
    queries = hybrid_queries(profiles, collab_queries(model.query, [latest(h) for h in held], 5.0), None)
    index = index_rows(content, 3.0 * model.item, None)
    got = learn_sequence.served_hits(queries, index, held, targets)
    assert np.array_equal(got, want[0.0, 0]) and 0 < got.mean() < 1
    lists = published_lists(model, content, profiles, held, 3.0, None, 5.0, new, 0.3, 2)
    assert np.array_equal((lists == targets[:, None]).any(axis=1), want[0.3, 2])
    assert np.isin(lists, new).sum(axis=1).min() >= 2  # the two places
    held_new = learn_sequence.served_hits(queries, index, held, targets, new, lists)
    for u in range(len(held)):
        s = queries[u] @ index.T
        s[held[u]] = -np.inf
        top = [int(i) for i in np.argsort(-s, kind="stable")[:K]]
        extra = [int(i) for i in lists[u] if i in set(new.tolist()) and i not in top]
        others = [i for i in top if i not in set(new.tolist())]
        top = [i for i in top if i not in others[len(others) - len(extra):]] + extra if extra else top
        assert held_new[u] == (targets[u] in top)
        assert set(np.intersect1d(lists[u], new).tolist()) <= set(top)
    assert not np.array_equal(held_new, got)  # the new items change some users' hits


def test_the_section_gives_the_encoder_its_settings_and_is_checked_at_the_edge():
    settings = SequenceJobConfig(dim=32, heads=2, lr=0.01, scale=8).encoder_settings(K, 7)
    assert SequenceConfig(**settings) == SequenceConfig(dim=32, heads=2, lr=0.01, scale=8, k=K, seed=7)
    assert set(settings) == set(SequenceConfig().to_dict())  # every setting of the encoder is the job's to set
    assert settings["precision"] == "float32"  # the default: a seeded training the same on every run
    auto = SequenceConfig(**SequenceJobConfig(precision="auto").encoder_settings(K, 7))  # what the manifest records
    assert auto.precision == resolved_precision("auto") and auto.to_dict()["precision"] in ("float32", "bfloat16")
    assert not SequenceJobConfig().active(True)  # off by default for now (docs/hybrid.md)
    assert SequenceJobConfig(enabled="auto").active(True) and not SequenceJobConfig(enabled="auto").active(False)
    assert not SequenceJobConfig(enabled=False).active(True) and SequenceJobConfig(enabled=True).active(True)
    assert load_job_config(None, {"sequence.enabled": "false"}).sequence.enabled is False
    with pytest.raises(ValueError, match="multiple of sequence.heads"):
        load_job_config(None, {"sequence.dim": 30, "sequence.heads": 4})
    for bad in ({"sequence.enabled": "sometimes"}, {"sequence.threads": 0}, {"sequence.lr": 0},
                {"sequence.typo": 1}, {"sequence.precision": "float16"}, {"sequence.scale": 0}):
        (key,) = bad
        with pytest.raises(ValidationError, match=re.escape(key)):  # refused naming the setting
            load_job_config(None, bad)


def test_the_early_stopping_users_are_never_the_validation_users():
    histories = [np.arange(u, u + 6) for u in range(40)]
    train, stopping = learn_sequence.early_stopping_split(histories, [0, 1, 2, 3], 10, seed=0)
    assert len(stopping[0]) == 10
    held = [u for u in range(40) if len(train[u]) == 5]
    assert len(held) == 10 and not set(held) & {0, 1, 2, 3}
    assert all(np.array_equal(train[u], histories[u]) for u in (0, 1, 2, 3))
    assert [t[0] for t in stopping[1]] == [int(histories[u][-1]) for u in held]
    # Every candidate validating: the training parts' last items instead.
    _, stopping = learn_sequence.early_stopping_split(histories[:3], [0, 1, 2], 10)
    assert len(stopping[0]) == 3
    # With times (baskets of two): the last basket's items held out whole, the history cut before it.
    times = [np.arange(6) // 2 for _ in range(40)]
    train, stopping = learn_sequence.early_stopping_split(histories, [0, 1, 2, 3], 10, seed=0, times=times)
    held = [u for u in range(40) if len(train[u]) == 4]
    assert len(held) == 10 and not set(held) & {0, 1, 2, 3}
    assert stopping[1] == [histories[u][-2:].tolist() for u in held]
    assert [h.tolist() for h in stopping[0]] == [histories[u][:4].tolist() for u in held]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_a_gpu_the_machine_lacks_is_refused_before_anything_is_grounded(runs):
    with pytest.raises(UserError, match="sequence.device is 'cuda'"):
        job(runs["ordered"], runs["root"] / "nogpu", runs["root"] / "nocache", **{"sequence.device": "cuda"})
    assert not (runs["root"] / "nocache").exists()  # nothing encoded: refused in the job's first seconds


def test_on_the_ray_runner_the_trainings_are_ray_tasks_that_learn_what_the_job_process_learns(runs):
    """The job on Ray trains the encoder as Ray tasks (with a GPU where the cluster has one);
    seeded, with the same threads, they train exactly what the job process trains."""
    got = job(runs["ordered"], runs["root"] / "on-ray", runs["root"] / "cache", **{"run.runner": "ray"})
    here, there = runs["won"]["manifest"].sequence, got["manifest"].sequence
    for part in ("validation", "published"):
        assert there["training"][part]["ran_in"] == "ray task" and here["training"][part]["ran_in"] == "job process"
        assert there["training"][part]["device"] == here["training"][part]["device"]
        assert [e["loss"] for e in there["training"][part]["epochs"]] == [e["loss"] for e in here["training"][part]["epochs"]]
    assert there["validation"] == here["validation"] and there["published"]
