"""The offline job: read -> hash -> ground (cached) -> encode -> index -> export -> publish.

Each stage is a small unit elsewhere in this package; this module only wires them,
keeps time, and reports. Nothing is published unless every stage succeeded.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from groundrec.offline import catalog as catalog_stage
from groundrec.offline.cache import EmbeddingCache, GroundingCache, cache_key, grounding_signature
from groundrec.offline.encode import EncodeTexts, build_texts, load_sentence_transformer, resolve_encoder
from groundrec.offline.export import export_encoder
from groundrec.offline.ground import GroundImages, HashImages
from groundrec.offline.index import build_index
from groundrec.offline.publish import discard_staging, publish, staging_dir
from groundrec.offline.runners import open_runner
from groundrec.offline.vlm import model_fingerprint, resolve_vlm
from groundrec.shared import versions
from groundrec.shared.config import JobConfig
from groundrec.shared.manifest import Manifest
from groundrec.shared.version_info import code_version

HASH_BATCH = 64


@dataclass
class JobSummary:
    version: str
    version_dir: Path
    runner: str
    items_read: int
    grounded_new: int
    grounded_cached: int
    skipped: dict[str, int]
    encoded: int
    encoded_new: int
    index: dict
    export: dict | None
    timings_s: dict[str, float]
    parse_failures: int = 0
    skipped_examples: list[dict] = field(default_factory=list)


class StageClock:
    def __init__(self):
        self.times: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = round(self.times.get(name, 0.0) + time.perf_counter() - start, 3)


def _skip(skipped: list[dict], item_id: str, stage: str, reason: str) -> None:
    skipped.append({"item_id": item_id, "stage": stage, "reason": reason})


def run_job(cfg: JobConfig, progress: bool = True) -> JobSummary:
    cfg.require_paths()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    clock = StageClock()
    skipped: list[dict] = []

    with clock.stage("read"):
        items = catalog_stage.load_catalog(cfg.catalog)
        id_col = cfg.catalog.id_column
    # Fail in seconds, before any cluster starts, when a model is not reachable.
    with clock.stage("resolve_models"):
        if cfg.vlm.backend == "hf":
            resolve_vlm(cfg.vlm.model, cfg.vlm.revision)
        signature = grounding_signature(cfg.vlm, cfg.prompt, model_fingerprint(cfg.vlm.model, cfg.vlm.revision))
        encoder_path = resolve_encoder(cfg.encoder.model)

    version_id = versions.new_version_id()
    staged = staging_dir(out, version_id)
    try:
        with ExitStack() as stack:
            with clock.stage("start_runner"):
                runner = stack.enter_context(open_runner(cfg.run.runner, cfg.run.ray_address, cfg.resolved_work_dir))
            groundings, new_by_id = ground_catalog(runner, items, cfg, signature, skipped, clock, progress)

            with clock.stage("encode"):
                texts = build_texts(groundings, cfg.encoder.template)
                groundings = groundings.append_column("text", pa.array(texts, pa.string()))
                vectors, encoded_new = encode_cached(runner, texts, cfg, encoder_path, progress)

        with clock.stage("index"):
            index, index_report = build_index(vectors, cfg.index)
        export_report = None
        if cfg.export.enabled:
            with clock.stage("export"):
                model = load_sentence_transformer(encoder_path, cfg.encoder.max_seq_length)
                export_report = export_encoder(model, staged / "encoder", cfg.export, texts[:200])
        with clock.stage("write"):
            faiss.write_index(index, str(staged / "index.faiss"))
            np.save(staged / "embeddings.npy", vectors)
            pq.write_table(groundings, staged / "items.parquet")
            pq.write_table(pa.Table.from_pylist(skipped, schema=_SKIPPED), staged / "skipped.parquet")
        manifest = Manifest(
            version=version_id,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            code_version=code_version(),
            models={"vlm": {"backend": cfg.vlm.backend, "name": cfg.vlm.model, "revision": cfg.vlm.revision,
                            "fingerprint": signature["model"], "max_new_tokens": cfg.vlm.max_new_tokens},
                    "encoder": {"name": cfg.encoder.model, "resolved": encoder_path,
                                "max_seq_length": cfg.encoder.max_seq_length}},
            prompt={"style": cfg.prompt.style, "text": cfg.prompt.text(), "fields": cfg.prompt.fields},
            text_template=cfg.encoder.template,
            dim=int(vectors.shape[1]),
            counts={"items_read": items.num_rows, "indexed": int(vectors.shape[0]),
                    "grounded_new": len(new_by_id), "grounded_cached": groundings.num_rows - len(new_by_id),
                    "encoded_new": encoded_new, "skipped": len(skipped)},
            index=index_report.to_dict(),
            encoder_export=export_report,
            timings_s=dict(clock.times),
            id_column=id_col,
            catalog_text_columns=cfg.catalog.text_columns,
        )
        with clock.stage("publish"):
            final = publish(out, staged, manifest, keep=cfg.run.keep_versions)
    except BaseException:
        discard_staging(staged)  # what is published stays as it was
        raise

    reasons: dict[str, int] = {}
    for s in skipped:
        reasons[_reason_class(s["reason"])] = reasons.get(_reason_class(s["reason"]), 0) + 1
    return JobSummary(
        version=version_id, version_dir=final, runner=cfg.run.runner, items_read=items.num_rows,
        grounded_new=len(new_by_id), grounded_cached=groundings.num_rows - len(new_by_id), skipped=reasons,
        encoded=int(vectors.shape[0]), encoded_new=encoded_new, index=index_report.to_dict(), export=export_report,
        timings_s=dict(clock.times),
        parse_failures=groundings.column("parse_ok").to_pylist().count(False), skipped_examples=skipped[:5],
    )


def ground_catalog(runner, items: pa.Table, cfg: JobConfig, signature: dict, skipped: list[dict],
                   clock: StageClock, progress: bool) -> tuple[pa.Table, dict[str, dict]]:
    """hash -> cache lookup -> ground what is new -> the catalog rows that were grounded, with
    their grounding columns (``vlm_text``, ``vlm_<field>``...). Bad images land in ``skipped``."""
    id_col = cfg.catalog.id_column
    ids = items.column(id_col).to_pylist()
    uris = items.column(catalog_stage.IMAGE_URI).to_pylist()
    with clock.stage("hash"):
        sha_by_id = _hash_images(runner, ids, uris, skipped, progress)

    cache = GroundingCache(cfg.resolved_cache_dir)
    key_by_id = {iid: cache_key(sha, signature) for iid, sha in sha_by_id.items()}
    with clock.stage("cache_lookup"):
        cached_by_key = {r["cache_key"]: r for r in cache.lookup(set(key_by_id.values())).to_pylist()}
    uri_by_id = dict(zip(ids, uris))
    todo = [i for i in ids if i in key_by_id and key_by_id[i] not in cached_by_key]
    with clock.stage("ground"):
        todo_table = pa.table({"item_id": todo, "image_uri": [uri_by_id[i] for i in todo],
                               "image_sha256": [sha_by_id[i] for i in todo],
                               "cache_key": [key_by_id[i] for i in todo]})
        new_by_id = _ground(runner, todo_table, cfg, cache, skipped, progress)
    with clock.stage("cache_compact"):
        cache.compact()

    answer = {i: new_by_id.get(i) or cached_by_key.get(key_by_id.get(i)) for i in ids}
    grounded = items.filter(pa.array([answer[i] is not None for i in ids], pa.bool_()))
    rows = [{**answer[i], "image_sha256": sha_by_id[i], "from_cache": i not in new_by_id}
            for i in grounded.column(id_col).to_pylist()]
    groundings = _groundings_table(grounded, rows, cfg)
    return groundings, new_by_id


def _hash_images(runner, ids: list[str], uris: list[str | None], skipped: list[dict], progress: bool) -> dict[str, str]:
    sha_by_id: dict[str, str] = {}
    bar = tqdm(total=len(ids), desc="read images", unit="img", disable=not progress)
    for b in runner.map(pa.table({"item_id": ids, "image_uri": pa.array(uris, pa.string())}), HashImages, {},
                        HASH_BATCH, concurrency=1):
        for iid, sha, err in zip(b["item_id"], b["image_sha256"], b["image_error"]):
            if err:
                _skip(skipped, iid, "read", err)
            else:
                sha_by_id[iid] = sha
        bar.update(len(b["item_id"]))
    bar.close()
    return sha_by_id


def _ground(runner, todo: pa.Table, cfg: JobConfig, cache: GroundingCache, skipped: list[dict],
            progress: bool) -> dict[str, dict]:
    """Ground the images the cache lacks; each finished batch goes to the cache at once."""
    hf = cfg.vlm.backend == "hf"
    gpus = cfg.vlm.num_gpus_per_actor or (1.0 if hf and runner.gpus() > 0 else 0.0)
    kwargs = {"vlm": cfg.vlm.model_dump(mode="json"), "prompt": cfg.prompt.model_dump(mode="json")}
    new_by_id: dict[str, dict] = {}
    bar = tqdm(total=todo.num_rows, desc="ground (VLM)", unit="img", disable=not progress)
    # The openai backend parallelises requests inside one actor (vlm.concurrency threads).
    for b in runner.map(todo, GroundImages, kwargs, cfg.vlm.batch_size,
                        concurrency=cfg.vlm.concurrency if hf else 1, num_gpus=gpus):
        batch = _ground_batch_table(b)
        cache.append(batch)  # incremental: a crash keeps every finished batch
        for row in batch.to_pylist():
            if row["ground_error"]:
                _skip(skipped, row["item_id"], "ground", row["ground_error"])
            else:
                new_by_id[row["item_id"]] = row
        bar.update(batch.num_rows)
    bar.close()
    return new_by_id


def _ground_batch_table(b: dict) -> pa.Table:
    """A ground mapper's batch as Arrow, with "" turned back into nulls."""
    cols = {}
    for name, values in b.items():
        if name == "parse_ok":
            cols[name] = pa.array([bool(v) for v in values], pa.bool_())
        elif name != "ground_seconds":
            cols[name] = pa.array([str(v) if isinstance(v, str) and v else None for v in values], pa.string())
    return pa.table(cols)


