"""The service keeps answering through its own faults (issue 25), behaviour only: the client
with its default retries sees no failure while the compute process is killed under load, and
with --workers 2 a killed worker is replaced while the other keeps serving."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import psutil
import pytest

from groundrec.online.client import Client
from groundrec.online.config import ServeConfig
from groundrec.online.service import create_app
from groundrec.online.testing import running, serving
from helpers import publish_demo, wait_for_standby


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_vlm):
    return publish_demo(tmp_path_factory.mktemp("faults"), tiny_vlm())


def _children(pid: int) -> list[int]:
    """A process's children (none once it has gone: the killed worker may vanish between a
    listing and this look)."""
    try:
        return [c.pid for c in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []


def test_killing_the_compute_process_under_load_costs_the_client_nothing(published):
    app = create_app(ServeConfig(artifacts=published["artifacts"], events="none"))
    with running(app) as url:
        serving = app.state.holder.current
        wait_for_standby(serving)
        failures: list[Exception] = []
        answered = [0]
        stop = threading.Event()

        def load():
            with Client(url) as c:  # default retries
                while not stop.is_set():
                    try:
                        c.recommend(published["histories"][answered[0] % len(published["histories"])], k=5)
                        answered[0] += 1
                    except Exception as e:
                        failures.append(e)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()

        def answered_past(n: int) -> None:  # a loaded machine answers slower: wait for the answers, not a time
            deadline = time.time() + 60
            while answered[0] <= n and not failures:
                assert time.time() < deadline, f"{answered[0]} answers"
                time.sleep(0.02)

        answered_past(10)
        os.kill(serving.process.pid, signal.SIGKILL)
        answered_past(answered[0] + 10)  # answered after the kill too
        stop.set()
        for t in threads:
            t.join(10)
        assert failures == [] and answered[0] > 20 and serving.replaced == 1
        assert httpx.get(url + "/readyz").status_code == 200


def test_a_killed_worker_is_replaced_and_the_others_keep_serving(published):
    with serving(published["artifacts"], "--workers", "2", "--events", "none", timeout=90,
                 until=lambda server: len([c for c in _children(server.pid) if _children(c)]) >= 2) as server:
        workers = [c for c in _children(server.pid) if _children(c)]
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        with Client(server.url) as c:  # the other worker answers meanwhile
            for n in range(20):
                assert c.recommend(published["histories"][n % len(published["histories"])], k=5).items
        deadline = time.time() + 60
        while len([c for c in _children(server.pid) if _children(c)]) < 2 or workers[0] in _children(server.pid):
            assert time.time() < deadline, "the dead worker was not replaced"
            time.sleep(0.2)


def test_a_version_swap_under_load_answers_every_request(published, tmp_path):
    import shutil

    from groundrec.shared import artifact

    artifacts = tmp_path / "artifacts"
    shutil.copytree(published["artifacts"], artifacts)
    first = artifact.current_version(artifacts)
    app = create_app(ServeConfig(artifacts=artifacts, events="none", reload_interval_s=0.2))
    with running(app) as url:
        statuses: list[int] = []
        versions: set[str] = set()
        stop = threading.Event()

        def load():
            with httpx.Client(base_url=url, timeout=10) as c:  # no retries: every answer counts
                n = 0
                while not stop.is_set():
                    r = c.post("/recommend", json={"history": published["histories"][n % 4], "k": 5})
                    statuses.append(r.status_code)
                    if r.status_code == 200:
                        versions.add(r.json()["version"])
                    n += 1

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        new = artifact.new_version_id()
        shutil.copytree(artifacts / artifact.VERSIONS / first, artifacts / artifact.VERSIONS / new)
        artifact.activate(artifacts, new)
        deadline = time.time() + 60
        while new not in versions:
            assert time.time() < deadline, "the new version was not served"
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(10)
    assert versions == {first, new} and len(statuses) > 50 and set(statuses) == {200}


def _sample(text: str, name: str, **labels) -> float:
    """The sum of the samples of ``name`` with these labels in a Prometheus exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_with_several_workers_every_scrape_counts_every_worker(published):
    """Each worker kept its own registry: a scrape answered by one worker showed its share, and
    rate() read the jumps between workers as counter resets."""
    with serving(published["artifacts"], "--workers", "2", "--events", "none", timeout=90,
                 until=lambda server: len([c for c in _children(server.pid) if _children(c)]) >= 2) as server:
        deadline = time.time() + 60  # both workers loaded (the second may still be loading when one is ready)
        while _sample(httpx.get(server.url + "/metrics").text, "groundrec_version_info") < 2:
            assert time.time() < deadline
            time.sleep(0.2)
        with httpx.Client(base_url=server.url) as client:  # a connection a request: both workers get some
            for n in range(40):
                assert client.post("/recommend", json={"history": published["histories"][n % 4], "k": 3},
                                   headers={"Connection": "close"}).status_code == 200
        scrapes = [httpx.get(server.url + "/metrics", headers={"Connection": "close"}).text for _ in range(6)]
        for text in scrapes:
            assert _sample(text, "groundrec_requests_total", endpoint="/recommend", status="200") == 40
            assert _sample(text, "groundrec_version_info", version=published["version"]) == 2  # one per worker
