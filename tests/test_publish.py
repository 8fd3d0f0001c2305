"""offline/publish.py: the job's files written into the staging folder, the manifest that
describes them, and the hand-over to the artifact contract: checksums, rename, CURRENT; a run
that fails before publishing leaves the published version as it was."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from groundrec.offline.catalog import NO_IMAGE_COLUMN
from groundrec.offline.config import load_job_config
from groundrec.offline.publish import build_manifest, write_version_files
from groundrec.offline.skips import Skips
from groundrec.shared import artifact
from groundrec.shared.errors import UserError
from groundrec.shared.version_info import code_version


def _version_parts(n: int = 12, dim: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(dim)
    index.add(vectors)
    items = pa.table({"item_id": [f"i{r}" for r in range(n)], "title": [f"item {r}" for r in range(n)]})
    skips = Skips()
    skips.add("gone", "read", "missing: gone.jpg")
    thumbs = pa.table({"item_id": ["i0"], "webp": [b"RIFF....WEBP"]})
    return index, vectors, items, skips.table(), thumbs


def _publish(root, cfg, seed: int = 0, notes=None):
    index, vectors, items, skipped, thumbs = _version_parts(seed=seed)
    with artifact.publishing(root) as pub:
        write_version_files(pub.staged, index, vectors, items, skipped, thumbnails=thumbs)
        assert not (root / artifact.VERSIONS / pub.version).exists()  # staged, not yet published
        manifest = build_manifest(cfg, pub.version, "/models/enc", vectors.shape[1], {"indexed": len(vectors)},
                                  {"type": "flat"}, None, {"write": 0.1}, notes=notes)
        final = pub.publish(manifest)
    return pub.version, final, (index, vectors, items, skipped, thumbs)


@pytest.fixture
def cfg(tmp_path):
    return load_job_config(None, {"catalog.path": str(tmp_path / "items.parquet"), "out": str(tmp_path / "artifacts")})


def test_a_published_version_holds_what_was_written_and_verifies(tmp_path, cfg):
    root = tmp_path / "artifacts"
    version, final, (index, vectors, items, skipped, thumbs) = _publish(root, cfg)
    assert artifact.current_version(root) == version and final == root / artifact.VERSIONS / version
    manifest = artifact.verify(final)  # every file's checksum matches the manifest
    files = artifact.VersionFiles(final)
    for path in (files.index, files.embeddings, files.items, files.skipped, files.thumbnails):
        assert path.relative_to(final).as_posix() in manifest.files
    assert np.array_equal(np.load(files.embeddings), vectors)
    assert faiss.read_index(str(files.index)).ntotal == index.ntotal
    assert pq.read_table(files.items).equals(items) and pq.read_table(files.skipped).equals(skipped)
    assert pq.read_table(files.thumbnails).equals(thumbs)
    assert not (root / artifact.STAGING).exists() or not any((root / artifact.STAGING).iterdir())
    assert manifest.version == version and manifest.code_version == code_version() and manifest.dim == 8
    assert manifest.models["vlm"]["name"] == cfg.vlm.model and manifest.models["encoder"]["resolved"] == "/models/enc"
    assert manifest.text_template == cfg.encoder.template and manifest.id_column == cfg.catalog.id_column
    assert manifest.collab is None and manifest.notes == []


def test_a_text_only_catalog_records_no_vlm(tmp_path, cfg):
    _, final, _ = _publish(tmp_path / "artifacts", cfg, notes=[NO_IMAGE_COLUMN + ": embedded from text"])
    manifest = artifact.verify(final)
    assert manifest.models["vlm"] is None and manifest.notes == [NO_IMAGE_COLUMN + ": embedded from text"]


def test_a_run_that_fails_before_publishing_changes_nothing(tmp_path, cfg):
    root = tmp_path / "artifacts"
    first, _, _ = _publish(root, cfg)
    index, vectors, items, skipped, _ = _version_parts(seed=1)
    with pytest.raises(RuntimeError, match="encoder export failed"):
        with artifact.publishing(root) as pub:
            write_version_files(pub.staged, index, vectors, items, skipped)
            raise RuntimeError("encoder export failed")
    assert artifact.current_version(root) == first and artifact.list_versions(root) == [first]
    assert not pub.staged.exists()


def test_a_changed_file_no_longer_verifies(tmp_path, cfg):
    _, final, _ = _publish(tmp_path / "artifacts", cfg)
    path = artifact.VersionFiles(final).embeddings
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="embeddings.npy: checksum mismatch"):
        artifact.verify(final)
    assert json.loads((final / "manifest.json").read_text())["files"]  # the manifest itself is untouched