_SKIPPED = pa.schema([("item_id", pa.string()), ("stage", pa.string()), ("reason", pa.string())])


def _reason_class(reason: str) -> str:
    return reason.split(":")[0]


def _groundings_table(grounded: pa.Table, rows: list[dict], cfg: JobConfig) -> pa.Table:
    table = grounded
    for name in ("image_sha256", "vlm_text"):
        table = table.append_column(name, pa.array([r[name] for r in rows], pa.string()))
    if cfg.prompt.style == "structured":
        parsed = [json.loads(r["vlm_fields"] or "{}") for r in rows]
        for f in cfg.prompt.fields:
            table = table.append_column(f"vlm_{f}", pa.array([p.get(f) for p in parsed], pa.string()))
    table = table.append_column("parse_ok", pa.array([r["parse_ok"] for r in rows], pa.bool_()))
    table = table.append_column("parse_error", pa.array([r["parse_error"] for r in rows], pa.string()))
    return table.append_column("from_cache", pa.array([r["from_cache"] for r in rows], pa.bool_()))


def encode_cached(runner, texts: list[str], cfg: JobConfig, encoder_path: str,
                  progress: bool) -> tuple[np.ndarray, int]:
    """Vectors for ``texts``: distinct texts only, and only those the embedding cache lacks."""
    if not texts:
        raise ValueError("no item could be grounded: nothing to encode (see the skipped reasons)")
    signature = {"encoder": model_fingerprint(encoder_path), "max_seq_length": cfg.encoder.max_seq_length}
    key_of = {t: cache_key(t, signature) for t in texts}
    cache = EmbeddingCache(cfg.resolved_cache_dir)
    known = cache.get(set(key_of.values()))
    missing = [t for t in dict.fromkeys(texts) if key_of[t] not in known]
    if missing:
        fresh = _encode(runner, missing, cfg, encoder_path, progress)
        cache.put([key_of[t] for t in missing], fresh)
        cache.compact()
        known.update(zip((key_of[t] for t in missing), fresh))
    return np.stack([known[key_of[t]] for t in texts]).astype(np.float32), len(missing)


