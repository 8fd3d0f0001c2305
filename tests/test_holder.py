"""The version holder (online/holder.py): the current version, and the versions an experiment
pins beside it, over versions published by the real job."""

from __future__ import annotations

import pytest

from groundrec.offline.config import load_job_config
from groundrec.offline.job import run_job
from groundrec.online.config import ServeConfig
from groundrec.online.holder import VersionHolder
from groundrec.online.schemas import UserQuery
from groundrec.shared import artifact
from helpers import publish_demo


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory, tiny_vlm):
    pub = publish_demo(tmp_path_factory.mktemp("holder"), tiny_vlm(), n_items=20, n_users=4)
    second = run_job(load_job_config(None, pub["overrides"]), progress=False).version
    return pub["artifacts"], pub["version"], second


def _holder(artifacts, arms, **extra) -> VersionHolder:
    cfg = ServeConfig(artifacts=artifacts, compute="thread", events="none",
                      experiment={"arms": arms}, **extra)
    return VersionHolder(cfg)


def test_an_experiment_s_pinned_version_is_loaded_beside_the_current_one(two_versions):
    artifacts, first, second = two_versions
    assert artifact.current_version(artifacts) == second
    holder = _holder(artifacts, [{"name": "A"}, {"name": "B", "version": first}])
    try:
        assert holder.check()
        assert holder.current.version_id == second and set(holder.pinned) == {first}
        assert holder.backend("current") is holder.current and holder.backend(second) is holder.current
        assert holder.backend(first).version_id == first
        assert {first, second} <= artifact.serving_versions(artifacts)  # gc keeps both
        pinned = holder.backend(first)
        answer = pinned.recommend(UserQuery(history=[pinned.retriever.v.item_ids[0]], k=3))
        assert answer.version == first and len(answer.items) == 3
    finally:
        holder.stop()


NOPE = "20200101T000000.000000Z-abcdef"  # a version id no version has


def test_a_pinned_version_that_cannot_load_is_rejected_and_the_arm_left_to_current(two_versions):
    artifacts, _, second = two_versions
    failures = []
    holder = VersionHolder(ServeConfig(artifacts=artifacts, compute="thread", events="none",
                                       experiment={"arms": [{"name": "A"}, {"name": "B", "version": NOPE}]}),
                           on_failed=lambda v, why: failures.append(v))
    try:
        holder.check()
        assert holder.current.version_id == second
        assert holder.backend(NOPE) is None and NOPE in holder.rejected and failures == [NOPE]
    finally:
        holder.stop()


def test_live_items_reach_the_pinned_arm_and_survive_a_hot_swap(two_versions):
    """Live items apply to every loaded version, and a version swapped in gets them before it
    serves (the holder re-applies the live catalog)."""
    from groundrec.shared.live_items import LiveItem

    artifacts, first, second = two_versions
    holder = _holder(artifacts, [{"name": "A"}, {"name": "B", "version": first}])
    item = LiveItem("live-x", {"title": "quokka lantern", "description": "A quokka lantern."}, True, 1.0, 1.0, 1)
    try:
        assert holder.check()
        holder.apply_live([item])
        for backend in (holder.current, holder.backend(first)):
            assert backend.retriever.search("quokka lantern", k=1).items[0].item_id == "live-x"
        artifact.activate(artifacts, first)  # CURRENT moves onto the pinned version: one backend serves both
        assert holder.check() and holder.current.version_id == first
        assert holder.current.retriever.search("quokka lantern", k=1).items[0].item_id == "live-x"
        artifact.activate(artifacts, second)  # and back: a fresh load of the second version gets it too
        assert holder.check() and holder.current.version_id == second
        assert holder.current.retriever.search("quokka lantern", k=1).items[0].item_id == "live-x"
        assert holder.current.retriever.v.item_ids.count("live-x") == 1
    finally:
        holder.stop()
        artifact.activate(artifacts, second)


