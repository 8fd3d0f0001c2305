"""End to end on 300 real H&M items: Ray pipeline, tiny VLM, real MiniLM, ONNX export."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from groundrec.offline.job import run_job
from groundrec.online.version import load_version
from groundrec.offline.config import load_job_config
from groundrec.shared.onnx_encoder import OnnxTextEncoder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hm_run(hm_dir, tiny_vlm, tmp_path_factory):
    root = tmp_path_factory.mktemp("hm")
    items = pq.read_table(hm_dir / "items.parquet")
    pq.write_table(items.slice(0, 300), root / "items300.parquet")
    pq.write_table(items.slice(0, 310), root / "items310.parquet")
    cfg = dict(**{"catalog.images_root": str(hm_dir), "out": str(root / "artifacts"), "vlm.model": str(tiny_vlm()),
                  "vlm.max_new_tokens": 12, "vlm.batch_size": 16, "encoder.template": "{title}. {description}. {vlm_text}"})
    first = run_job(load_job_config(None, {**cfg, "catalog.path": str(root / "items300.parquet")}), progress=False)
    return root, cfg, first


def test_the_ray_job_publishes_every_item_with_its_grounding(hm_run):
    _, _, first = hm_run
    assert first.runner == "ray" and first.encoded == 300 and not first.skipped
    version = load_version(first.version_dir)
    assert version.index.ntotal == 300 and all(version.items.column("grounded").to_pylist())
    assert all(t and t.strip() for t in version.items.column("vlm_text").to_pylist())


def test_onnx_encoder_reproduces_published_vectors(hm_run):
    _, _, first = hm_run
    version = load_version(first.version_dir)
    assert version.manifest.encoder_export["fp32"]["max_abs_diff"] <= 1e-4
    texts = version.items.column("text").to_pylist()[:100]
    onnx = OnnxTextEncoder(first.version_dir / "encoder").encode(texts)
    assert np.max(np.abs(onnx - np.asarray(version.vectors[:100]))) < 1e-4


def test_manifest_vouches_for_the_version(hm_run):
    _, _, first = hm_run
    m = load_version(first.version_dir).manifest
    assert m.dim == 384 and m.counts["indexed"] == 300 and m.index["kind"] == "flat"
    assert {"index.faiss", "items.parquet", "embeddings.npy", "encoder/model.onnx", "encoder/tokenizer.json"} <= set(m.files)
    assert m.models["encoder"]["name"].endswith("all-MiniLM-L6-v2") and m.prompt["text"]


def test_unchanged_catalog_does_no_vlm_work_and_ten_new_items_ground_ten(hm_run):
    root, cfg, _ = hm_run
    again = run_job(load_job_config(None, {**cfg, "catalog.path": str(root / "items300.parquet"), "export.enabled": False}),
                    progress=False)
    assert again.grounded_new == 0 and again.grounded_cached == 300 and again.encoded_new == 0
    more = run_job(load_job_config(None, {**cfg, "catalog.path": str(root / "items310.parquet"), "export.enabled": False,
                                      "index.kind": "ivf"}), progress=False)
    assert more.grounded_new == 10 and more.grounded_cached == 300 and 1 <= more.encoded_new <= 10
    assert more.index["kind"] == "ivf" and 0 < more.index["recall_at_k"] <= 1
