"""The live catalog's changes checked against a served version before anything is stored
(online/live_checks.py): each refusal names the item and what is wrong; a change the version
can take passes and leaves the version as it was."""

from __future__ import annotations

import pytest

from groundrec.online.config import ServeConfig
from groundrec.online.errors import NotFound, Unprocessable
from groundrec.online.live_checks import check_changes
from groundrec.online.serving import build_serving
from groundrec.shared import artifact
from helpers import publish_demo

NEW = {"title": "zebra raincoat", "description": "A raincoat.", "category": "raincoat", "colour": "zebra"}


@pytest.fixture(scope="module")
def retriever(tmp_path_factory, tiny_vlm):
    pub = publish_demo(tmp_path_factory.mktemp("checks"), tiny_vlm(), n_items=20)
    vid = artifact.current_version(pub["artifacts"])
    serving = build_serving(ServeConfig(artifacts=pub["artifacts"], events="none", compute="thread"), vid,
                            artifact.locate(pub["artifacts"], vid))
    return serving.retriever


@pytest.mark.parametrize("change, error, says", [
    (("x1", "put", {**NEW, "size": "L"}), Unprocessable, "unknown column(s) ['size']"),
    (("x1", "put", {"titel": "zebra coat"}), Unprocessable, "unknown column(s) ['titel']"),  # not "nothing to embed"
    (("x1", "put", {**NEW, "vlm_text": "forged"}), Unprocessable, "vlm_text"),  # the job derives it
    (("x1", "put", {**NEW, "title": 7}), Unprocessable, "column 'title' holds string, not 7"),
    (("ghost", "patch", {"hidden": True}), NotFound, "no item 'ghost' to patch"),
    (("ghost", "delete", {}), NotFound, "no item 'ghost' to delete"),
])
def test_a_change_the_version_cannot_take_is_refused_naming_it(retriever, change, error, says):
    with pytest.raises(error, match=None) as e:
        check_changes(retriever, [("ok", "put", NEW), change])
    assert says in str(e.value) and change[0] in str(e.value)


@pytest.mark.parametrize("value, kind, ok", [
    (19.99, "int64", False),  # Arrow would store 19
    (20.0, "int64", True), (20, "float64", True), (0.1, "float32", True),  # the column's own precision
    ("x", "list<string>", False), (["x"], "list<string>", True),  # a scalar is not a list of it
    (True, "int64", False), (True, "float64", False), (True, "bool", True), (7, "string", False), (None, "int64", True),
    (1.5, "timestamp[s]", False), (1.0, "timestamp[s]", True),  # not cut to whole seconds
    (1e300, "float32", False), (1e30, "float32", True),  # overflows to inf; within range
])
def test_a_value_is_held_only_where_its_column_keeps_what_it_says(value, kind, ok):
    import pyarrow as pa

    from groundrec.online.live_checks import held

    types = {"int64": pa.int64(), "float64": pa.float64(), "float32": pa.float32(), "string": pa.string(), "bool": pa.bool_(),
             "list<string>": pa.list_(pa.string()), "timestamp[s]": pa.timestamp("s")}
    assert held(value, types[kind]) is ok


def test_a_change_it_can_take_passes_and_changes_nothing(retriever):
    n, first = retriever.v.index.ntotal, retriever.v.item_ids[0]
    check_changes(retriever, [("x2", "put", NEW), (first, "patch", {"hidden": True}), (first, "delete", {})])
    assert retriever.v.index.ntotal == n and retriever.live is None


def test_without_the_text_encoder_only_rules_and_deletes_can_be_applied(retriever, monkeypatch):
    first = retriever.v.item_ids[0]
    monkeypatch.setattr(retriever, "encoder", None)  # a version published without export
    with pytest.raises(Unprocessable, match="no ONNX text encoder"):
        check_changes(retriever, [("x3", "put", NEW)])
    with pytest.raises(Unprocessable, match="no ONNX text encoder"):  # a PUT is the item whole: its text changes
        check_changes(retriever, [(first, "put", {"hidden": True})])
    check_changes(retriever, [(first, "patch", {"hidden": True, "available_until": 1e10}), (first, "delete", {})])


def test_a_pinned_arm_that_predates_an_item_does_not_refuse_its_patch_or_delete(retriever):
    """Only the current version must hold a patched or deleted item (``must_exist``): an
    experiment's arm pinned to an older version checks columns and types alone."""
    check_changes(retriever, [("ghost", "patch", {"hidden": True}), ("ghost", "delete", {})], must_exist=False)
    with pytest.raises(Unprocessable, match="unknown column"):
        check_changes(retriever, [("ghost", "patch", {"size": "L"})], must_exist=False)


def test_a_pinned_arm_that_cannot_take_a_change_keeps_it_from_no_other_version():
    """An arm's version without its ONNX encoder raised, and the versions after it (the current
    one among them) never got the change: every write to that server failed although stored."""
    from types import SimpleNamespace

    from groundrec.online.live_checks import apply_everywhere
    from groundrec.shared.errors import UserError

    arm, current, other = (SimpleNamespace(version_id=v) for v in ("arm", "current", "other"))
    got = []

    def apply(backend):
        if backend is arm or getattr(backend, "broken", False):
            raise UserError("live items need the version's ONNX encoder, which is not loaded")
        got.append(backend.version_id)
    apply_everywhere([arm, current, other], current, apply)
    assert got == ["current", "other"]
    current.broken = True
    with pytest.raises(UserError, match="ONNX"):  # the current version's own failure is the write's
        apply_everywhere([current, arm, other], current, apply)
    assert got == ["current", "other", "other"]
