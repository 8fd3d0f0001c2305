"""Ground stage: image locations -> VLM text and parsed fields, with the cache in front.

``HashImages`` runs over every item (read bytes, sha256, check the header says image);
``GroundImages`` runs only over images the cache does not hold: it decodes each image
(once, here) and asks the VLM backend. Both take and return Ray's "numpy" batches (dict of
column -> array) so Ray and the local runner call them identically. Inside a batch "no
value" is the empty string (Ray turns a column of only None into float NaN);
``batch_to_table`` turns it back into null, the one place that conversion happens.
``ground_catalog`` wires them: hash -> cache lookup -> ground what is new -> the grounded
catalog rows. Bad images and failed answers are recorded as skips, never fatal, and their
items stay in the table, marked ``grounded`` false with the reason in ``ground_error``: the
encode stage embeds them from their catalog text.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from groundrec.offline import images
from groundrec.offline.cache import GroundingCache, cache_key, grounding_signature
from groundrec.offline.catalog import IMAGE_URI
from groundrec.offline.config import PromptConfig
from groundrec.offline.parse import parse_structured
from groundrec.offline.skips import Skips
from groundrec.offline.vlm.registry import VLMConfig, backend_class, load_backend, parse_vlm_config
from groundrec.shared.errors import UserError

HASH_BATCH = 64


class HashImages:
    """item_id, image_uri -> item_id, image_sha256, image_error ("" when fine)."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shas, errors = [], []
        for uri in batch["image_uri"]:
            try:
                data = images.read_bytes(uri)
                images.identify(data, uri)
                shas.append(images.sha256(data))
                errors.append("")
            except images.BadImage as e:
                shas.append("")
                errors.append(str(e))
        return {"item_id": batch["item_id"], "image_sha256": np.array(shas, dtype=object),
                "image_error": np.array(errors, dtype=object)}


class GroundImages:
    """item_id, image_uri, cache_key -> the grounding record (see cache.GROUNDING_SCHEMA)."""

    def __init__(self, vlm: dict, prompt: dict):
        self.prompt = PromptConfig.model_validate(prompt)
        self.backend = load_backend(parse_vlm_config(vlm))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        n = len(batch["item_id"])
        errors = [""] * n
        decoded, where = [], []
        for i, uri in enumerate(batch["image_uri"]):
            try:
                data = images.read_bytes(uri)
                if "image_sha256" in batch and images.sha256(data) != batch["image_sha256"][i]:
                    # its answer would be cached (and published) under the bytes hashed before
                    raise images.BadImage(f"image changed while the job ran (hashed, then read again): {uri}")
                decoded.append(images.decode(data, uri))
                where.append(i)
            except images.BadImage as e:
                errors[i] = str(e)
        texts = [""] * n
        for i, answer in zip(where, self.backend.generate(decoded, self.prompt) if decoded else []):
            if isinstance(answer, Exception):
                errors[i] = f"{VLM_ERROR}failed: {type(answer).__name__}: {answer}"
            elif not answer.strip():  # recorded, so never cached as a grounding: the next run asks again
                errors[i] = f"{VLM_ERROR}answered nothing (an empty text)"
            else:
                texts[i] = answer
        fields, ok, perr = [], [], []
        for t, err in zip(texts, errors):
            f, o, e = ("", False, "") if err else parsed_answer(t, self.prompt)
            fields.append(f), ok.append(o), perr.append(e)
        per_item = (time.perf_counter() - started) / max(n, 1)
        obj = lambda xs: np.array(xs, dtype=object)  # noqa: E731
        return {
            "item_id": batch["item_id"], "cache_key": batch["cache_key"], "image_sha256": batch["image_sha256"],
            "vlm_text": obj(texts), "vlm_fields": obj(fields), "parse_ok": np.array(ok, dtype=bool), "parse_error": obj(perr),
            "ground_error": obj(errors), "ground_seconds": np.full(n, per_item),
        }


def batch_to_table(b: dict) -> pa.Table:
    """A ground mapper's batch as Arrow, with "" turned back into nulls."""
    cols = {}
    for name, values in b.items():
        if name == "parse_ok":
            cols[name] = pa.array([bool(v) for v in values], pa.bool_())
        elif name != "ground_seconds":
            cols[name] = pa.array([str(v) if isinstance(v, str) and v else None for v in values], pa.string())
    return pa.table(cols)


@dataclass
class Grounded:
    """What the ground stage returns."""

    table: pa.Table  # the catalog rows with their grounding columns (vlm_text, vlm_<field>..., grounded, ...)
    new_by_id: dict[str, dict]  # the answers grounded in this run (the rest came from the cache)
    skipped: list[dict]  # {"item_id", "stage", "reason"}: images that could not be read or grounded
    timings_s: dict[str, float]  # hash, cache_lookup, ground, cache_compact


