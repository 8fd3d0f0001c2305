"""The compute process (``compute: process``, the default): it holds the version instead of
the HTTP process, a dead one is answered 503 and replaced, a swapped-out one is stopped."""

from __future__ import annotations

import os
import shutil
import signal
import time

import httpx
import pytest

from groundrec.online import holder as holder_module
from groundrec.online.client import LocalClient
from groundrec.online.compute import ComputeDied, ComputeProcess, RemoteServing
from groundrec.online.config import ServeConfig
from groundrec.online.errors import NotFound, http_reply
from groundrec.online.schemas import UserQuery
from groundrec.online.service import create_app
from groundrec.online.version import VersionError
from groundrec.shared import artifact
from helpers import publish_demo
from helpers import running, wait_for_standby


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_vlm):
    return publish_demo(tmp_path_factory.mktemp("compute"), tiny_vlm())


def _ids(body: dict) -> list[str]:
    return [i["item_id"] for i in body["items"]]


def test_the_compute_process_serves_is_replaced_when_it_dies_and_stopped_when_swapped_out(
        published, tmp_path, monkeypatch):
    artifacts = tmp_path / "artifacts"
    shutil.copytree(published["artifacts"], artifacts)
    body = {"history": published["histories"][0], "k": 5}
    expected = [i.item_id for i in LocalClient(artifacts).recommend(body["history"], k=5).items]
    # No reload by the watcher during the test: each check is called here.
    app = create_app(ServeConfig(artifacts=artifacts, reload_interval_s=3600))
    holder = app.state.holder
    with running(app) as url:
        first = holder.current
        assert isinstance(first, RemoteServing) and first.process.pid != os.getpid()
        r = httpx.post(url + "/recommend", json=body)
        assert r.status_code == 200 and _ids(r.json()) == expected
        assert httpx.get(url + "/items/demo-0001").json()["item"]["item_id"] == "demo-0001"
        assert httpx.get(url + "/items/nope").status_code == 404  # the child's refusal crosses the pipe intact

        # A dead child is replaced by the warm standby at once, and the request is answered.
        wait_for_standby(first)
        dead, standby = first.process.pid, first.standby.pid
        os.kill(dead, signal.SIGKILL)
        first.process._proc.join(10)
        assert httpx.get(url + "/readyz").status_code == 200  # the standby is there: still ready
        r = httpx.post(url + "/recommend", json=body)
        assert r.status_code == 200 and _ids(r.json()) == expected
        assert first.replaced == 1 and first.process.pid == standby
        wait_for_standby(first)  # ... and a new standby is started behind it
        assert first.standby.pid not in (dead, standby)
        # both gone (no standby to take over): /readyz says so and the watcher's check starts a new one
        os.kill(first.process.pid, signal.SIGKILL)
        os.kill(first.standby.pid, signal.SIGKILL)
        first.process._proc.join(10)
        first.standby._proc.join(10)
        ready = httpx.get(url + "/readyz")  # the load balancer stops sending until it is replaced
        assert ready.status_code == 503 and "compute process" in ready.json()["reason"]
        assert httpx.get(url + "/healthz").status_code == 200
        assert holder.check()
        assert httpx.get(url + "/readyz").status_code == 200
        metrics = httpx.get(url + "/metrics").text  # a restarted compute process is no version loaded
        assert "groundrec_reloads_total 1.0" in metrics and "groundrec_reload_failures_total 0.0" in metrics
        second = holder.current
        assert second.version_id == first.version_id and second.process.pid != first.process.pid
        r = httpx.post(url + "/recommend", json=body)
        assert r.status_code == 200 and _ids(r.json()) == expected

        # A new version: a new child; the old one is stopped once the grace period has passed.
        new_id = artifact.new_version_id()
        shutil.copytree(artifacts / artifact.VERSIONS / first.version_id, artifacts / artifact.VERSIONS / new_id)
        artifact.activate(artifacts, new_id)
        assert holder.check() and holder.current.version_id == new_id
        assert second.alive  # within the grace period a batch begun on it may still finish
        monkeypatch.setattr(holder_module, "RETIRE_GRACE_S", 0.0)
        assert not holder.check()
        assert not second.alive
        r = httpx.post(url + "/recommend", json=body)
        assert r.status_code == 200 and r.json()["version"] == new_id and _ids(r.json()) == expected
        third = holder.current
    assert not third.alive  # the server's shutdown stops it


