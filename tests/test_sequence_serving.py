"""The ``sequence`` strategy served (online/profiling.py, online/serving.py, shared/artifact
layout): a small version published with a tiny encoder trained and exported by
offline/sequence into its ``sequence/`` folder, served by a real server; its answers equal the
encoder's query searched directly. A version records its default strategy (absent: mean)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import httpx
import numpy as np
import pyarrow as pa
import pytest

import torch  # noqa: E402,F401
import onnxruntime  # noqa: E402,F401

from groundrec.offline.config import IndexConfig  # noqa: E402
from groundrec.offline.index import build_index  # noqa: E402
from groundrec.offline.publish import write_version_files  # noqa: E402
from groundrec.offline.sequence.export import export_sequence_encoder  # noqa: E402
from groundrec.offline.sequence.model import SequenceConfig  # noqa: E402
from groundrec.offline.sequence.train import train_sequence_encoder  # noqa: E402
from groundrec.online.client import Client, GroundrecError  # noqa: E402
from groundrec.online.config import ServeConfig  # noqa: E402
from groundrec.online.errors import Unprocessable  # noqa: E402
from groundrec.online.profiling import load_sequence  # noqa: E402
from groundrec.online.retrieve import NoHistory, Retriever  # noqa: E402
from groundrec.online.schemas import UserQuery  # noqa: E402
from groundrec.online.service import create_app  # noqa: E402
from groundrec.online.serving import build_serving  # noqa: E402
from groundrec.online.version import VersionError, load_version  # noqa: E402
from groundrec.shared import artifact  # noqa: E402
from groundrec.shared.errors import UserError  # noqa: E402
from groundrec.shared.live_items import LiveItem  # noqa: E402
from groundrec.shared.sequence_encoder import (SEQUENCE_CONFIG, SEQUENCE_ITEMS, SEQUENCE_ONNX,  # noqa: E402
                                               SEQUENCE_PROJECT, SequenceEncoder)
from helpers import logged, running  # noqa: E402

N_ITEMS, DIM, CLUSTERS = 120, 16, 8


def _catalog(seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLUSTERS, DIM)).astype(np.float32)
    label = rng.integers(0, CLUSTERS, N_ITEMS)
    x = centres[label] + 0.6 * rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    members = [np.flatnonzero(label == c) for c in range(CLUSTERS)]
    histories = []
    for _ in range(200):  # item rows, oldest first: one or two clusters each
        picked = [int(rng.choice(members[c])) for c in rng.integers(0, CLUSTERS, 2) for _ in range(rng.integers(2, 8))]
        histories.append(picked)
    return x, label, histories


def _publish(root, vectors, label, sequence_from=None, default=None, report=None):
    """One version under ``root``: a flat index over ``vectors``; ``sequence_from``: a trained
    model exported into its sequence/ folder."""
    ids = [f"it{n:03d}" for n in range(len(vectors))]
    table = pa.table({"item_id": ids, "title": [f"item {n}" for n in range(len(ids))],
                      "group": [str(c) for c in label]})
    index, rep = build_index(vectors, IndexConfig())
    with artifact.publishing(root) as pub:
        write_version_files(pub.staged, index, vectors, table, pa.table({"item_id": pa.array([], pa.string())}))
        extra = {}
        if sequence_from is not None:
            export_sequence_encoder(sequence_from, artifact.VersionFiles(pub.staged).sequence_dir)
            extra = {"default_strategy": default or "sequence", "sequence": report}
        return pub.publish(artifact.Manifest(
            version=pub.version, created_at=datetime.now(timezone.utc).isoformat(), code_version="test", models={},
            prompt={}, text_template="{title}", dim=DIM, counts={"indexed": len(ids)}, index=rep.to_dict(),
            timings_s={}, catalog_text_columns=["title"], **extra))


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seqserve")
    vectors, label, histories = _catalog()
    trained = train_sequence_encoder(histories, vectors, cfg=SequenceConfig(
        max_len=8, dim=16, blocks=1, heads=1, epochs=2, valid_users=40, batch_size=64, k=10))
    seq = _publish(tmp / "seq", vectors, label, trained.model, report=trained.report())
    old = _publish(tmp / "old", vectors, label)
    manifest = json.loads((old / artifact.MANIFEST).read_text())  # as a job before issue 34 wrote it
    for key in ("default_strategy", "sequence"):
        manifest.pop(key)
    (old / artifact.MANIFEST).write_text(json.dumps(manifest))
    ids = [f"it{n:03d}" for n in range(N_ITEMS)]
    return {"seq": seq, "old": old, "vectors": vectors, "label": label, "ids": ids,
            "histories": [[ids[r] for r in h] for h in histories[:12]], "model": trained.model}


def _expected(v, history, k, allowed=None, exclude=()):
    """The encoder's query searched directly: every item's inner product, the history and
    ``exclude`` left out, ties to the lower row."""
    enc = SequenceEncoder(artifact.VersionFiles(v["seq"]).sequence_dir)
    row = {i: n for n, i in enumerate(v["ids"])}
    query = enc.encode([[row[i] for i in history if i in row]])[0]
    scores = (v["vectors"] @ query).astype(np.float64)
    scores[[row[i] for i in (*history, *exclude) if i in row]] = -np.inf
    if allowed is not None:
        scores[~allowed] = -np.inf
    order = np.lexsort((np.arange(len(scores)), -scores))[:k]
    return [v["ids"][n] for n in order]


def _cfg(artifacts, **extra) -> ServeConfig:
    return ServeConfig(artifacts=artifacts, reload_interval_s=0.2, compute_standby=False, **extra)


def test_sequence_over_http_is_the_encoder_searched_and_the_version_s_default(versions):
    v = versions
    with running(create_app(_cfg(v["seq"].parent.parent))) as url, Client(url) as client:
        ready = httpx.get(url + "/readyz").json()
        assert ready["default_strategy"] == "sequence" and ready["sequence_encoder"] is True
        for history in v["histories"]:
            named = client.recommend(history, k=6, strategy="sequence")
            assert [i.item_id for i in named.items] == _expected(v, history, 6)
            default = client.recommend(history, k=6)  # the request names none: the version's sequence
            assert [(i.item_id, i.score) for i in default.items] == [(i.item_id, i.score) for i in named.items]
            assert not set(history) & {i.item_id for i in named.items}
        assert len(client.recommend(v["histories"][0], k=6, strategy="mean").items) == 6  # the others still served
        # filters and exclude, as for any strategy
        h = v["histories"][1]
        group = v["label"][v["ids"].index(h[-1])]
        got = client.recommend(h, k=4, strategy="sequence", filters={"group": str(group)})
        assert [i.item_id for i in got.items] == _expected(v, h, 4, allowed=v["label"] == group)
        first = _expected(v, h, 2)
        got = client.recommend(h, k=5, exclude=first[:2])
        assert [i.item_id for i in got.items] == _expected(v, h, 5, exclude=first[:2])
        # a batch is the singles, an empty or unknown history falls back as for mean
        users = [{"history": hh} for hh in v["histories"]] + [{"history": []}, {"history": ["nope"]}]
        batch = client.recommend_batch(users, k=5)
        singles = [client.recommend(u["history"], k=5) for u in users]
        assert [[i.item_id for i in r.items] for r in batch.results] == [[i.item_id for i in r.items] for r in singles]
        for r, single in zip(batch.results, singles):  # scores up to the rounding of another product's shape
            assert [i.score for i in r.items] == pytest.approx([i.score for i in single.items], abs=1e-6)
        for r in batch.results[-2:]:
            assert r.fallback == "popular"
        assert batch.results[-1].unknown_ids == ["nope"]
        assert batch.results[-2].items == client.recommend([], k=5, strategy="mean").items
        item = v["ids"][5]  # similar items stay likeness (the mean profile), whatever the default
        similar = httpx.get(url + f"/items/{item}/similar", params={"k": 4}).json()
        assert [i["item_id"] for i in similar["items"]] == \
               [i.item_id for i in client.recommend([item], k=4, strategy="mean").items]


def test_an_old_version_defaults_to_mean_and_refuses_sequence_with_the_reason(versions):
    old = versions["old"]
    manifest = artifact.verify(old)
    assert manifest.default_strategy == "mean" and manifest.sequence is None
    with running(create_app(_cfg(old.parent.parent, compute="thread"))) as url, Client(url) as client:
        ready = httpx.get(url + "/readyz").json()
        assert ready["default_strategy"] == "mean" and ready["sequence_encoder"] is False
        h = versions["histories"][2]
        assert client.recommend(h, k=5).items == client.recommend(h, k=5, strategy="mean").items
        with pytest.raises(GroundrecError) as refused:
            client.recommend(h, k=5, strategy="sequence")
        assert refused.value.status == 422
        assert f"version {old.name} has no sequence encoder; use mean, recency" in refused.value.message
        r = httpx.post(url + "/recommend", json={"batch": [{"history": h, "strategy": "sequence"}]})
        assert r.status_code == 422 and "no sequence encoder" in r.json()["detail"]


@pytest.mark.parametrize("compute", ["thread", "process"])
def test_an_arm_s_sequence_default_on_a_version_without_the_encoder_serves_its_default(versions, compute):
    """An arm's ``strategy: sequence`` following a version the job published without the
    encoder refused every one of its users' requests with a 422 they could not fix."""
    old = versions["old"]
    arms = [{"name": "a"}, {"name": "seq", "defaults": {"strategy": "sequence"}}]
    h = versions["histories"][2]
    with logged("groundrec.serve") as records, \
            running(create_app(_cfg(old.parent.parent, compute=compute, experiment={"arms": arms}))) as url, \
            Client(url) as client:
        answers = [client.recommend(h, k=5, user_id=f"u{n}") for n in range(12)]
        assert {a.arm for a in answers} == {"a", "seq"}  # both arms answered, none refused
        assert all(a.items == client.recommend(h, k=5, strategy="mean").items for a in answers)
        with pytest.raises(GroundrecError) as refused:  # a request's own strategy is still refused
            client.recommend(h, k=5, user_id=next(f"u{n}" for n, a in enumerate(answers) if a.arm == "seq"),
                             strategy="sequence")
        assert refused.value.status == 422
    assert any("has no sequence encoder; its default strategy is served" in r.getMessage() for r in records)