def ground_catalog(runner, items: pa.Table, *, id_column: str, vlm: VLMConfig, prompt: PromptConfig, cache_dir: Path,
                   progress: bool) -> Grounded:
    """hash -> cache lookup -> ground what is new -> the catalog rows with their grounding
    columns, the new answers, what was skipped and how long each step took."""
    skips, timings = Skips(), {}

    @contextmanager
    def timed(name: str):
        start = time.perf_counter()
        yield
        timings[name] = round(time.perf_counter() - start, 3)

    ids = items.column(id_column).to_pylist()
    uris = items.column(IMAGE_URI).to_pylist()
    with timed("hash"):
        sha_by_id = _hash_images(runner, ids, uris, skips, progress)
    given = [i for i, u in zip(ids, uris) if u]
    if len(given) >= ALL_FAILED_MIN and not sha_by_id:  # a wrong images_root, a store without its driver, an outage
        raise UserError(f"none of the {len(given)} catalog images could be read (e.g. "
                        f"{skips.reasons().get(given[0], 'no reason')}); nothing was published: check "
                        f"catalog.images_root and catalog.image_column (and the store's fsspec driver, e.g. s3fs)")

    cache = GroundingCache(cache_dir)
    signature = grounding_signature(vlm, prompt)
    vlm = getattr(backend_class(vlm), "pinned", lambda cfg: cfg)(vlm)  # every actor loads what the key names
    key_by_id = {iid: cache_key(sha, signature) for iid, sha in sha_by_id.items()}
    with timed("cache_lookup"):
        cached_by_key = {r["cache_key"]: r for r in cache.lookup(set(key_by_id.values())).to_pylist()}
    uri_by_id = dict(zip(ids, uris))
    todo = [i for i in ids if i in key_by_id and key_by_id[i] not in cached_by_key]
    first: dict[str, str] = {}  # one item per image and settings (its cache key): items sharing an image ask once
    for i in todo:
        first.setdefault(key_by_id[i], i)
    asking = list(first.values())
    with timed("ground"):
        todo_table = pa.table({"item_id": asking, "image_uri": [uri_by_id[i] for i in asking],
                               "image_sha256": [sha_by_id[i] for i in asking],
                               "cache_key": [key_by_id[i] for i in asking]})
        new_by_id, asked = _ground(runner, todo_table, vlm, prompt, cache, skips, progress)
        _share(todo, first, key_by_id, new_by_id, skips)
    if len(asked) >= ALL_FAILED_MIN and not new_by_id:  # a wrong model, a rotated key: nothing to publish ungrounded
        why = skips.reasons()
        raise UserError(f"the VLM grounded none of the {len(asked)} image(s) it was given "
                        f"(e.g. {why.get(asked[0], 'no answer')}); nothing was published: check vlm.model and "
                        f"its endpoint or key; a catalog that is not to be grounded is given without images")
    with timed("cache_compact"):
        cache.compact()

    answer = {i: new_by_id.get(i) or _reparsed(cached_by_key.get(key_by_id.get(i)), prompt) for i in ids}
    why = skips.reasons()
    rows = [{**answer[i], "image_sha256": sha_by_id[i], "from_cache": i not in new_by_id, "grounded": True,
             "ground_error": None} if answer[i] is not None else
            {**UNGROUNDED, "image_sha256": sha_by_id.get(i), "ground_error": why.get(i, "no grounding")}
            for i in ids]
    return Grounded(groundings_table(items, rows, prompt), new_by_id, skips.rows, timings)


def _share(todo: list[str], first: dict[str, str], key_by_id: dict[str, str], new_by_id: dict[str, dict],
           skips: Skips) -> None:
    """The items that share an image with the one asked (``first``, by cache key) get its
    answer, or its reason for having none."""
    why = {r["item_id"]: r for r in skips.rows}
    for i in todo:
        asked = first[key_by_id[i]]
        if i != asked and asked in new_by_id:
            new_by_id[i] = {**new_by_id[asked], "item_id": i}
        elif i != asked and asked in why:
            skips.add(i, why[asked]["stage"], why[asked]["reason"])


def not_grounded(items: pa.Table, prompt: PromptConfig, reason: str) -> Grounded:
    """The ground stage's result for a catalog that cannot be grounded at all (no image
    column): every item ungrounded for ``reason``, nothing skipped, no VLM loaded."""
    rows = [{**UNGROUNDED, "image_sha256": None, "ground_error": reason}] * items.num_rows
    return Grounded(groundings_table(items, rows, prompt), {}, [], {})


