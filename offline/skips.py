"""What went wrong with an item, with the stage and the reason: written to skipped.parquet,
summarised by kind of reason. Never fatal. An item whose image failed (stage read or
ground) is still published from its catalog text; one with nothing to embed (stage embed)
is the only kind left out of the version."""

from __future__ import annotations

import pyarrow as pa

SCHEMA = pa.schema([("item_id", pa.string()), ("stage", pa.string()), ("reason", pa.string())])


class Skips:
    """The skip records of a run ({"item_id", "stage", "reason"}), as the stages returned them."""

    def __init__(self, rows: list[dict] | None = None):
        self.rows: list[dict] = list(rows or [])

    def add(self, item_id: str, stage: str, reason: str) -> None:
        self.rows.append({"item_id": item_id, "stage": stage, "reason": reason})

    def reasons(self) -> dict[str, str]:
        """item id -> "stage: reason" of its latest problem."""
        return {r["item_id"]: f"{r['stage']}: {r['reason']}" for r in self.rows}

    def dropped(self) -> int:
        return sum(r["stage"] == "embed" for r in self.rows)

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
