"""The real HTTP service on a free loopback port, over versions built by the offline job."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from groundrec.offline.job import run_job
from groundrec.online.client import AsyncClient, Client, GroundrecError, LocalClient
from groundrec.online.service import create_app
from groundrec.shared import artifact
from groundrec.offline.config import load_job_config
from groundrec.online.config import ServeConfig
from helpers import publish_demo, running


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_vlm):
    return publish_demo(tmp_path_factory.mktemp("svc"), tiny_vlm())


def _cfg(artifacts, **extra) -> ServeConfig:
    return ServeConfig(artifacts=artifacts, reload_interval_s=0.2, **extra)


def _scores(result):
    return [(i.item_id, round(i.score, 5)) for i in result.items]


def test_client_matches_in_process_core(published):
    local = LocalClient(published["artifacts"])
    with running(create_app(_cfg(published["artifacts"]))) as url, Client(url) as client:
        for history in published["histories"]:
            assert _scores(client.recommend(history, k=5)) == _scores(local.recommend(history, k=5))
        batch = client.recommend_batch([{"history": h} for h in published["histories"]], k=5)
        assert [_scores(r) for r in batch.results] == [_scores(local.recommend(h, k=5)) for h in published["histories"]]
        hit = client.search("red striped dress", k=3, with_fields=True)
        assert _scores(hit) == _scores(local.search("red striped dress", k=3))
        assert "title" in hit.items[0].fields
        mixed = client.recommend(published["histories"][0], k=4, text="yellow bag", strategy="multi_interest")
        assert _scores(mixed) == _scores(local.recommend(published["histories"][0], k=4, text="yellow bag",
                                                         strategy="multi_interest"))
        item = client.item("demo-0003")
        assert item["item_id"] == "demo-0003" and "vlm_text" in item
        seen = set(published["histories"][0])
        assert not seen & {i.item_id for i in client.recommend(published["histories"][0], k=10).items}
        # Refusals are the same in-process and over HTTP: same status, same message.
        for call in (lambda c: c.recommend(published["histories"][0], k=101), lambda c: c.item("no-such-item"),
                     lambda c: c.search("bag", k=2, filters={"no_such_column": "x"})):
            with pytest.raises(GroundrecError) as over_http:
                call(client)
            with pytest.raises(GroundrecError) as in_process:
                call(local)
            assert (over_http.value.status, over_http.value.message) == (in_process.value.status,
                                                                         in_process.value.message)
            assert over_http.value.status in (400, 404, 422)


def test_local_client_has_the_lists_of_the_http_client(published):
    """groundrec.online.local_client: similar, popular and latest as the server answers them,
    usable in a with block; a user_id (no event store here) is refused as events off are."""
    from groundrec.online.local_client import LocalClient as Local

    with Local(published["artifacts"]) as local, running(create_app(_cfg(published["artifacts"]))) as url, \
            Client(url) as client:
        for ask in (lambda c: c.similar("demo-0003", k=5), lambda c: c.popular(k=4),
                    lambda c: c.latest(k=3, filters={"colour": "red"})):
            assert _scores(ask(local)) == _scores(ask(client)) and ask(local).items
        for call in (lambda c: c.similar("no-such-item"), lambda c: c.popular(k=0)):
            with pytest.raises(GroundrecError) as over_http:
                call(client)
            with pytest.raises(GroundrecError) as in_process:
                call(local)
            assert over_http.value.status == in_process.value.status and over_http.value.status in (404, 422)
        with pytest.raises(GroundrecError) as no_store:
            local.recommend([], user_id="u1")
        assert no_store.value.status == 501


def test_async_client_gives_the_same(published):
    history = published["histories"][1]

    async def go(url):
        c = AsyncClient(url)
        try:
            return await c.recommend(history, k=5)
        finally:
            await c.aclose()

    with running(create_app(_cfg(published["artifacts"]))) as url:
        assert _scores(asyncio.run(go(url))) == _scores(Client(url).recommend(history, k=5))


def test_bad_requests_get_4xx_with_reasons_and_the_server_survives(published):
    cfg = _cfg(published["artifacts"], max_k=20, max_batch=2, max_body_bytes=2048)
    with running(create_app(cfg)) as url:
        post = lambda path, **kw: httpx.post(url + path, **kw)  # noqa: E731
        r = post("/recommend", json={"history": ["demo-0001"], "k": 50})
        assert r.status_code == 422 and "max_k=20" in r.json()["detail"]
        r = post("/recommend", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422
        r = post("/recommend", json={"history": ["demo-0001"], "kk": 5})
        assert r.status_code == 422 and "kk" in r.json()["detail"]
        r = post("/recommend", json={"history": ["demo-0001"], "strategy": "median"})
        assert r.status_code == 422 and "strategy" in r.json()["detail"]
        # a history's times in milliseconds made every item 1000 times older to recency: the last one alone counted
        r = post("/recommend", json={"history": [{"item_id": "demo-0001", "timestamp": time.time() * 1000}],
                                     "strategy": "recency"})
        assert r.status_code == 422 and "not milliseconds" in r.json()["detail"]
        assert "function-after" not in r.json()["detail"]  # the entry's problem alone, not the id branch's noise
        r = post("/recommend", json={"history": ["demo-0001"], "filters": {"nope": "x"}})
        assert r.status_code == 400 and "unknown filter column 'nope'" in r.json()["detail"]
        assert "in all" in r.json()["detail"] and len(r.json()["detail"]) < 400  # a few columns, not all
        r = post("/recommend", json={"batch": [{"history": ["demo-0001"]}] * 3})
        assert r.status_code == 422 and "max_batch=2" in r.json()["detail"]
        r = post("/recommend", json={"batch": [{"history": ["demo-0001"]}, {"history": ["demo-0001"],
                                                                          "filters": {"nope": "x"}}]})
        assert r.status_code == 400 and r.json()["detail"].startswith("batch[1]: unknown filter column 'nope'")
        r = post("/recommend", json={"history": ["demo-0001"] * 400})
        assert r.status_code == 413
        # chunked bodies (no Content-Length) are held to the same limit, and still work below it
        big = json.dumps({"history": ["demo-0001"] * 400}).encode()
        r = post("/recommend", content=iter([big[:1000], big[1000:]]), headers={"content-type": "application/json"})
        assert "content-length" not in r.request.headers and r.status_code == 413
        small = json.dumps({"history": ["demo-0001"], "k": 3}).encode()
        r = post("/recommend", content=iter([small[:10], small[10:]]), headers={"content-type": "application/json"})
        assert r.status_code == 200 and len(r.json()["items"]) == 3
        r = post("/search", json={"text": ""})
        assert r.status_code == 422 and "text" in r.json()["detail"]
        assert httpx.get(url + "/items/missing-id").status_code == 404
        deep = httpx.get(url + "/popular", params={"filters": "[" * 3000})  # nested past Python's recursion limit
        assert deep.status_code == 400 and "nested too deep" in deep.json()["detail"]
        with pytest.raises(GroundrecError, match="max_k") as err:
            Client(url).recommend(["demo-0001"], k=21)
        assert err.value.status == 422
        filtered = Client(url).recommend(["demo-0001"], k=5, filters={"category": "bag"}, with_fields=True)
        assert filtered.items and all(i.fields and "bag" in i.fields["title"] for i in filtered.items)
        unknown = Client(url).recommend(["ghost"], k=3)
        assert unknown.unknown_ids == ["ghost"] and unknown.fallback == "popular"
        assert httpx.get(url + "/healthz").json() == {"status": "ok"}
        metrics = httpx.get(url + "/metrics").text
        assert 'groundrec_requests_total{endpoint="/recommend",status="422"}' in metrics


def test_server_settings_that_cannot_hold_are_refused_when_read_or_loaded(published):
    """An event store URL with a typo is refused when the config is read; a server max_per
    naming a column the version lacks refuses the version (named in /readyz), instead of
    blaming every request."""
    with pytest.raises(ValueError, match="not an event store"):
        _cfg(published["artifacts"], events="sqlit:///x.db")
    with running(create_app(_cfg(published["artifacts"], max_per={"prodcut_code": 1}))) as url:
        ready = httpx.get(url + "/readyz")
        assert ready.status_code == 503 and "prodcut_code" in json.dumps(ready.json()["rejected"])


def test_a_server_set_to_int8_serves_a_version_without_one_on_fp32(published, capfd):
    """A version whose job kept no int8 text encoder (export.int8 false here, or an int8 graph
    below int8_min_cosine) is served with fp32 and a warning, not refused."""
    with running(create_app(_cfg(published["artifacts"], encoder_variant="int8"))) as url:
        assert httpx.get(url + "/readyz").status_code == 200
        found = httpx.post(url + "/search", json={"text": "red", "k": 3})
        assert found.status_code == 200 and len(found.json()["items"]) == 3
    assert "has no int8 text encoder (the job did not export one): serving fp32" in capfd.readouterr().err


def test_valid_json_of_the_wrong_kind_gets_4xx_never_500(published):
    """Regressions from the attack run: each of these answered 500 (or an empty 200)."""
    raw = lambda path, text: httpx.post(url + path, content=text.encode(),  # noqa: E731
                                         headers={"content-type": "application/json"})
    with running(create_app(_cfg(published["artifacts"]))) as url:
        history = ["demo-0001"]
        for filters in ({"title": 5}, {"title": True}, {"title": 1.5}, {"title": ["x", 5]}, {"vlm_text": [False]}):
            for path, body in (("/recommend", {"history": history, "filters": filters}),
                               ("/search", {"text": "bag", "filters": filters}),
                               ("/recommend", {"batch": [{"history": history, "filters": filters},
                                                         {"history": history}]})):
                r = httpx.post(url + path, json=body)
                assert r.status_code == 400 and "does not match the column's type" in r.json()["detail"], (body, r.text)
        for text in ('{"history": ["\\ud800"]}', '{"history": [{"item_id": "a\\udc00"}]}',
                     '{"text": "\\ud800 bag"}', '{"history": ["demo-0001"], "filters": {"\\ud800": "x"}}'):
            r = raw("/search" if text.startswith('{"text"') else "/recommend", text)
            assert r.status_code == 422 and ("surrogate" in r.text or "unicode" in r.text), (text, r.text)
        for weight in ("Infinity", "1e308", "NaN", "-1"):
            r = raw("/recommend", '{"history": ["demo-0001"], "popularity_weight": %s}' % weight)
            assert r.status_code == 422 and "popularity_weight" in r.json()["detail"], (weight, r.text)
        r = raw("/recommend", '{"history": [{"item_id": "demo-0001", "weight": 1e308}]}')
        assert r.status_code == 422
        for slots, k in (("-1", 5), ("6", 5), ("1.5", 5), ('"x"', 5)):
            r = raw("/recommend", '{"history": ["demo-0001"], "k": %d, "fresh_slots": %s}' % (k, slots))
            assert r.status_code == 422 and "fresh_slots" in r.json()["detail"], (slots, r.text)
        metrics = httpx.get(url + "/metrics").text
    assert 'status="500"' not in metrics


def test_a_malformed_current_is_refused_and_the_server_starts(published, tmp_path):
    """Refused with its reason, and the version most recently current serves meanwhile (it
    served nothing, 503, though a good version was there)."""
    artifacts = tmp_path / "artifacts"
    shutil.copytree(published["artifacts"], artifacts)
    good = artifact.current_version(artifacts)
    (artifacts / artifact.CURRENT).write_bytes(b"\xff\xfe../../elsewhere/" + b"x" * 5_000_000)
    with running(create_app(_cfg(artifacts))) as url:
        r = httpx.get(url + "/readyz")
        assert r.status_code == 200 and len(r.content) < 1000 and r.json()["version"] == good
        assert "does not hold a version id" in r.json()["rejected"][artifact.CURRENT]
        artifact.activate(artifacts, good)  # the operator's fix is picked up by the reload watcher
        assert _wait_for(lambda: artifact.CURRENT not in httpx.get(url + "/readyz").json()["rejected"])
        assert httpx.get(url + "/readyz").status_code == 200


def test_api_key_is_required_when_configured(published, monkeypatch):
    monkeypatch.setenv("GROUNDREC_TEST_KEY", "s3cret")
    with running(create_app(_cfg(published["artifacts"], api_key_env="GROUNDREC_TEST_KEY"))) as url:
        with pytest.raises(GroundrecError) as err:
            Client(url).recommend(["demo-0001"])
        assert err.value.status == 401
        assert Client(url, api_key="s3cret").recommend(["demo-0001"], k=2).items
        assert httpx.get(url + "/readyz").status_code == 200  # probes stay open


def test_not_ready_until_something_is_published(tmp_path):
    with running(create_app(_cfg(tmp_path))) as url:
        assert httpx.get(url + "/readyz").status_code == 503
        with pytest.raises(GroundrecError) as err:
            Client(url, retries=1, backoff_s=0.01).recommend(["x"])
        assert err.value.status == 503


def _wait_for(predicate, timeout=60.0):  # a new compute process loads: slow on a loaded machine
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_hot_reload_takes_good_versions_and_rejects_broken_ones(published, tmp_path):
    artifacts = tmp_path / "artifacts"
    shutil.copytree(published["artifacts"], artifacts)
    first = artifact.current_version(artifacts)
    with running(create_app(_cfg(artifacts))) as url:
        client = Client(url)
        assert client.recommend(published["histories"][0], k=3).version == first
        # A new good version, published by the offline job: served without a restart.
        overrides = {**published["overrides"], "out": str(artifacts), "encoder.template": "{description}"}
        second = run_job(load_job_config(None, overrides), progress=False).version
        assert _wait_for(lambda: client.recommend(published["histories"][0], k=3).version == second)
        # A broken version: its index does not match the manifest's checksum.
        broken = artifact.new_version_id()
        shutil.copytree(artifacts / artifact.VERSIONS / second, artifacts / artifact.VERSIONS / broken)
        with open(artifacts / artifact.VERSIONS / broken / "index.faiss", "ab") as f:
            f.write(b"garbage")
        artifact.activate(artifacts, broken)
        assert _wait_for(lambda: broken in httpx.get(url + "/readyz").json()["rejected"])
        assert client.recommend(published["histories"][0], k=3).version == second  # still serving the good one
        # gc sees what this server serves (its marker) and keeps it although CURRENT names another.
        assert artifact.serving_versions(artifacts) == {second}
        # ... and the versions once current before CURRENT, which a server falls back to when it
        # cannot load CURRENT's (activations.fallbacks): nothing is deleted here
        assert artifact.gc(artifacts, keep=1) == [] and {first, second} <= set(artifact.list_versions(artifacts))
        # Probes are open: a rejection's reason names no build-host path (the log has it).
        missing = artifact.new_version_id()
        (artifacts / artifact.CURRENT).write_text(missing + "\n")
        assert _wait_for(lambda: missing in httpx.get(url + "/readyz").json()["rejected"])
        assert "has no version" in httpx.get(url + "/readyz").json()["rejected"][missing]
        assert str(tmp_path) not in httpx.get(url + "/readyz").text
        item = httpx.get(url + "/items/demo-0001").json()["item"]
        assert item["image_uri"] and "/" not in item["image_uri"]
        metrics = httpx.get(url + "/metrics").text
        assert "groundrec_reload_failures_total 2.0" in metrics  # the damaged one and the missing one
        assert f'groundrec_version_info{{version="{second}"}} 1.0' in metrics
        created = float(re.search(r"^groundrec_version_created_timestamp_seconds (\S+)$", metrics, re.M).group(1))
        assert abs(created - artifact.created_at(second)) < 1 and 0 < time.time() - created < 3600
        # Rolling back with the CLI's mechanism is another reload.
        artifact.activate(artifacts, first)
        assert _wait_for(lambda: client.recommend(published["histories"][0], k=3).version == first)


def test_loadtest_reports_against_a_live_server(published, tmp_path):
    import json
    import subprocess
    import sys

    from groundrec.online.loadtest import require_loopback

    with running(create_app(_cfg(published["artifacts"]))) as url:
        r = subprocess.run([sys.executable, "-m", "groundrec.shared.cli", "loadtest", "--url", url, "--rate", "40",
                            "--duration", "2", "--concurrency", "8", "--histories", str(published["interactions"]),
                            "--json-out", str(tmp_path / "load.json")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-1000:]
    report = json.loads((tmp_path / "load.json").read_text())
    assert report["sent"] == 80 and report["completed"] == 80 and report["errors"] == {}
    assert set(report["by_endpoint"]) == {"/recommend", "/search"}
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"] <= report["latency_ms"]["max"]
    assert "p99" in r.stdout
    # a shop's traffic: events and recommendations by user id, 5 events per recommendation
    events = f"sqlite:///{tmp_path}/events.db"
    with running(create_app(_cfg(published["artifacts"], events=events))) as url:
        r = subprocess.run([sys.executable, "-m", "groundrec.shared.cli", "loadtest", "--url", url, "--rate", "60",
                            "--duration", "2", "--concurrency", "8", "--histories", str(published["interactions"]),
                            "--search-share", "0", "--events-per-recommend", "5",
                            "--json-out", str(tmp_path / "shop.json")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-1000:]
    shop = json.loads((tmp_path / "shop.json").read_text())
    assert shop["errors"] == {} and set(shop["by_endpoint"]) == {"/events", "/recommend"}
    assert shop["by_endpoint"]["/events"] > 2 * shop["by_endpoint"]["/recommend"]
    from groundrec.shared.events import open_store

    store = open_store(events)
    assert store.count() == shop["by_endpoint"]["/events"]  # every acknowledged event is stored
    store.close()
    with pytest.raises(ValueError, match="only loopback"):
        require_loopback("http://10.1.2.3:8000")


def test_client_gives_up_on_connection_errors_after_retries():
    with socket_closed_port() as url:
        started = time.perf_counter()
        with pytest.raises(httpx.ConnectError):
            Client(url, retries=2, backoff_s=0.05).recommend(["x"])
        assert time.perf_counter() - started >= 0.05 + 0.1  # it waited before each retry


@contextmanager
def socket_closed_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield f"http://127.0.0.1:{port}"  # nothing listens there any more


def test_serves_from_an_object_store_uri(published, tmp_path):
    """fsspec's in-memory filesystem stands in for s3:// or gs://."""
    import fsspec

    from groundrec.online.version import VersionError, load_version

    fs = fsspec.filesystem("memory")
    root = f"memory://groundrec-test-{tmp_path.name}"
    for path in Path(published["artifacts"]).rglob("*"):
        rel = path.relative_to(published["artifacts"])
        if path.is_file() and rel.parts[0] in (artifact.VERSIONS, artifact.CURRENT):
            fs.pipe_file(f"{root}/{rel}", path.read_bytes())
    local = LocalClient(published["artifacts"])
    history = published["histories"][0]
    with running(create_app(_cfg(root, version_cache_dir=tmp_path / "cache"))) as url:
        assert _scores(Client(url).recommend(history, k=5)) == _scores(local.recommend(history, k=5))
        # events: auto (the default) keeps no store beside artifacts at a URI: the refusal says what to set
        off = httpx.post(url + "/events", json={"events": [{"user_id": "u", "item_id": history[0]}]})
        assert off.status_code == 501 and "events: auto" in off.json()["detail"] and "redis://" in off.json()["detail"]
    assert (tmp_path / "cache" / artifact.current_version(published["artifacts"]) / "manifest.json").is_file()
    assert load_version(root, cache_dir=tmp_path / "cache2").manifest.version == artifact.current_version(root)
    fs.pipe_file(f"{root}/{artifact.CURRENT}", b"no-such-version\n")
    with pytest.raises(VersionError, match="does not hold a version id"):
        load_version(root, cache_dir=tmp_path / "cache3")
    fs.pipe_file(f"{root}/{artifact.CURRENT}", artifact.new_version_id().encode() + b"\n")
    with pytest.raises(VersionError, match="has no version"):
        load_version(root, cache_dir=tmp_path / "cache3")


