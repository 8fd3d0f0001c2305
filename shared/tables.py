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
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"cannot read {path}: use one of {sorted(FORMATS)}")
    if not path.exists():
        raise FileNotFoundError(f"table not found: {path}")
    if kind == "parquet":
        return pq.read_table(path)
    if kind == "csv":
        # Ids like 0108775015 must stay strings: read every column as text first.
        header = pcsv.open_csv(path).schema.names
        return pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in header}))
    return pjson.read_json(path)