def _encode(runner, texts: list[str], cfg: JobConfig, encoder_path: str, progress: bool) -> np.ndarray:
    # Length-sorted, like sentence-transformers does within one call: batches of similar
    # lengths pad little. Rows carry their position, so the output order is the input order.
    order = np.argsort([len(t) for t in texts], kind="stable")
    table = pa.table({"row": order.astype(np.int64), "text": pa.array([texts[i] for i in order], pa.string())})
    kwargs = {"model": encoder_path, "batch_size": cfg.encoder.batch_size,
              "max_seq_length": cfg.encoder.max_seq_length}
    gpus = 1.0 if runner.gpus() > 0 else 0.0
    out: np.ndarray | None = None
    bar = tqdm(total=len(texts), desc="encode", unit="item", disable=not progress)
    # Blocks of several encoder batches: fewer Ray tasks, same per-batch work.
    for b in runner.map(table, EncodeTexts, kwargs, cfg.encoder.batch_size * 4, concurrency=cfg.encoder.concurrency,
                        num_gpus=gpus / cfg.encoder.concurrency if gpus else 0):
        vec = np.asarray(b["vector"], dtype=np.float32)
        if out is None:
            out = np.empty((len(texts), vec.shape[1]), dtype=np.float32)
        out[np.asarray(b["row"], dtype=np.int64)] = vec
        bar.update(len(vec))
    bar.close()
    if out is None:
        raise ValueError("no item could be grounded: nothing to encode (see the skipped reasons)")
    return out
