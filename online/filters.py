"""Filters on catalog columns: which item rows a request allows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from groundrec.shared.errors import UserError


def allowed_rows(items: pa.Table, filters: dict[str, object] | None) -> np.ndarray | None:
    """Boolean mask over rows that pass every filter (column == value, or value in a list);
    None without filters. ValueError naming the column or the value that cannot be used."""
    if not filters:
        return None
    mask = np.ones(items.num_rows, dtype=bool)
    for column, wanted in filters.items():
        if column not in items.column_names:
            names = sorted(items.column_names)
            shown = ", ".join(names[:8]) + (f" ... ({len(names)} in all; GET /items/ID shows them)"
                                            if len(names) > 8 else "")
            raise UserError(f"unknown filter column {column[:80]!r}; filterable columns: {shown}")
        values = wanted if isinstance(wanted, (list, tuple, set)) else [wanted]
        col = _plain(items.column(column), f"filter column {column!r}")
        try:
            value_set = _typed(list(values), col.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, OverflowError):
            raise UserError(f"filter {column!r}: {wanted!r} does not match the column's type ({col.type})") from None
        try:
            hit = pc.is_in(col, value_set=value_set)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
            raise UserError(f"filter column {column!r} ({col.type}) cannot be compared with {wanted!r}: {e}") from None
        mask &= np.asarray(pc.fill_null(hit, False))
    return mask


def _typed(values: list, type_: pa.DataType) -> pa.Array:
    """The filter's values as the column's type; text read as that type when it is all text (a
    query string, the page's "equals" field: ``"10"`` for an integer column, ``"true"``)."""
    try:
        return pa.array(values, type_)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        if not values or not all(isinstance(v, str) for v in values):
            raise
        return pa.array(values, pa.string()).cast(type_)


def group_codes(items: pa.Table, column: str) -> np.ndarray:
    """Each row's group in ``column`` as an int code (equal values, equal codes; -1 for a null),
    for ``max_per``. UserError naming the column when the items do not have it."""
    if column not in items.column_names:
        names = sorted(items.column_names)
        raise UserError(f"max_per names column {column[:80]!r}, which the items do not have; columns: "
                        + ", ".join(names[:8]) + (" ..." if len(names) > 8 else ""))
    col = _plain(items.column(column), f"max_per column {column!r}")
    try:
        codes = pc.dictionary_encode(col.combine_chunks()).indices
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        raise UserError(f"max_per column {column!r} ({col.type}) cannot be grouped by value: {e}") from None
    return np.asarray(pc.fill_null(codes, -1), dtype=np.int64)


def _plain(col: pa.ChunkedArray, what: str) -> pa.ChunkedArray:
    """``col`` as one plain value a row (a dictionary column, e.g. a pandas category, decoded);
    UserError for a list, struct or map column, which cannot be compared value by value (a
    request naming one is the request's problem, a 4xx, never a 500 for every request batched
    with it)."""
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if pa.types.is_nested(col.type):
        raise UserError(f"{what} holds {col.type} values; filters and max_per take columns of one plain value per "
                        f"item (text, numbers, booleans, times)")
    return col