def test_a_live_change_applied_while_the_only_child_is_dead_reaches_its_replacement(published):
    """Without a standby, a live change applied while the compute process is dead is not lost
    when a request restarts it before the holder's check does: the holder hands live items to
    a dead backend too, which starts its next child with them."""
    from groundrec.shared.live_items import LiveItem

    app = create_app(ServeConfig(artifacts=published["artifacts"], compute_standby=False, reload_interval_s=3600))
    holder = app.state.holder
    body = {"history": published["histories"][0], "k": 5}
    with running(app) as url:
        top = _ids(httpx.post(url + "/recommend", json=body).json())
        serving = holder.current
        os.kill(serving.process.pid, signal.SIGKILL)
        serving.process._proc.join(10)
        assert not serving.alive
        holder.apply_live([LiveItem(top[0], {"hidden": True}, False, None, 1.0, 1)])
        after = _ids(httpx.post(url + "/recommend", json=body).json())
        assert holder.current is serving and serving.replaced == 1
        assert top[0] not in after and after[:4] == top[1:]


def test_a_version_the_child_cannot_load_is_refused_with_its_reason(published, tmp_path):
    cfg = ServeConfig(artifacts=published["artifacts"])
    broken = tmp_path / "broken"
    shutil.copytree(artifact.current_path(published["artifacts"]), broken)
    (broken / artifact.EMBEDDINGS).write_bytes(b"not numpy")
    with pytest.raises(VersionError, match="checksum mismatch"):
        ComputeProcess(cfg, broken.name, broken)


@pytest.mark.parametrize("standby", [True, False])
def test_a_hung_or_dead_compute_process_is_replaced_and_the_call_retried_there(published, standby):
    """Hung (SIGSTOP): stopped after compute_timeout_s, the call answered by the replacement.
    Dead (SIGKILL): the call answered by the replacement. With a standby it takes over at
    once; without one, a new child is loaded while the call waits."""
    cfg = ServeConfig(artifacts=published["artifacts"], compute_timeout_s=2.0, compute_standby=standby)
    version = artifact.current_version(published["artifacts"])
    serving = RemoteServing.start(cfg, version, artifact.current_path(published["artifacts"]))
    try:
        if standby:
            wait_for_standby(serving)
        assert serving.item("demo-0001")["item"]["item_id"] == "demo-0001"
        hung = serving.process
        os.kill(hung.pid, signal.SIGSTOP)  # alive, but never answers
        started = time.perf_counter()
        assert serving.item("demo-0002")["item"]["item_id"] == "demo-0002"
        assert 2.0 <= time.perf_counter() - started and serving.replaced == 1 and serving.process is not hung
        hung._proc.join(10)
        assert not hung.alive  # the hung child was stopped
        if standby:  # the next standby loads in the background: a call starved by it meanwhile would be replaced
            wait_for_standby(serving)
        dead = serving.process
        os.kill(dead.pid, signal.SIGKILL)
        dead._proc.join(10)
        assert serving.item("demo-0003")["item"]["item_id"] == "demo-0003"
        assert serving.replaced == 2 and serving.alive
        if standby:
            wait_for_standby(serving)
        with pytest.raises(NotFound, match="no item 'nope'"):  # a refusal of the child is not a death: no retry
            serving.item("nope")
        assert serving.replaced == 2
    finally:
        serving.close()


