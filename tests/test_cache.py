import pyarrow as pa

from groundrec.offline.cache import GroundingCache, cache_key, embedding_signature, grounding_signature
from groundrec.offline.config import PromptConfig
from groundrec.offline.vlm import HFVLMConfig, OpenAIVLMConfig


def _sig(**vlm):
    return grounding_signature(HFVLMConfig(**vlm), PromptConfig())


def test_key_depends_on_image_model_prompt_and_generation():
    base = cache_key("img1", _sig())
    assert base == cache_key("img1", _sig())
    assert base != cache_key("img2", _sig())
    assert base != cache_key("img1", _sig(max_new_tokens=10))
    assert base != cache_key("img1", grounding_signature(HFVLMConfig(), PromptConfig(style="structured")))
    assert base != cache_key("img1", _sig(model="other-org/other-vlm"))
    assert base != cache_key("img1", _sig(revision="v2"))
    served = grounding_signature(OpenAIVLMConfig(endpoint="http://127.0.0.1:1/v1"), PromptConfig())
    assert base != cache_key("img1", served) and served["model"] == HFVLMConfig().model


def _batch(keys, errors):
    n = len(keys)
    return pa.table({"item_id": [f"i{k}" for k in keys], "cache_key": keys, "image_sha256": ["s"] * n,
                     "vlm_text": [f"text {k}" for k in keys], "vlm_fields": ["{}"] * n,
                     "parse_ok": [True] * n, "parse_error": [None] * n, "ground_error": errors})


def test_append_keeps_successes_only_and_lookup_finds_them(tmp_path):
    cache = GroundingCache(tmp_path)
    assert cache.append(_batch(["a", "b", "c"], [None, "VLM failed: boom", None])) == 2
    assert cache.append(_batch(["a"], [None])) == 1  # a duplicate write
    found = cache.lookup({"a", "b", "c", "zz"})
    assert sorted(found.column("cache_key").to_pylist()) == ["a", "c"]
    assert cache.lookup({"zz"}).num_rows == 0


def test_compact_merges_shards_without_losing_rows(tmp_path):
    cache = GroundingCache(tmp_path)
    for i in range(5):
        cache.append(_batch([f"k{i}"], [None]))
    cache.compact(max_shards=2)
    assert len(cache.shards()) == 1
    assert cache.lookup({f"k{i}" for i in range(5)}).num_rows == 5


def test_embedding_cache_round_trips_vectors(tmp_path):
    import numpy as np

    from groundrec.offline.cache import EmbeddingCache

    cache = EmbeddingCache(tmp_path)
    vecs = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    assert cache.put(["a", "b", "c"], vecs) == 3
    got = cache.get({"a", "c", "zz"})
    assert set(got) == {"a", "c"}
    assert np.array_equal(got["a"], vecs[0]) and np.array_equal(got["c"], vecs[2])
    assert cache.get({"zz"}) == {}


def test_concurrent_compactions_lose_nothing_and_raise_nothing(tmp_path):
    import threading

    for n in range(12):
        GroundingCache(tmp_path).append(_batch([f"k{n}"], [None]))
    errors = []

    def compact():
        try:
            GroundingCache(tmp_path).compact(max_shards=1)
        except Exception as e:  # noqa: BLE001 - the test is that none escapes
            errors.append(e)

    threads = [threading.Thread(target=compact) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    found = GroundingCache(tmp_path).lookup({f"k{n}" for n in range(12)})
    assert sorted(found.column("cache_key").to_pylist()) == sorted(f"k{n}" for n in range(12))


def test_a_shard_cut_short_by_a_crash_is_set_aside_and_its_rows_recomputed_not_fatal(tmp_path):
    """A zero-length shard (renamed into place before its bytes were on disk, then a power
    cut) made every later run fail in the cache lookup with Arrow's error."""
    from groundrec.offline.cache import EmbeddingCache

    cache = EmbeddingCache(tmp_path)
    cache.append(pa.table({"cache_key": ["a"], "vector": [[1.0, 2.0]]}))
    broken = cache.root / "shard-0000.parquet"
    broken.write_bytes(b"")
    got = cache.get({"a", "b"})
    assert list(got) == ["a"] and not broken.exists() and (cache.root / "shard-0000.parquet.bad").exists()
    cache.compact(max_shards=0)  # a compaction reads every shard too
    assert list(cache.get({"a"})) == ["a"]


def test_an_embedding_s_key_changes_with_the_libraries_that_make_it():
    """An upgrade of sentence-transformers, transformers or tokenizers may tokenize or pool
    otherwise: the cached vectors are not reused across one (the index and the export's check
    would disagree)."""
    from importlib.metadata import version

    now = embedding_signature("hub:m@1", 256)
    assert now["libraries"]["sentence-transformers"] == version("sentence-transformers")
    assert set(now["libraries"]) == {"sentence-transformers", "transformers", "tokenizers"}
    older = embedding_signature("hub:m@1", 256, {**now["libraries"], "transformers": "4.0.0"})
    assert cache_key("a red coat", now) != cache_key("a red coat", older)
    assert cache_key("a red coat", now) == cache_key("a red coat", embedding_signature("hub:m@1", 256))
    assert cache_key("a red coat", now) != cache_key("a red coat", embedding_signature("hub:m@1", 128))