def test_a_pinned_arm_made_current_catches_up_on_the_live_changes_it_missed(two_versions):
    """A change the arm could not take (its compute call failed: logged and skipped) was never
    applied to it again: made current, it served an item deleted meanwhile."""
    from groundrec.shared.live_items import LiveItem

    artifacts, first, second = two_versions
    holder = _holder(artifacts, [{"name": "A"}, {"name": "B", "version": first}])
    item = LiveItem("live-y", {"title": "quokka lantern", "description": "A quokka lantern."}, True, 1.0, 1.0, 1)
    try:
        assert holder.check()
        arm = holder.backend(first)
        holder.live[item.item_id] = item  # where apply_live leaves it when the arm's call failed (skipped):
        holder._apply(holder.current, [item])  # held, applied to the current version alone
        assert "live-y" not in arm.retriever.v.row_of
        artifact.activate(artifacts, first)  # the arm's backend becomes current
        assert holder.check() and holder.current is arm
        assert arm.retriever.search("quokka lantern", k=1).items[0].item_id == "live-y"
    finally:
        holder.stop()
        artifact.activate(artifacts, second)


def test_a_live_change_a_version_cannot_take_is_skipped_and_blocks_nothing(two_versions, caplog):
    """A change stored through another version (a column of another type there) cannot be
    applied here: skipped and logged, the others applied, and a swap to this version is not
    refused for it (the whole batch failed, every later change with it, for ever)."""
    from groundrec.shared.live_items import LiveItem

    artifacts, first, second = two_versions
    holder = _holder(artifacts, [{"name": "A"}, {"name": "B", "version": first}])
    other_type = LiveItem("live-bad", {"title": "coat", "colour": 5}, True, 1.0, 1.0, 1)  # colour is text here
    fine = LiveItem("live-ok", {"title": "quokka lantern"}, True, 1.0, 1.0, 2)
    try:
        assert holder.check()
        with caplog.at_level("ERROR", logger="groundrec.serve"):
            holder.apply_live([other_type, fine])
        for backend in (holder.current, holder.backend(first)):
            assert "live-ok" in backend.retriever.v.row_of and "live-bad" not in backend.retriever.v.row_of
        assert any("live-bad" in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)
        artifact.activate(artifacts, first)
        assert holder.check() and holder.current.version_id == first and first not in holder.rejected
        holder.apply_live([LiveItem("live-later", {"title": "later"}, True, 1.0, 1.0, 3)])
        assert "live-later" in holder.current.retriever.v.row_of
    finally:
        holder.stop()
        artifact.activate(artifacts, second)


def test_a_version_without_its_text_encoder_skips_the_live_items_it_would_embed_and_applies_the_rest(two_versions,
                                                                                                    caplog):
    """A version published without its ONNX text encoder cannot embed a live item. Pinned as an
    arm it skips the PUT (logged) and still applies the delete after it in the same batch (the
    batch stopped at the PUT: a deleted item stayed in the arm's answers); writes are checked
    against the current version only for that. Swapped in as the current version it does the
    same (as when a server starts on it), never refused for it."""
    from groundrec.online.live_checks import check_changes
    from groundrec.shared.live_items import LiveItem

    artifacts, first, second = two_versions
    holder = _holder(artifacts, [{"name": "A"}, {"name": "B", "version": first}])
    real_build = holder.build

    def build(version_id):  # ``first`` as published without export
        backend = real_build(version_id)
        if version_id == first:
            backend.retriever.encoder = None
        return backend

    holder.build = build
    try:
        assert holder.check()
        arm = holder.backend(first)
        gone = arm.retriever.v.item_ids[0]
        check_changes(arm.retriever, [("live-x", "put", {"title": "quokka lantern"})], must_exist=False)  # no 422
        with caplog.at_level("ERROR", logger="groundrec.serve"):
            holder.apply_live([LiveItem("live-x", {"title": "quokka lantern"}, True, 1.0, 1.0, 1),
                               LiveItem(gone, {}, False, None, 1.0, 2, deleted=True)])
        assert "live-x" not in arm.retriever.v.row_of and gone in arm.retriever.live.deleted
        assert "live-x" in holder.current.retriever.v.row_of and gone in holder.current.retriever.live.deleted
        assert any("live-x" in r.getMessage() and "no ONNX text encoder" in r.getMessage() for r in caplog.records)
        artifact.activate(artifacts, first)
        assert holder.check() and holder.current.version_id == first and first not in holder.rejected
        assert "live-x" not in holder.current.retriever.v.row_of and gone in holder.current.retriever.live.deleted
    finally:
        holder.stop()
        artifact.activate(artifacts, second)


