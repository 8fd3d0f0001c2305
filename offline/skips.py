"""Items the job could not use, with the stage and the reason: written to skipped.parquet,
summarised by kind of reason. Never fatal."""

from __future__ import annotations

import pyarrow as pa

SCHEMA = pa.schema([("item_id", pa.string()), ("stage", pa.string()), ("reason", pa.string())])


class Skips:
    def __init__(self):
        self.rows: list[dict] = []

    def add(self, item_id: str, stage: str, reason: str) -> None:
        self.rows.append({"item_id": item_id, "stage": stage, "reason": reason})

    def __len__(self) -> int:
        return len(self.rows)

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=SCHEMA)

    def by_kind(self) -> dict[str, int]:
        """Counts by the reason's kind (the text before its first colon)."""
        kinds: dict[str, int] = {}
        for r in self.rows:
            kind = r["reason"].split(":")[0]
            kinds[kind] = kinds.get(kind, 0) + 1
        return kinds
