"""Grounding cache: VLM answers keyed by (image content, model, prompt, generation settings).

Stored as Parquet shards written one per batch with an atomic rename, so a run that
crashes keeps every batch it finished. Only successful groundings are cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from groundrec.shared.config import PromptConfig, VLMConfig

SCHEMA = pa.schema([
    ("cache_key", pa.string()), ("image_sha256", pa.string()), ("vlm_text", pa.string()),
    ("vlm_fields", pa.string()), ("parse_ok", pa.bool_()), ("parse_error", pa.string()),
])


def grounding_signature(vlm: VLMConfig, prompt: PromptConfig, fingerprint: str) -> dict:
    """Everything that changes a VLM's answer for the same image."""
    return {
        "backend": vlm.backend, "model": vlm.model if vlm.backend == "openai" else fingerprint,
        "endpoint_model": vlm.model, "revision": vlm.revision, "dtype": vlm.dtype,
        "max_new_tokens": vlm.max_new_tokens, "decoding": "greedy",
        "prompt": prompt.text(), "style": prompt.style, "caption_prefix": prompt.caption_prefix,
    }


def cache_key(image_sha256: str, signature: dict) -> str:
    blob = json.dumps({"image": image_sha256, **signature}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


class GroundingCache:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def shards(self) -> list[Path]:
        return sorted(self.root.glob("shard-*.parquet"))

    def lookup(self, keys: set[str]) -> pa.Table:
        """Rows for the given keys (first write wins for a key written twice)."""
        wanted = pa.array(sorted(keys), pa.string())
        parts = [SCHEMA.empty_table()]
        for shard in self.shards():
            t = pq.read_table(shard, schema=SCHEMA)
            parts.append(t.filter(pc.is_in(t.column("cache_key"), value_set=wanted)))
        table = pa.concat_tables(parts)
        seen: set[str] = set()
        keep = []
        for k in table.column("cache_key").to_pylist():
            keep.append(k not in seen)
            seen.add(k)
        return table.filter(pa.array(keep, pa.bool_()))

    def append(self, batch: pa.Table) -> int:
        """Write the successful rows of a ground batch as one new shard; returns rows written."""
        ok = batch.filter(pc.is_null(batch.column("ground_error")))
        if ok.num_rows == 0:
            return 0
        table = pa.table({name: ok.column(name).cast(SCHEMA.field(name).type) for name in SCHEMA.names}, schema=SCHEMA)
        name = f"shard-{uuid.uuid4().hex}.parquet"
        tmp = self.root / f".{name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, self.root / name)
        return table.num_rows

    def compact(self, max_shards: int = 64) -> None:
        """Merge shards into one once there are many (one per batch adds up); atomic per file."""
        shards = self.shards()
        if len(shards) <= max_shards:
            return
        table = pa.concat_tables([pq.read_table(s, schema=SCHEMA) for s in shards])
        name = f"shard-{uuid.uuid4().hex}.parquet"
        tmp = self.root / f".{name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, self.root / name)
        for s in shards:
            s.unlink()