def test_a_version_whose_last_live_apply_fails_during_a_swap_is_closed_not_leaked(two_versions):
    """A swap applies the live items twice: the bulk while the old version serves, then under the
    lock what arrived meanwhile. The second failing (its compute process died between them)
    left the new backend, and its processes, running and unreferenced: it is closed, and the old
    version serves on."""
    from groundrec.shared.live_items import LiveItem

    artifacts, first, second = two_versions
    holder = VersionHolder(ServeConfig(artifacts=artifacts, compute="thread", events="none"))
    closed, real_build = [], holder.build

    class Dying:  # the real backend, whose compute process dies after its first live apply
        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def apply_live(self, arg):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("the compute process died between the two applies")
            return self.inner.apply_live(arg)

        def close(self):
            closed.append(self.inner.version_id)
            self.inner.close()

    def build(version_id):
        backend = real_build(version_id)
        return Dying(backend) if version_id == first else backend

    holder.build = build
    try:
        assert holder.check() and holder.current.version_id == second
        holder.apply_live([LiveItem("live-x", {"title": "quokka lantern"}, True, 1.0, 1.0, 1)])
        artifact.activate(artifacts, first)
        with pytest.raises(RuntimeError, match="died between"):
            holder.check()
        assert closed == [first] and holder.current.version_id == second
    finally:
        holder.stop()
        artifact.activate(artifacts, second)


def _copy(two_versions, tmp_path):
    import shutil

    artifacts, first, second = two_versions
    shutil.copytree(artifacts, tmp_path / "artifacts", ignore=shutil.ignore_patterns(".serving", ".lock"))
    return tmp_path / "artifacts", first, second


def test_a_version_that_failed_to_load_once_is_tried_again_later_and_at_once_when_activated_anew(
        two_versions, tmp_path, monkeypatch):
    """A failure may pass (a network error, a process killed for memory): the version was
    refused for the life of the process, even after `versions activate` named it again."""
    import groundrec.online.holder as holder_module

    artifacts, first, second = _copy(two_versions, tmp_path)
    index = artifacts / artifact.VERSIONS / second / artifact.INDEX
    artifact.activate(artifacts, first)
    holder = VersionHolder(ServeConfig(artifacts=artifacts, compute="thread", events="none"))
    try:
        assert holder.check() and holder.current.version_id == first
        index.rename(index.with_suffix(".away"))  # CURRENT moves while the second version cannot be read
        artifact.activate(artifacts, second)
        assert not holder.check() and second in holder.rejected
        index.with_suffix(".away").rename(index)  # the failure passes
        assert not holder.check() and holder.current.version_id == first  # not due yet
        monkeypatch.setattr(holder_module.time, "monotonic", lambda real=holder_module.time.monotonic: real() + 61)
        assert holder.check() and holder.current.version_id == second and not holder.rejected
        monkeypatch.undo()
        index.rename(index.with_suffix(".away"))
        artifact.activate(artifacts, first)
        assert holder.check() and holder.current.version_id == first
        artifact.activate(artifacts, second)
        assert not holder.check() and second in holder.rejected
        index.with_suffix(".away").rename(index)
        artifact.activate(artifacts, first)
        holder.check()
        artifact.activate(artifacts, second)  # named anew: tried at once, not after the delay
        assert holder.check() and holder.current.version_id == second
    finally:
        holder.stop()


def test_a_server_starting_when_current_cannot_be_loaded_serves_the_newest_older_version(two_versions, tmp_path):
    """A restarted replica served nothing (503) while an older good version was there."""
    import shutil

    artifacts, first, second = _copy(two_versions, tmp_path)
    (artifacts / artifact.VERSIONS / second / artifact.INDEX).write_bytes(b"damaged")
    refused = first[:-6] + "ffffff"  # published after the first, never current (a gate refusal): never a fallback
    shutil.copytree(artifacts / artifact.VERSIONS / first, artifacts / artifact.VERSIONS / refused)
    assert first < refused < second and refused not in {a["version"] for a in artifact.activations(artifacts)}
    holder = VersionHolder(ServeConfig(artifacts=artifacts, compute="thread", events="none"))
    try:
        assert holder.check() and holder.current.version_id == first
        assert holder.fallback_for == second and "checksum" in holder.rejected[second]
        assert not holder.check() and holder.current.version_id == first  # CURRENT's version refused meanwhile
    finally:
        holder.stop()