def test_the_manifest_and_the_checksums_cover_the_encoder(versions, tmp_path):
    seq = versions["seq"]
    manifest = artifact.verify(seq)
    assert manifest.default_strategy == "sequence" and manifest.sequence["valid_users"] > 0
    assert set(artifact.sequence_files()) <= set(manifest.files)
    assert artifact.SEQUENCE_FILES == (SEQUENCE_CONFIG, SEQUENCE_ONNX, SEQUENCE_ITEMS, SEQUENCE_PROJECT)  # one naming
    assert artifact.VersionFiles(seq).has_sequence and not artifact.VersionFiles(versions["old"]).has_sequence
    import shutil
    copy = tmp_path / seq.name
    shutil.copytree(seq, copy)
    (copy / "sequence" / "sequence_items.npy").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="sequence/sequence_items.npy: checksum mismatch"):
        artifact.verify(copy)
    shutil.rmtree(copy)
    shutil.copytree(versions["old"], copy)  # an encoder dropped into a version that does not vouch for it
    shutil.copytree(seq / "sequence", copy / "sequence")
    with pytest.raises(ValueError, match="sequence/sequence.onnx: not listed in the manifest"):
        artifact.verify(copy)


def test_in_process_text_explain_zero_query_and_a_mismatched_encoder(versions):
    v = versions
    serving = build_serving(ServeConfig(artifacts=v["seq"]), "seq", v["seq"])
    r = serving.retriever
    h = v["histories"][3]
    plain = r.recommend(UserQuery(history=h, k=5))
    explained = r.recommend(UserQuery(history=h, k=5, explain=True))
    assert [(i.item_id, i.score) for i in explained.items] == [(i.item_id, i.score) for i in plain.items]
    assert all(abs(i.parts["sequence"] - i.score) < 1e-5 for i in explained.items)
    # only ids the encoder does not know: a zero query, the fallback of a history with nothing usable
    fallback = r.recommend(UserQuery(history=["ghost"], k=3))
    assert fallback.fallback == "popular" and fallback.unknown_ids == ["ghost"]
    strict = Retriever(r.v, sequence=r.sequence, fallback="error")
    with pytest.raises(NoHistory):
        strict.recommend(UserQuery(history=["ghost"], k=3))
    bare = Retriever(r.v)  # the same version without the encoder loaded
    with pytest.raises(Unprocessable, match="has no sequence encoder"):
        bare.recommend(UserQuery(history=h, k=3))
    assert isinstance(bare.recommend_batch([UserQuery(history=h, k=3)], errors="return")[0], Unprocessable)
    mixed = [UserQuery(history=h, k=4, strategy="mean"), UserQuery(history=h, k=4),
             UserQuery(history=v["histories"][4], k=4, strategy="sequence", popularity_weight=0.5)]
    assert [[i.item_id for i in x.items] for x in r.recommend_batch(mixed)] == \
           [[i.item_id for i in r.recommend(q).items] for q in mixed]

    answers = r.recommend_batch([UserQuery(history=h, k=3), UserQuery(history=h, k=3, text="no text encoder here")],
                                errors="return")  # one query's refusal is its own
    assert answers[0].items and isinstance(answers[1], UserError) and "ONNX encoder" in str(answers[1])

    class Text:  # a text vector of our choosing: the mixing rule by hand
        def encode(self, texts):
            return np.tile(v["vectors"][7:8], (len(texts), 1))

    with_text = Retriever(r.v, encoder=Text(), sequence=r.sequence)
    query = r.sequence.encode([[v["ids"].index(i) for i in h]])[0]
    mix = 0.7 * query / np.linalg.norm(query) + 0.3 * v["vectors"][7]
    scores = v["vectors"] @ mix
    scores[[v["ids"].index(i) for i in h]] = -np.inf
    want = [v["ids"][n] for n in np.argsort(-scores, kind="stable")[:4]]
    assert [i.item_id for i in with_text.recommend(UserQuery(history=h, k=4, text="x", text_weight=0.3)).items] == want
    alone = with_text.recommend(UserQuery(text="x", k=3, strategy="sequence"))  # no history: the text alone
    assert alone.fallback is None and alone.items[0].item_id == v["ids"][7]
    # a live item: the encoder reads it as a new item of training, the projection of its vectors, no id part
    serving.apply_live(([LiveItem("live-1", {"title": "new", "group": "0"}, whole=True, first_seen=1.0, updated=1.0,
                                  seq=1)], {"live-1": v["vectors"][3]}))
    with np.load(artifact.VersionFiles(v["seq"]).sequence_dir / SEQUENCE_PROJECT) as f:
        row = f["W"] @ v["vectors"][3] + f["b"]
    assert r.sequence.n_items == N_ITEMS + 1 and np.allclose(r.sequence.table[N_ITEMS], row, atol=1e-5)
    assert not r.sequence.table[-1].any()  # the pad row stays last and zero
    only_live = r.recommend(UserQuery(history=["live-1"], k=3))
    query = r.sequence.encode([[N_ITEMS]])[0]
    scores = np.vstack([v["vectors"], v["vectors"][3:4]]) @ query
    scores[N_ITEMS] = -np.inf  # seen
    assert only_live.fallback is None and query.any()
    assert [i.item_id for i in only_live.items] == [v["ids"][n] for n in np.argsort(-scores, kind="stable")[:3]]
    serving.apply_live(([LiveItem("live-2", {"title": "newer", "group": "1"}, whole=True, first_seen=2.0,
                                  updated=2.0, seq=2)], {"live-2": v["vectors"][5]}))  # into the spare rows
    with np.load(artifact.VersionFiles(v["seq"]).sequence_dir / SEQUENCE_PROJECT) as f:
        assert np.allclose(r.sequence.table[N_ITEMS + 1], f["W"] @ v["vectors"][5] + f["b"], atol=1e-5)
    assert r.sequence.table.shape[0] == N_ITEMS + 3 and not r.sequence.table[-1].any()
    assert np.allclose(r.sequence.table[N_ITEMS], row, atol=1e-5)  # the earlier row kept
    # a catalog item whose text changed: a new row that keeps what the encoder learned of the
    # item (its id part), only its vectors' projection moved (it was read as a stranger)
    old_row = r.v.row_of[v["ids"][5]]
    kept = r.sequence.table[old_row].copy()
    serving.apply_live(([LiveItem(v["ids"][5], {"title": "renamed"}, whole=False, first_seen=None, updated=3.0,
                                  seq=3)], {v["ids"][5]: v["vectors"][9]}))
    new_row = r.v.row_of[v["ids"][5]]
    with np.load(artifact.VersionFiles(v["seq"]).sequence_dir / SEQUENCE_PROJECT) as f:
        moved = f["W"] @ (v["vectors"][9] - v["vectors"][5])
        assert np.abs(kept - (f["W"] @ v["vectors"][5] + f["b"])).max() > 1e-3  # it has an id part to keep
    assert new_row != old_row and np.allclose(r.sequence.table[new_row], kept + moved, atol=1e-5)
    version = load_version(v["old"])
    version.items = version.items.slice(0, N_ITEMS - 1)  # an encoder exported for other items is refused
    with pytest.raises(VersionError, match="exported for 120 items"):
        load_sequence(artifact.VersionFiles(v["seq"]), version)


