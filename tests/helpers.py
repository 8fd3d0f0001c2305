"""Small helpers shared by tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import io


def jpeg_bytes(colour=(200, 30, 40), size=(64, 96)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG")
    return buf.getvalue()


def publish_demo(root, vlm_dir, n_items: int = 40, n_users: int = 8) -> dict:
    """Demo data under ``root`` and one version published from it by the real offline job
    (in-process runner, tiny VLM). Returns the job overrides (to publish more), the
    artifacts folder, the interactions file and each user's history."""
    import pyarrow.parquet as pq

    from groundrec.offline.demo import make_demo_data
    from groundrec.offline.job import run_job
    from groundrec.offline.config import load_job_config

    paths = make_demo_data(root / "data", n_items=n_items, n_users=n_users)
    overrides = {"catalog.path": str(paths["catalog"]), "out": str(root / "artifacts"), "vlm.model": str(vlm_dir),
                 "vlm.max_new_tokens": 4, "run.runner": "local", "export.int8": False,
                 "catalog.text_columns": ["title", "description", "category", "colour"]}
    version = run_job(load_job_config(None, overrides), progress=False).version
    histories: dict[str, list[str]] = {}
    for r in pq.read_table(paths["interactions"]).to_pylist():
        histories.setdefault(r["user_id"], []).append(r["item_id"])
    return {"root": root, "artifacts": root / "artifacts", "overrides": overrides, "version": version,
            "histories": list(histories.values()), "interactions": paths["interactions"]}