def test_a_version_file_damaged_in_place_cannot_kill_the_server_process(published, tmp_path):
    """embeddings.npy truncated under a running server: with a memory map the next request
    dies of SIGBUS; the vectors are read into memory at load, so answers go on."""
    artifacts = tmp_path / "artifacts"
    shutil.copytree(published["artifacts"], artifacts)
    emb = artifact.current_path(artifacts) / artifact.EMBEDDINGS
    code = ("import os, sys; from groundrec.online.client import LocalClient; "
            f"c = LocalClient({str(artifacts)!r}); before = c.recommend({published['histories'][0]!r}, k=5); "
            f"os.truncate({str(emb)!r}, 128); "
            f"after = c.recommend({published['histories'][0]!r}, k=5); "
            "print('same' if [i.item_id for i in before.items] == [i.item_id for i in after.items] else 'differs')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "same", (r.returncode, r.stderr[-1000:])


def test_a_history_longer_than_max_history_uses_its_latest_items_and_says_so(published):
    """Eval scores users of any history length; the service does the same with the latest
    max_history known items (older ones still excluded as seen) instead of refusing them."""
    from groundrec.offline.evaluation.systems import ContentSystem
    from groundrec.online.version import load_version

    client = LocalClient(published["artifacts"], max_history=3)
    history = [f"demo-{i:04d}" for i in range(1, 9)]
    full = client.recommend(history, k=5, exclude_seen=False)
    latest = client.recommend(history[-3:], k=5, exclude_seen=False)
    assert full.history_ignored == 5 and latest.history_ignored == 0
    assert _scores(full) == _scores(latest)
    seen = client.recommend(history, k=20)
    assert not {i.item_id for i in seen.items} & set(history)  # the old ones still count as seen
    batch = client.recommend_batch([{"history": history, "exclude_seen": False}], k=5).results[0]
    assert _scores(batch) == _scores(full) and batch.history_ignored == 5
    # The evaluation's content system windows the same way.
    v = load_version(artifact.current_path(published["artifacts"]))
    rows = np.array([v.row_of[h] for h in history])
    system = ContentSystem("x", "text", np.asarray(v.vectors), np.zeros(len(v.item_ids)), max_history=3)
    scores = system.scores([rows], [np.zeros(len(rows))])[0]
    top = np.argsort(-scores, kind="stable")[:5]
    assert [v.item_ids[i] for i in top] == [i.item_id for i in full.items]


def test_serve_interactions_with_another_item_column(published, tmp_path):
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from groundrec.shared.cli import app

    table = pq.read_table(published["interactions"]).rename_columns(
        ["article" if c == "item_id" else c for c in pq.read_table(published["interactions"]).column_names])
    pq.write_table(table, tmp_path / "inter.parquet")
    res = CliRunner().invoke(app, ["serve", "--artifacts", str(published["artifacts"]),
                                   "--interactions", str(tmp_path / "inter.parquet")])
    assert res.exit_code == 2 and "no column 'item_id'" in res.output and "--interactions-item-column" in res.output
    client = LocalClient(published["artifacts"], interactions=str(tmp_path / "inter.parquet"),
                         interactions_item_column="article")
    popular = client.recommend(["no-such-item"], k=3)  # unknown history: falls back to popularity
    assert popular.fallback == "popular" and popular.items[0].score > 0


def test_a_request_whose_client_leaves_first_is_dropped_and_counted(published):
    """The client sends a request and closes its connection while the request waits for its
    batch: nothing is scored for it, and it is counted (499 and groundrec_client_gone_total)."""
    import socket

    app = create_app(_cfg(published["artifacts"], compute="thread", batch_max_wait_ms=4000))
    with running(app) as url:
        body = json.dumps({"history": published["histories"][0], "k": 3}).encode()
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as s:
            s.sendall(b"POST /recommend HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            time.sleep(1.0)  # queued (read by now, on a loaded machine too), waiting up to 4 s for others
        deadline = time.time() + 10
        while "groundrec_client_gone_total 1.0" not in (metrics := httpx.get(url + "/metrics").text):
            assert time.time() < deadline, "the request of a client that left was not counted"
            time.sleep(0.1)
        assert 'groundrec_requests_total{endpoint="/recommend",status="499"} 1.0' in metrics
        deadline = time.monotonic() + 20
        while app.state.batcher.stats.dropped_gone == 0:  # once its batch window has passed
            assert time.monotonic() < deadline, "the request of a client that left was not dropped"
            time.sleep(0.1)
        assert app.state.batcher.stats.dropped_gone == 1 and app.state.batcher.stats.items == 0
