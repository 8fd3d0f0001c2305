"""The compute process (``compute: process``, the default): it holds the version instead of
the HTTP process, a dead one is answered 503 and replaced, a swapped-out one is stopped."""

from __future__ import annotations

import os
import shutil
import signal

import httpx
import pytest

from groundrec.online import holder as holder_module
from groundrec.online.client import LocalClient
from groundrec.online.compute import ComputeProcess, RemoteServing
from groundrec.online.config import ServeConfig
from groundrec.online.service import create_app
from groundrec.online.serving import ServingError
from groundrec.online.version import VersionError
from groundrec.shared import artifact
from helpers import publish_demo
from helpers import running


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

        os.kill(first.process.pid, signal.SIGKILL)
        first.process._proc.join(10)
        r = httpx.post(url + "/recommend", json=body)
        assert r.status_code == 503 and "compute process" in r.json()["detail"]
        assert httpx.get(url + "/healthz").status_code == 200
        ready = httpx.get(url + "/readyz")  # the load balancer stops sending until it is replaced
        assert ready.status_code == 503 and "compute process" in ready.json()["reason"]
        assert holder.check()  # the watcher's next check starts a new one for the same version
        assert httpx.get(url + "/readyz").status_code == 200
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


def test_a_version_the_child_cannot_load_is_refused_with_its_reason(published, tmp_path):
    cfg = ServeConfig(artifacts=published["artifacts"])
    broken = tmp_path / "broken"
    shutil.copytree(artifact.current_path(published["artifacts"]), broken)
    (broken / artifact.EMBEDDINGS).write_bytes(b"not numpy")
    with pytest.raises(VersionError, match="checksum mismatch"):
        ComputeProcess(cfg, broken.name, broken)


def test_a_compute_process_that_hangs_is_stopped_and_its_batch_refused(published):
    cfg = ServeConfig(artifacts=published["artifacts"], compute_timeout_s=1.0)
    version = artifact.current_version(published["artifacts"])
    serving = RemoteServing.start(cfg, version, artifact.current_path(published["artifacts"]))
    try:
        assert serving.item("demo-0001")["item"]["item_id"] == "demo-0001"
        os.kill(serving.process.pid, signal.SIGSTOP)  # alive, but never answers
        with pytest.raises(ServingError) as err:
            serving.item("demo-0001")
        assert err.value.status == 503 and "did not answer within 1 s" in err.value.detail
        assert not serving.alive  # so the holder's next check starts a new one
    finally:
        serving.close()