def parsed_answer(text: str, prompt: PromptConfig) -> tuple[str, bool, str]:
    """A VLM answer's fields (JSON), whether they parsed, and why not: the one parse of a new
    answer and of a cached one."""
    if prompt.style != "structured":
        return "{}", True, ""
    p = parse_structured(text, prompt.fields)
    return json.dumps(p.fields), p.ok, p.error or ""


def _reparsed(cached: dict | None, prompt: PromptConfig) -> dict | None:
    """A cached answer parsed again by the parser of this run (the cache keeps the VLM's text:
    a fixed parser reaches every cached item, not only the new ones)."""
    if cached is None or not cached.get("vlm_text"):
        return cached
    fields, ok, error = parsed_answer(cached["vlm_text"], prompt)
    return {**cached, "vlm_fields": fields, "parse_ok": ok, "parse_error": error}


VLM_ERROR = "VLM "  # how the reason of an image the VLM was given and did not ground begins (not a decode's)
# A run whose VLM grounds none of at least this many images stops (a few new items failing in a
# nightly run are published from their catalog text and asked again next time).
ALL_FAILED_MIN = 20

# The grounding columns of an item whose image could not be read or grounded.
UNGROUNDED = {"vlm_text": None, "vlm_fields": None, "parse_ok": False, "parse_error": None, "from_cache": False,
              "grounded": False}


def _hash_images(runner, ids: list[str], uris: list[str | None], skips: Skips, progress: bool) -> dict[str, str]:
    sha_by_id: dict[str, str] = {}
    bar = tqdm(total=len(ids), desc="read images", unit="img", disable=not progress)
    for b in runner.map(pa.table({"item_id": ids, "image_uri": pa.array(uris, pa.string())}), HashImages, {},
                        HASH_BATCH, concurrency=1):
        for iid, sha, err in zip(b["item_id"], b["image_sha256"], b["image_error"]):
            if err:
                skips.add(iid, "read", err)
            else:
                sha_by_id[iid] = sha
        bar.update(len(b["item_id"]))
    bar.close()
    return sha_by_id


def _ground(runner, todo: pa.Table, vlm: VLMConfig, prompt: PromptConfig, cache: GroundingCache, skips: Skips,
            progress: bool) -> tuple[dict[str, dict], list[str]]:
    """Ground the images the cache lacks; each finished batch goes to the cache at once. The
    new groundings, and the items whose image reached the VLM (not those that failed to
    decode: 20 truncated files are no sign of a broken VLM)."""
    res = backend_class(vlm).resources(vlm, runner.gpus())
    kwargs = {"vlm": vlm.model_dump(mode="json"), "prompt": prompt.model_dump(mode="json")}
    new_by_id: dict[str, dict] = {}
    asked: list[str] = []
    bar = tqdm(total=todo.num_rows, desc="ground (VLM)", unit="img", disable=not progress)
    for b in runner.map(todo, GroundImages, kwargs, vlm.batch_size, concurrency=res.actors,
                        num_gpus=res.gpus_per_actor):
        batch = batch_to_table(b)
        cache.append(batch)  # incremental: a crash keeps every finished batch
        for row in batch.to_pylist():
            if not row["ground_error"] or row["ground_error"].startswith(VLM_ERROR):
                asked.append(row["item_id"])
            if row["ground_error"]:
                skips.add(row["item_id"], "ground", row["ground_error"])
            else:
                new_by_id[row["item_id"]] = row
        bar.update(batch.num_rows)
    bar.close()
    return new_by_id, asked


def groundings_table(items: pa.Table, rows: list[dict], prompt) -> pa.Table:
    """The catalog rows plus their grounding columns, in catalog order (``grounded`` false and
    the reason in ``ground_error`` where there is no grounding)."""
    table = items
    for name in ("image_sha256", "vlm_text"):
        table = table.append_column(name, pa.array([r[name] for r in rows], pa.string()))
    if prompt.style == "structured":
        parsed = [json.loads(r["vlm_fields"] or "{}") for r in rows]
        for f in prompt.fields:
            table = table.append_column(f"vlm_{f}", pa.array([p.get(f) for p in parsed], pa.string()))
    table = table.append_column("parse_ok", pa.array([r["parse_ok"] for r in rows], pa.bool_()))
    table = table.append_column("parse_error", pa.array([r["parse_error"] for r in rows], pa.string()))
    table = table.append_column("from_cache", pa.array([r["from_cache"] for r in rows], pa.bool_()))
    table = table.append_column("grounded", pa.array([r["grounded"] for r in rows], pa.bool_()))
    return table.append_column("ground_error", pa.array([r["ground_error"] for r in rows], pa.string()))