def test_the_gate_scores_a_version_that_defaults_to_the_encoder_as_the_service_answers(versions):
    """``gate.serving_system``: the serving version is compared as it serves a request that
    names no strategy: through its encoder when that is its default, by the mean profile when
    the version has none."""
    from groundrec.offline.gate import serving_system

    v = versions
    for name, expect in (("seq", lambda h: _expected(v, h, 10)), ("old", None)):
        system, row_of = serving_system(v[name])
        rows = [np.array([row_of[i] for i in h], np.int64) for h in v["histories"]]
        top = system.top(system.scores(rows, [np.zeros(len(r)) for r in rows]), 10, rows)
        got = [[v["ids"][n] for n in t] for t in top]
        if expect is not None:
            assert got == [expect(h) for h in v["histories"]]
        else:  # the mean profile of the history's vectors
            mean = np.stack([v["vectors"][r].mean(0) for r in rows])
            assert got != [_expected(v, h, 10) for h in v["histories"]] and got[0][0] == v["ids"][int(np.argmax(
                np.where(np.isin(np.arange(N_ITEMS), rows[0]), -np.inf, v["vectors"] @ mean[0])))]


def test_the_encoder_reads_its_live_items_projection_at_load(versions, tmp_path):
    """The projection was read at the first live item, after the version's rows were added: a
    cached remote version evicted while it served failed there, half applied, and every retry
    appended its rows again."""
    import shutil

    source = artifact.VersionFiles(versions["seq"]).sequence_dir
    copy = tmp_path / "sequence"
    shutil.copytree(source, copy)
    encoder = SequenceEncoder(copy)
    with np.load(copy / SEQUENCE_PROJECT) as f:
        row = f["W"] @ versions["vectors"][3] + f["b"]
    (copy / SEQUENCE_PROJECT).unlink()  # gone from the disk after the load
    encoder.add_items(versions["vectors"][3:4].astype(np.float32))
    assert encoder.n_items == N_ITEMS + 1 and np.allclose(encoder.table[N_ITEMS], row, atol=1e-5)
    older = SequenceEncoder(copy)  # exported before live items had rows: it loads, and leaves them out
    older.add_items(versions["vectors"][3:4].astype(np.float32))
    assert older.n_items == N_ITEMS and np.allclose(older.encode([[1, 2, N_ITEMS]]), older.encode([[1, 2]]))