def test_a_server_starting_with_a_current_edited_wrong_serves_the_last_version_once_current(two_versions, tmp_path):
    """A malformed CURRENT at start served nothing (503) though good versions were there: it is
    refused with its reason, and the version most recently current serves meanwhile."""
    artifacts, first, second = _copy(two_versions, tmp_path)
    (artifacts / artifact.CURRENT).write_text("../../etc\n")
    holder = VersionHolder(ServeConfig(artifacts=artifacts, compute="thread", events="none"))
    try:
        assert holder.check() and holder.current.version_id == second
        assert "does not hold a version id" in holder.rejected[artifact.CURRENT]
        artifact.activate(artifacts, first)  # put right: CURRENT is followed again
        assert holder.check() and holder.current.version_id == first and artifact.CURRENT not in holder.rejected
    finally:
        holder.stop()


def test_gc_keeps_a_pinned_version_that_has_not_loaded_yet(two_versions, tmp_path):
    """The serving marker named only the pins loaded: one that failed to load once (and is
    tried again later) could be deleted by gc meanwhile, its arm then served by current."""
    artifacts, first, second = _copy(two_versions, tmp_path)
    index = artifacts / artifact.VERSIONS / first / artifact.INDEX
    index.rename(index.with_suffix(".away"))
    holder = _holder(str(artifacts), [{"name": "A"}, {"name": "B", "version": first}])
    try:
        holder.check()
        assert holder.current.version_id == second and first in holder.rejected
        assert artifact.serving_versions(artifacts) == {first, second}
        assert first not in artifact.gc(artifacts, keep=1)
    finally:
        holder.stop()


def test_a_pinned_arm_is_served_by_its_own_backend_while_current_moves_on_and_off_its_version(two_versions):
    """CURRENT moving off a pinned version retired its backend and loaded the version again
    for the arm: meanwhile the arm's answers came from the new current version. Moving onto it
    loaded a second copy beside the arm's."""
    artifacts, first, second = two_versions
    holder = _holder(artifacts, [{"name": "A"}, {"name": "B", "version": first}])
    built = []
    build = holder.build
    holder.build = lambda version_id: built.append(version_id) or build(version_id)
    try:
        assert holder.check() and built == [second, first]
        arm = holder.backend(first)
        artifact.activate(artifacts, first)  # onto the pinned version: its backend becomes current
        assert holder.check() and holder.current is arm and holder.backend(first) is arm and built == [second, first]
        was_current = arm
        artifact.activate(artifacts, second)  # and off it: the arm keeps that backend, none is loaded for it
        holder._swap_to(second)  # the swap alone, before any check of the pins
        assert holder.current.version_id == second and holder.backend(first) is was_current
        assert built == [second, first, second] and all(b is not was_current for _, b in holder._retired)
    finally:
        holder.stop()
        artifact.activate(artifacts, second)


def test_a_server_stopped_while_a_version_loads_installs_nothing_and_leaves_nothing_running(two_versions):
    """stop() waited 5 s for the reload thread; a load taking longer then installed the new
    version after the stop: its compute processes ran on and its gc marker came back."""
    artifacts, first, second = two_versions
    cfg = ServeConfig(artifacts=artifacts, compute="process", events="none")
    holder = VersionHolder(cfg)
    built = []
    build = holder.build

    def stopped_meanwhile(version_id):
        backend = build(version_id)
        built.append(backend)
        if len(built) == 2:
            holder.stop()  # the server stops while the second version loads
        return backend

    holder.build = stopped_meanwhile
    try:
        assert holder.check() and holder.current.version_id == second
        artifact.activate(artifacts, first)
        assert not holder.check()
        assert holder.current is built[0] and not built[1].alive and not built[0].alive
        assert holder._marker is None or not holder._marker.exists()
    finally:
        holder.stop()
        artifact.activate(artifacts, second)


def test_a_server_stopped_just_after_a_swap_closes_the_version_it_swapped_out(two_versions):
    """The swapped-out version joined the retired ones after the swap's last steps: a stop()
    that came between (its wait for the reload thread is 5 s) closed the retired ones first, and
    that version's compute processes ran on."""
    artifacts, first, second = two_versions
    holder = VersionHolder(ServeConfig(artifacts=artifacts, compute="process", events="none"))
    mark = holder._mark
    try:
        assert holder.check() and holder.current.version_id == second
        old = holder.current
        holder._mark = lambda: holder.stop()  # the server stops as the swap below marks its new version
        artifact.activate(artifacts, first)
        assert holder.check() and holder.current.version_id == first
        assert not old.alive and not holder.current.alive  # both stopped: nothing left running
    finally:
        holder._mark = mark
        holder.stop()
        artifact.activate(artifacts, second)
