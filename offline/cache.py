"""Work caches for incremental runs: VLM answers and text embeddings, keyed by content.

- groundings: keyed by (image sha256, model, prompt, generation settings);
- embeddings: keyed by (encoder, max sequence length, text).

Each is a folder of Parquet shards, one per finished block of work, written to a
temporary name and renamed, so a run that crashes keeps everything it finished.
Only successes are cached: a failed image is tried again on the next run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from groundrec.offline.vlm.registry import backend_class

log = logging.getLogger("groundrec.offline")

GROUNDING_SCHEMA = pa.schema([
    ("cache_key", pa.string()), ("image_sha256", pa.string()), ("vlm_text", pa.string()),
    ("vlm_fields", pa.string()), ("parse_ok", pa.bool_()), ("parse_error", pa.string()),
])


def grounding_signature(vlm, prompt) -> dict:
    """Everything that changes a VLM's answer for the same image: the backend's identity of
    its model, generation settings and the prompt (``vlm``: a backend's settings;
    ``prompt``: a PromptConfig)."""
    return {
        **backend_class(vlm).identity(vlm),
        "max_new_tokens": vlm.max_new_tokens, "decoding": "greedy",
        "prompt": prompt.text(), "style": prompt.style, "caption_prefix": prompt.caption_prefix,
    }


EMBEDDING_LIBRARIES = ("sentence-transformers", "transformers", "tokenizers")


def embedding_signature(model: str, max_seq_length: int | None, libraries: dict | None = None) -> dict:
    """Everything that changes a text's embedding: the encoder's identity (``model_fingerprint``),
    its length limit, and the versions of the libraries that tokenize and pool (an upgrade may
    change them, and the export's check would then compare the ONNX encoder with the new
    library while the index kept the old one's vectors). ``libraries``: name -> version
    (default: those installed)."""
    if libraries is None:
        from importlib.metadata import PackageNotFoundError, version

        def installed(name: str) -> str:
            try:
                return version(name)
            except PackageNotFoundError:
                return "absent"

        libraries = {name: installed(name) for name in EMBEDDING_LIBRARIES}
    return {"encoder": model, "max_seq_length": max_seq_length, "libraries": dict(sorted(libraries.items()))}


def cache_key(content: str, signature: dict) -> str:
    blob = json.dumps({"content": content, **signature}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


class ParquetCache:
    """Rows keyed by ``cache_key`` in append-only Parquet shards."""

    def __init__(self, root: Path, schema: pa.Schema):
        self.root = Path(root)
        self.schema = schema
        self.root.mkdir(parents=True, exist_ok=True)

    def shards(self) -> list[Path]:
        return sorted(self.root.glob("shard-*.parquet"))

    def lookup(self, keys: set[str]) -> pa.Table:
        """Rows for the given keys (first write wins for a key written twice)."""
        wanted = pa.array(sorted(keys), pa.string())
        parts = [self.schema.empty_table()]
        for shard in self.shards():
            t = self._read(shard)
            if t is None:  # merged away by a concurrent compaction: at worst a miss, recomputed
                continue
            parts.append(t.filter(pc.is_in(t.column("cache_key"), value_set=wanted)))
        table = pa.concat_tables(parts)
        seen: set[str] = set()
        keep = []
        for k in table.column("cache_key").to_pylist():
            keep.append(k not in seen)
            seen.add(k)
        return table.filter(pa.array(keep, pa.bool_()))

    def append(self, rows: pa.Table) -> int:
        """Write the schema's columns of ``rows`` as one new shard; returns rows written."""
        if rows.num_rows == 0:
            return 0
        table = pa.table({f.name: rows.column(f.name).cast(f.type) for f in self.schema}, schema=self.schema)
        self._write(table)
        return table.num_rows

    def compact(self, max_shards: int = 64) -> None:
        """Merge shards into one once there are many (one per block adds up)."""
        shards = self.shards()
        if len(shards) <= max_shards:
            return
        # Another process may be compacting the same folder: a shard it already merged and
        # removed is skipped here, and removing one twice is fine (rows may then be written
        # twice; lookups keep the first).
        tables = [t for t in (self._read(p) for p in shards) if t is not None]
        self._write(pa.concat_tables(tables))
        for p in shards:
            p.unlink(missing_ok=True)

    def _read(self, shard: Path) -> pa.Table | None:
        """A shard's rows; None when it is gone (merged by a concurrent compaction) or not a
        Parquet file (cut short by a crash: set aside as ``*.bad``, logged, and its rows
        recomputed; every later run failed on it). Other errors (memory, the disk) are raised:
        they say nothing about the shard."""
        try:
            return pq.read_table(shard, schema=self.schema)
        except FileNotFoundError:
            return None
        except pa.ArrowInvalid as e:  # not a Parquet file (no magic bytes or footer): a write cut short
            log.warning("cache shard %s cannot be read (%s: %s): set aside as .bad, its rows will be recomputed",
                        shard, type(e).__name__, e)
            try:
                os.replace(shard, shard.with_name(shard.name + ".bad"))
            except OSError:
                pass
            return None

    def _write(self, table: pa.Table) -> None:
        name = f"shard-{uuid.uuid4().hex}.parquet"
        tmp = self.root / f".{name}.tmp"
        pq.write_table(table, tmp)
        with open(tmp, "rb") as f:  # on disk before it is named: a crash leaves no empty shard behind
            os.fsync(f.fileno())
        os.replace(tmp, self.root / name)


class GroundingCache(ParquetCache):
    def __init__(self, root: Path):
        super().__init__(Path(root) / "groundings", GROUNDING_SCHEMA)

    def append(self, batch: pa.Table) -> int:
        """Cache the successful rows of a ground batch."""
        return super().append(batch.filter(pc.is_null(batch.column("ground_error"))))


class EmbeddingCache(ParquetCache):
    def __init__(self, root: Path):
        schema = pa.schema([("cache_key", pa.string()), ("vector", pa.list_(pa.float32()))])
        super().__init__(Path(root) / "embeddings", schema)

    def get(self, keys: set[str]) -> dict[str, np.ndarray]:
        table = self.lookup(keys)
        if table.num_rows == 0:
            return {}
        flat = table.column("vector").combine_chunks().flatten().to_numpy()
        return dict(zip(table.column("cache_key").to_pylist(), flat.reshape(table.num_rows, -1)))

    def put(self, keys: list[str], vectors: np.ndarray) -> int:
        vectors = np.asarray(vectors, np.float32)
        offsets = pa.array(np.arange(0, vectors.size + 1, max(vectors.shape[1], 1), dtype=np.int32))
        vec = pa.ListArray.from_arrays(offsets, pa.array(vectors.ravel()))
        return self.append(pa.table({"cache_key": pa.array(keys, pa.string()), "vector": vec}))