def test_a_replacement_that_cannot_load_is_unavailable_not_the_request_s_mistake(published, tmp_path):
    """The child dies and no replacement loads (its files broke meanwhile): the call is
    refused as ``ComputeDied`` (503, retry later) with the reason, never the load's
    ``VersionError`` (a ``UserError``, which would be answered 400 as if the request were at fault)."""
    cfg = ServeConfig(artifacts=published["artifacts"], compute_standby=False)
    version = tmp_path / "v"
    shutil.copytree(artifact.current_path(published["artifacts"]), version)
    serving = RemoteServing.start(cfg, version.name, version)
    try:
        (version / artifact.EMBEDDINGS).write_bytes(b"not numpy")
        os.kill(serving.process.pid, signal.SIGKILL)
        serving.process._proc.join(10)
        with pytest.raises(ComputeDied, match="no compute process could be started: .*checksum mismatch") as err:
            serving.item("demo-0001")
        assert http_reply(err.value)[0] == 503
    finally:
        serving.close()


def test_a_retired_backend_called_late_starts_no_child(published):
    """A call that reaches a backend after it was swapped out and closed (a list of backends
    read before the swap) is refused; it started a compute process nothing would ever stop."""
    cfg = ServeConfig(artifacts=published["artifacts"], compute_standby=False)
    version = artifact.current_path(published["artifacts"])
    serving = RemoteServing.start(cfg, version.name, version)
    serving.close()
    with pytest.raises(ComputeDied, match="no longer served here"):
        serving.item("demo-0001")
    assert serving.replaced == 0 and not serving.process.alive


def test_a_batch_of_long_texts_is_given_time_to_encode_not_stopped_as_hung(published):
    """compute_timeout_s bounds a batch of the batcher's size; a request of many long texts
    (within every limit) gets TEXT_S more a text: answered, with no compute process stopped.
    (It was stopped as hung, then its standby, and the client got a 503.)"""
    from groundrec.online.backend import QUERY_S, TEXT_S, answer_timeout
    from groundrec.online.schemas import RecommendRequest, UserQuery

    batch = RecommendRequest(batch=[UserQuery(text="x"), UserQuery(history=["a"])])
    assert answer_timeout(0.2, [UserQuery(text="y"), batch, UserQuery(history=["a"])]) == pytest.approx(0.2 + 2 * TEXT_S)
    bulk = [RecommendRequest(batch=[UserQuery(history=["a"])] * 256)] * 64  # 16,384 lists in one call
    assert answer_timeout(2.0, bulk) == pytest.approx(2.0 + QUERY_S * (16_384 - 64)) and answer_timeout(2.0, bulk) > 60
    app = create_app(ServeConfig(artifacts=published["artifacts"], events="none", compute_timeout_s=1.0))  # other calls: a margin under load
    text = " ".join(["a red striped summer dress with long sleeves and a belt"] * 18)[:1000]
    with running(app) as url:
        backend = app.state.holder.current
        r = httpx.post(url + "/recommend", json={"batch": [{"text": f"{n} {text}"[:1000]} for n in range(128)]}, timeout=120)
        assert r.status_code == 200, r.text
        assert len(r.json()["results"]) == 128 and backend.replaced == 0


def test_a_live_item_the_version_refused_is_not_given_to_the_children_started_later(published):
    """A change the version cannot take (a column of another type) was kept among the live
    items a new child is given: every standby and replacement then failed to start on it."""
    from groundrec.online.holder import VersionHolder
    from groundrec.shared.live_items import LiveItem

    holder = VersionHolder(ServeConfig(artifacts=published["artifacts"], events="none"))
    try:
        assert holder.check()
        backend = holder.current
        wait_for_standby(backend)
        holder.apply_live([LiveItem("live-bad", {"title": "coat", "colour": 5}, True, 1.0, 1.0, 1),
                           LiveItem("live-ok", {"title": "quokka lantern"}, True, 1.0, 1.0, 2)])
        assert backend.unknown(["live-ok", "live-bad"]) == 1
        for child in (backend.process, backend.standby):  # both gone: the next call starts a child anew
            os.kill(child.pid, signal.SIGKILL)
            child._proc.join(10)
        assert backend.unknown(["live-ok", "live-bad"]) == 1  # started, with the item it could take
    finally:
        holder.stop()


