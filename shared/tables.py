"""Reading tables in the formats users hand us (Parquet, CSV, JSON lines)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from groundrec.shared.errors import UserError

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "json", ".ndjson": "json", ".json": "json"}


def read_table(path: str | Path) -> pa.Table:
    """A table file; a folder of Parquet files (hive-partitioned, e.g. ``groundrec events
    export``'s); or an event store URL (``sqlite:///...``, ``redis://...``): its events."""
    from groundrec.shared.events.store import is_store_url

    if is_store_url(str(path)):
        from groundrec.shared.events import open_existing
        from groundrec.shared.events.export import table

        store = open_existing(str(path))
        try:
            return table(store)
        finally:
            store.close()
    path = Path(path)
    if path.is_dir():
        import pyarrow.dataset as ds

        return ds.dataset(path, format="parquet", partitioning="hive").to_table()
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"cannot read {path}: use one of {sorted(FORMATS)}")
    if not path.exists():
        raise FileNotFoundError(f"table not found: {path}")
    try:
        if kind == "parquet":
            return pq.read_table(path)
        if kind == "csv":
            # Ids like 0108775015 must stay strings: read every column as text first.
            header = pcsv.open_csv(path).schema.names
            return pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in header}))
        return pjson.read_json(path)
    except pa.ArrowInvalid as e:  # corrupt Parquet, a CSV not in UTF-8, an empty file
        raise UserError(f"cannot read {path} as {kind}: {e}") from None
