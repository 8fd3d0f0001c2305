"""Read stage: load a catalog table, validate it, resolve where each image lives."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from groundrec.shared.config import CatalogConfig
from groundrec.shared.errors import UserError
from groundrec.shared.live_items import CONTROL, derived, epoch_seconds
from groundrec.shared.tables import read_table

IMAGE_URI = "image_uri"
NO_IMAGE_COLUMN = "the catalog has no image column"
CONTROL_TYPES = {"hidden": pa.bool_(), "available_until": pa.float64()}  # as the service reads them


class CatalogError(UserError):
    """The catalog cannot be used as given; the message says what to fix."""


def load_catalog(cfg: CatalogConfig) -> pa.Table:
    """Return the catalog with ids as strings and an ``image_uri`` column added (all null when
    the catalog has no ``image_column``: a text-only catalog, see ``text_only``).

    Raises CatalogError for an empty catalog, missing id or text columns, null or duplicate ids.
    """
    if cfg.path is None:
        raise CatalogError("no catalog given: pass --catalog PATH (Parquet, CSV or JSONL)")
    table = read_table(cfg.path)
    needed = [cfg.id_column, *cfg.text_columns]
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise CatalogError(
            f"catalog {cfg.path} lacks column(s) {missing}; it has {table.column_names}. "
            "Name the columns in the config's catalog block (catalog.id_column, catalog.text_columns); on the "
            "command line: `offline run --id-column/--text-columns`, "
            "`eval --set catalog.id_column=...`"
        )
    if table.num_rows == 0:
        raise CatalogError(f"catalog {cfg.path} is empty: nothing to ground")
    nested = [c for c in (cfg.id_column, *cfg.text_columns, cfg.image_column) if c in table.column_names
              and pa.types.is_nested(table.schema.field(c).type)]
    if nested:  # a cast to text would fail deep in the job with Arrow's own error
        raise CatalogError(f"catalog {cfg.path}: column(s) {nested} hold lists or records "
                           f"({[str(table.schema.field(c).type) for c in nested]}); the id, text and image columns "
                           f"take one value per item: join a list of texts into one text (e.g. 'red, sale'), and "
                           f"of several images keep one (the main picture's path or URL)")
    ids = pc.cast(table.column(cfg.id_column), pa.string())
    if ids.null_count:
        raise CatalogError(f"catalog {cfg.path}: {ids.null_count} row(s) have no {cfg.id_column!r}")
    blank = pc.indices_nonzero(pc.equal(pc.utf8_trim_whitespace(ids), "")).to_pylist()
    if blank:  # an empty CSV cell reads as "": its grounding would be stored as no id's
        raise CatalogError(f"catalog {cfg.path}: {len(blank)} row(s) have an empty {cfg.id_column!r} "
                           f"(rows {blank[:5]}, counted from 0); give every item an id")
    counts = pc.value_counts(ids)
    dupes = [v["values"] for v in counts.to_pylist() if v["counts"] > 1]
    if dupes:
        raise CatalogError(
            f"catalog {cfg.path}: {len(dupes)} duplicate {cfg.id_column!r} value(s), e.g. {dupes[:5]}; ids must be unique"
        )
    written = [c for c in table.column_names if derived(c) and c not in CONTROL]
    if written:
        raise CatalogError(f"catalog {cfg.path}: column(s) {written} are written by the job (image URIs, groundings, "
                           f"the embedded text); rename them in the catalog (an image column: catalog.image_column)")
    table = control_columns(table.set_column(table.column_names.index(cfg.id_column), cfg.id_column, ids), cfg.path)
    for col in cfg.text_columns:
        i = table.column_names.index(col)
        table = table.set_column(i, col, pc.fill_null(pc.cast(table.column(col), pa.string()), ""))
    if cfg.image_column not in table.column_names:
        return table.append_column(IMAGE_URI, pa.nulls(table.num_rows, pa.string()))
    root = cfg.images_root or Path(cfg.path).parent
    uris = [resolve_image(v, root) for v in table.column(cfg.image_column).to_pylist()]
    return table.append_column(IMAGE_URI, pa.array(uris, pa.string()))


def control_columns(table: pa.Table, path) -> pa.Table:
    """The catalog's own ``hidden`` and ``available_until`` columns, where it has them, as the
    service reads them (``CONTROL_TYPES``): ``hidden`` true or false (booleans, 0 and 1, or
    the words true, false, 1 and 0), ``available_until`` seconds since the epoch (numbers,
    dates and times, naive ones as UTC, or texts of either: ``shared.live_items.epoch_seconds``).
    Anything else is refused, naming the column and a value: read as it is, a text of a
    date would hide every item."""
    for name, kind in CONTROL_TYPES.items():
        if name not in table.column_names:
            continue
        col, i = table.column(name), table.column_names.index(name)
        try:
            values = _control_values(name, col)
        except (ValueError, pa.ArrowException) as e:
            raise CatalogError(f"catalog {path}: column {name!r} ({col.type}) cannot be read: {e}; {name} holds "
                               + ("true or false" if name == "hidden" else
                                  "seconds since the epoch, a date or time, or an ISO 8601 text")
                               + " (empty: no rule)") from None
        table = table.set_column(i, pa.field(name, kind), pa.array(values, kind))
    return table


def _control_values(name: str, col: pa.ChunkedArray) -> list:
    kind = col.type
    if name == "hidden":
        if pa.types.is_boolean(kind) or pa.types.is_null(kind):
            return col.to_pylist()
        words = {"true": True, "false": False, "1": True, "0": False, "": None}
        out = []
        for v in col.to_pylist():
            key = ("" if v is None or v != v else str(int(v)) if isinstance(v, float) and v in (0.0, 1.0)
                   else str(v).strip().lower())  # v != v: NaN, a float column's missing value
            if key not in words:
                raise ValueError(f"{v!r} is not true or false")
            out.append(words[key])
        return out
    if pa.types.is_date(kind):
        col = pc.cast(col, pa.timestamp("s"))
        kind = col.type
    if pa.types.is_timestamp(kind):
        micros = pc.cast(pc.cast(col, pa.timestamp("us", kind.tz)), pa.int64())
        return [None if v is None else v / 1e6 for v in micros.to_pylist()]
    return [epoch_seconds(_number(v) if isinstance(v, str) else v) for v in col.to_pylist()]


def _number(text: str):
    """A CSV cell (read as text): a number where it spells one, None where blank, else itself.
    A year alone ("2030") would be 2030 seconds after 1970: every item expired; refused."""
    if text.strip().isdigit() and len(text.strip()) <= 4:
        raise ValueError(f"{text!r} looks like a year, not seconds since the epoch: give a date (2030-01-01)")
    try:
        return float(text) if text.strip() else None
    except ValueError:
        return text


def text_only(items: pa.Table, cfg: CatalogConfig) -> str | None:
    """Why nothing of this catalog can be grounded (it has no image column), or None. Such a
    catalog is embedded from its text columns; no VLM is loaded."""
    if cfg.image_column in items.column_names:
        return None
    others = [c for c in items.column_names if c != IMAGE_URI]
    return (f"{NO_IMAGE_COLUMN} {cfg.image_column!r}: every item is embedded from its catalog text "
            f"{cfg.text_columns} and no VLM runs; if the images are in one of {others}, name it with "
            "catalog.image_column (--image-column)")


def resolve_image(value: str | None, root: str | Path) -> str | None:
    """An absolute path or URI stays as it is; a relative path is taken under ``root`` (a
    folder, or a URI such as s3://bucket/images)."""
    if value is None or str(value).strip() == "":
        return None
    value = str(value)
    if "://" in value or Path(value).is_absolute():
        return value
    if "://" in str(root):
        return f"{str(root).rstrip('/')}/{value}"
    return str((Path(root) / value).resolve())
