"""Shared fixtures. Tests never download: hub access is switched off for the whole session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", "/tmp/groundrec-test-hf-home")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
HM = Path(os.environ.get("GROUNDREC_HM_DIR", REPO.parent / "shared" / "data" / "hm"))


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory):
    """tiny_vlm(arch) -> directory of a saved tiny random-weight VLM (built once per session)."""
    from groundrec.offline.dev.tiny_models import build_tiny_vlm

    built: dict[str, Path] = {}

    def get(arch: str = "smolvlm") -> Path:
        if arch not in built:
            built[arch] = build_tiny_vlm(arch, tmp_path_factory.mktemp(f"vlm-{arch}"))
        return built[arch]

    return get


@pytest.fixture(scope="session")
def hm_dir() -> Path:
    if not (HM / "items.parquet").is_file():
        message = f"H&M data not found at {HM} (set GROUNDREC_HM_DIR); these tests need ../shared/data/hm"
        if os.environ.get("GROUNDREC_REQUIRE_HM"):  # CI, which has it beside the clone: fail, never skip
            pytest.fail(message)
        pytest.skip(message)
    return HM


@pytest.fixture
def small_catalog(tmp_path):
    """A 6-item catalog with drawn images, plus 3 broken ones (missing, truncated, not an image)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from groundrec.offline.demo import _draw
    from helpers import jpeg_bytes

    images = tmp_path / "img"
    images.mkdir()
    rows = []
    for i, (cat, col, pat) in enumerate([("t-shirt", "red", "solid"), ("dress", "blue", "striped"),
                                         ("bag", "green", "dotted"), ("trousers", "black", "checked"),
                                         ("t-shirt", "yellow", "striped"), ("dress", "white", "solid")]):
        _draw(cat, col, pat, i).save(images / f"{i}.jpg")
        rows.append({"item_id": f"i{i}", "image": f"{i}.jpg", "title": f"{col} {pat} {cat}",
                     "description": f"A {pat} {cat}."})
    good = jpeg_bytes()
    (images / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (images / "text.jpg").write_bytes(b"this is not an image at all")
    rows += [{"item_id": "missing", "image": "nope.jpg", "title": "ghost", "description": ""},
             {"item_id": "truncated", "image": "truncated.jpg", "title": "half", "description": ""},
             {"item_id": "notimage", "image": "text.jpg", "title": "text", "description": ""}]
    path = tmp_path / "catalog.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return {"path": path, "images_root": images, "good": [f"i{i}" for i in range(6)],
            "bad": ["missing", "truncated", "notimage"]}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server on a free loopback port, with the durable setting the docs give
    (appendonly, appendfsync always). CI installs it (.ci/run) and sets
    GROUNDREC_REQUIRE_REDIS=1, so there a missing server fails instead of skipping."""
    from helpers import RedisServer

    if RedisServer.binary() is None:
        if os.environ.get("GROUNDREC_REQUIRE_REDIS"):
            pytest.fail("redis-server is not installed (apt-get install redis-server), and GROUNDREC_REQUIRE_REDIS is set")
        pytest.skip("redis-server is not installed: apt-get install redis-server (CI runs these tests)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()