def test_a_standby_that_dies_idle_is_replaced_and_a_popularity_refresh_reaches_the_next_one(published):
    """The standby killed while idle (for memory, say) was kept, unnoticed, until the serving
    child died too and the calls waited for a load; one started before a popularity refresh
    served the old counts once promoted."""
    cfg = ServeConfig(artifacts=published["artifacts"], compute_timeout_s=5.0)
    version = artifact.current_version(published["artifacts"])
    serving = RemoteServing.start(cfg, version, artifact.current_path(published["artifacts"]))
    try:
        wait_for_standby(serving)
        idle = serving.standby
        os.kill(idle.pid, signal.SIGKILL)
        idle._proc.join(10)
        assert serving.item("demo-0001")["item"]["item_id"] == "demo-0001"  # a call notices it: a new one loads
        assert serving.standby is None
        serving.set_popularity({"demo-0003": 1000.0})  # while it loads: no standby to give it to
        wait_for_standby(serving)
        assert serving.standby is not idle and serving.standby.alive and serving.replaced == 0
        deadline = time.time() + 30  # it is given the refreshed counts just after it is kept as the standby
        while serving.standby.call("answer", [UserQuery(history=[], k=1)])[0][1] != ("demo-0003",):
            assert time.time() < deadline, "the new standby never got the refreshed counts"
            time.sleep(0.05)
        os.kill(serving.process.pid, signal.SIGKILL)  # the new standby takes over, with the refreshed counts
        serving.process._proc.join(10)
        popular = serving.answer([UserQuery(history=[], k=1)])[0]  # no history: the popular fallback
        assert popular[1] == ("demo-0003",) and serving.replaced == 1
    finally:
        serving.close()


def test_a_popularity_refresh_of_a_large_catalog_is_given_time_not_taken_for_a_hang(published):
    """The refresh went with the batch timeout alone: a few million ids take seconds to send,
    and each compute process (the standby too) was killed as hung at every refresh."""
    cfg = ServeConfig(artifacts=published["artifacts"], compute_timeout_s=0.25)  # a million ids: ~0.6 s to send
    version = artifact.current_version(published["artifacts"])
    serving = RemoteServing.start(cfg, version, artifact.current_path(published["artifacts"]))
    try:
        wait_for_standby(serving)
        first, standby = serving.process, serving.standby
        popularity = {f"sold-out-{n}": 1.0 for n in range(1_000_000)} | {"demo-0003": 1e6}
        serving.set_popularity(popularity)
        assert serving.replaced == 0 and serving.process is first and serving.standby is standby and standby.alive
        assert serving.answer([UserQuery(history=[], k=1)])[0][1] == ("demo-0003",)
    finally:
        serving.close()


def test_a_child_that_stops_reading_in_the_middle_of_a_call_is_stopped_not_waited_for_forever(published):
    """The call's timeout bounded the wait for the first byte of the reply only: a child
    stopped while a large argument (or reply) was on its way blocked the caller, and with it the
    one thread that runs every batch, until someone killed the child by hand."""
    import threading

    cfg = ServeConfig(artifacts=published["artifacts"], compute_timeout_s=0.5)
    child = ComputeProcess(cfg, artifact.current_version(published["artifacts"]),
                           artifact.current_path(published["artifacts"]))
    outcome = []
    try:
        os.kill(child.pid, signal.SIGSTOP)  # frozen (a cgroup freeze, a debugger): it reads nothing more
        big = {f"id-{n}": 1.0 for n in range(300_000)}  # megabytes: more than the pipe holds

        def call():
            try:
                child.call("popularity", big)
            except ComputeDied as e:
                outcome.append(e)

        caller = threading.Thread(target=call, daemon=True)
        started = time.monotonic()
        caller.start()
        caller.join(20)
        assert not caller.is_alive() and len(outcome) == 1 and not child.alive
        assert time.monotonic() - started < 10
    finally:
        if child.alive:
            os.kill(child.pid, signal.SIGKILL)
        if outcome:  # else the caller may still hold the call's lock: close() would wait for it
            child.close()
