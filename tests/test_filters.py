"""online/filters.py: the rows a request's filters allow, and max_per's groups, against a plain
Python loop over the rows."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from groundrec.online.filters import allowed_rows, group_codes
from groundrec.shared.errors import UserError


def _items(n: int = 300, seed: int = 0) -> pa.Table:
    rng = random.Random(seed)
    return pa.table({
        "item_id": [f"i{r}" for r in range(n)],
        "colour": [rng.choice(["red", "blue", "green", None]) for _ in range(n)],
        "size": pa.array([rng.choice([1, 2, 3, None]) for _ in range(n)], pa.int64()),
        "product_code": [f"p{rng.randrange(40)}" for _ in range(n)],
    })


def _naive(items: pa.Table, filters: dict) -> list[bool]:
    rows = items.to_pylist()
    return [all(row[c] in (w if isinstance(w, (list, tuple, set)) else [w]) for c, w in filters.items())
            for row in rows]


@pytest.mark.parametrize("filters", [
    {"colour": "red"},
    {"colour": ["red", "blue"]},
    {"colour": ("green",), "size": [2, 3]},
    {"size": 1},
    {"colour": "purple"},  # nothing passes
    {"colour": ["red", "blue", "green"], "size": [1, 2, 3]},  # everything but the nulls
])
def test_allowed_rows_match_a_loop_over_rows(filters):
    items = _items()
    mask = allowed_rows(items, filters)
    assert mask.dtype == bool and mask.shape == (items.num_rows,)
    assert mask.tolist() == _naive(items, filters)


def test_no_filter_allows_everything_without_a_mask():
    assert allowed_rows(_items(), None) is None and allowed_rows(_items(), {}) is None


def test_a_null_never_passes_a_filter():
    items = pa.table({"colour": ["red", None, "red"]})
    assert allowed_rows(items, {"colour": "red"}).tolist() == [True, False, True]


def test_unknown_columns_and_values_of_the_wrong_type_are_the_users_error():
    items = _items()
    with pytest.raises(UserError, match="unknown filter column 'material'.*colour"):
        allowed_rows(items, {"material": "wool"})
    with pytest.raises(UserError, match="filter 'size'.*int64"):
        allowed_rows(items, {"size": "large"})


def test_text_is_read_as_the_column_s_type():
    """The page's "equals" field and a query string send text: "2" filters an integer column
    (it was refused as of the wrong type, so the page could filter no number)."""
    items = _items()
    assert allowed_rows(items, {"size": "2"}).tolist() == allowed_rows(items, {"size": 2}).tolist()
    assert allowed_rows(items, {"size": ["1", "3"]}).tolist() == _naive(items, {"size": [1, 3]})
    flags = pa.table({"hidden": [True, False, True]})
    assert allowed_rows(flags, {"hidden": "false"}).tolist() == [False, True, False]


def test_group_codes_give_equal_values_equal_codes_and_nulls_minus_one():
    items = _items()
    codes = group_codes(items, "colour")
    values = items.column("colour").to_pylist()
    assert codes.dtype == np.int64
    for a in range(len(values)):
        assert (codes[a] == -1) == (values[a] is None)
        for b in range(a + 1, min(a + 40, len(values))):
            if values[a] is not None and values[b] is not None:
                assert (codes[a] == codes[b]) == (values[a] == values[b])
    assert len(set(group_codes(items, "product_code").tolist())) == len(set(items.column("product_code").to_pylist()))
    with pytest.raises(UserError, match="max_per names column 'brand'"):
        group_codes(items, "brand")


def test_group_codes_over_a_chunked_column_are_one_dictionary():
    items = pa.concat_tables([pa.table({"c": ["a", "b"]}), pa.table({"c": ["b", "a"]})])
    codes = group_codes(items, "c").tolist()
    assert codes[0] == codes[3] and codes[1] == codes[2] and codes[0] != codes[1]


def test_a_list_column_is_the_user_s_error_and_a_dictionary_column_is_read_by_value():
    """A catalog column of lists (JSONL tags) raised pyarrow's own error (a 500 for every request
    batched with it); a dictionary column (a pandas category) failed the same way."""
    items = _items().append_column("tags", pa.array([["red", "sale"]] * 300))
    items = items.append_column("category", pa.array([f"c{r % 3}" for r in range(300)]).dictionary_encode())
    for call in (lambda: allowed_rows(items, {"tags": "red"}), lambda: allowed_rows(items, {"tags": []}),
                 lambda: group_codes(items, "tags")):
        with pytest.raises(UserError, match="'tags' holds list"):
            call()
    assert allowed_rows(items, {"category": ["c1"]}).tolist() == [r % 3 == 1 for r in range(300)]
    codes = group_codes(items, "category")
    assert len(set(codes.tolist())) == 3 and codes[0] == codes[3] != codes[1]
