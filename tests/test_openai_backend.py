"""The OpenAI-compatible grounding backend against a real HTTP server on loopback.

The server stands in for vLLM: it reads the image from the request, names its dominant
colour, answers 503 to every first attempt (the client must retry) and 500 for black
images (those items must be recorded as skipped, the job must complete)."""

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from groundrec.offline.demo import COLOURS
from groundrec.offline.job import run_job
from groundrec.offline.config import load_job_config


def _dominant(img: Image.Image) -> str:
    px = np.asarray(img.convert("RGB"), dtype=float).reshape(-1, 3)
    px = px[np.abs(px - 250).sum(axis=1) > 30]  # drop the light background
    mean = px.mean(axis=0) if len(px) else np.array([250, 250, 250])
    return min(COLOURS, key=lambda c: np.sum((np.array(COLOURS[c]) - mean) ** 2))


class _Handler(BaseHTTPRequestHandler):
    seen: dict[str, int] = {}
    requests = 0
    empty: set[str] = set()  # colours answered with no text (``content: null``)
    deny = False  # every request refused (a rotated API key)

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests += 1
        if self.deny:
            return self._send(401, {"error": "invalid API key"})
        content = body["messages"][0]["content"]
        url = next(p["image_url"]["url"] for p in content if p["type"] == "image_url")
        raw = base64.b64decode(url.split(",", 1)[1])
        attempts = self.seen[url] = self.seen.get(url, 0) + 1
        colour = _dominant(Image.open(io.BytesIO(raw)))
        if attempts == 1:
            return self._send(503, {"error": "warming up"})
        if colour == "black":
            return self._send(500, {"error": "model crashed"})
        text = None if colour in self.empty else f"category: product\ncolour: {colour}\npattern: unknown"
        self._send(200, {"choices": [{"message": {"role": "assistant", "content": text}}]})

    def _send(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def vlm_server():
    _Handler.seen, _Handler.requests, _Handler.empty, _Handler.deny = {}, 0, set(), False
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_openai_backend_grounds_retries_and_records_failures(small_catalog, tmp_path, vlm_server):
    cfg = load_job_config(None, {
        "catalog.path": str(small_catalog["path"]), "catalog.images_root": str(small_catalog["images_root"]),
        "out": str(tmp_path / "o"), "vlm.backend": "openai", "vlm.endpoint": vlm_server, "vlm.model": "served-vlm",
        "vlm.concurrency": 3, "vlm.max_retries": 2, "vlm.timeout_s": 10, "run.runner": "local",
        "prompt.style": "structured", "prompt.fields": ["colour", "pattern"], "export.enabled": False,
        "encoder.template": "{title}. {vlm_colour}",
    })
    summary = run_job(cfg, progress=False)
    items = pq.read_table(summary.version_dir / "items.parquet").to_pylist()
    by_id = {r["item_id"]: r for r in items}
    # i3 is the black trousers: the server fails it every time -> recorded, published from its
    # catalog text, job done.
    assert by_id["i3"]["grounded"] is False and by_id["i3"]["text"] == "black checked trousers"
    assert summary.encoded == 9 and summary.ungrounded == 4
    skipped = {r["item_id"]: r["reason"] for r in pq.read_table(summary.version_dir / "skipped.parquet").to_pylist()}
    assert "HTTP 500" in skipped["i3"] and "VLM failed" in skipped["i3"]
    assert by_id["i0"]["vlm_colour"] == "red" and by_id["i1"]["vlm_colour"] == "blue"
    assert all(r["parse_ok"] for r in items if r["grounded"])
    assert _Handler.requests >= 2 * 6  # every image needed a retry after the 503


def test_openai_backend_cache_hits_skip_the_server(small_catalog, tmp_path, vlm_server):
    overrides = {
        "catalog.path": str(small_catalog["path"]), "catalog.images_root": str(small_catalog["images_root"]),
        "out": str(tmp_path / "o"), "vlm.backend": "openai", "vlm.endpoint": vlm_server, "vlm.model": "served-vlm",
        "vlm.max_retries": 2, "run.runner": "local", "export.enabled": False,
    }
    run_job(load_job_config(None, overrides), progress=False)
    before = _Handler.requests
    again = run_job(load_job_config(None, overrides), progress=False)
    assert again.grounded_new == 0 and again.grounded_cached == 5  # black one is retried: never cached
    assert _Handler.requests - before == 3  # 1 + 2 retries (all 500) for the failing image, nothing else


def test_an_empty_answer_is_recorded_and_asked_again_never_cached(small_catalog, tmp_path, vlm_server):
    """A VLM that answers nothing (``content: null``) has not grounded the item: it is recorded
    as skipped, published from its catalog text, and the next run asks again."""
    _Handler.empty = {"green"}  # i2, the green bag
    overrides = {
        "catalog.path": str(small_catalog["path"]), "catalog.images_root": str(small_catalog["images_root"]),
        "out": str(tmp_path / "o"), "vlm.backend": "openai", "vlm.endpoint": vlm_server, "vlm.model": "served-vlm",
        "vlm.max_retries": 2, "run.runner": "local", "export.enabled": False,
    }
    first = run_job(load_job_config(None, overrides), progress=False)
    skipped = {r["item_id"]: r["reason"] for r in pq.read_table(first.version_dir / "skipped.parquet").to_pylist()}
    assert "VLM answered nothing" in skipped["i2"]
    before = _Handler.requests
    again = run_job(load_job_config(None, overrides), progress=False)
    assert again.grounded_cached == 4 and _Handler.requests - before == 1 + 3  # i2 asked again, black i3 too


def test_a_vlm_that_grounds_nothing_fails_the_job_and_publishes_nothing(small_catalog, tmp_path, vlm_server,
                                                                        monkeypatch):
    """Every call refused (a rotated key, a wrong model name): the job stops saying so, instead
    of publishing and activating a catalog of catalog text alone."""
    from groundrec.shared import artifact
    from groundrec.shared.errors import UserError

    from groundrec.offline import ground

    _Handler.deny = True
    monkeypatch.setattr(ground, "ALL_FAILED_MIN", 6)  # the six readable images of this small catalog
    overrides = {
        "catalog.path": str(small_catalog["path"]), "catalog.images_root": str(small_catalog["images_root"]),
        "out": str(tmp_path / "o"), "vlm.backend": "openai", "vlm.endpoint": vlm_server, "vlm.model": "served-vlm",
        "vlm.max_retries": 0, "run.runner": "local", "export.enabled": False,
    }
    with pytest.raises(UserError, match=r"the VLM grounded none of the 6 image\(s\).*HTTP 401.*nothing was published"):
        run_job(load_job_config(None, overrides), progress=False)
    assert artifact.current_version(tmp_path / "o") is None


def test_images_that_fail_to_decode_are_no_sign_of_a_broken_vlm_and_none_readable_stops_the_job(
        small_catalog, tmp_path, vlm_server, monkeypatch):
    """A truncated image passes the hash (its header reads) and fails to decode: counted as the
    VLM grounding nothing, enough of them stopped the whole run. A wrong images_root (no image
    readable at all) published and activated a text-only version instead."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from groundrec.offline import ground
    from groundrec.shared import artifact
    from groundrec.shared.errors import UserError

    _Handler.deny = False
    monkeypatch.setattr(ground, "ALL_FAILED_MIN", 1)
    photo = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((256, 256, 3)) * 255).astype(np.uint8)).save(photo, "JPEG")
    (small_catalog["images_root"] / "cut.jpg").write_bytes(photo.getvalue()[:len(photo.getvalue()) * 6 // 10])
    table = pq.read_table(small_catalog["path"])
    only_truncated = tmp_path / "truncated.parquet"  # its header reads (hashed), its pixels do not (decode)
    pq.write_table(table.filter(pc.equal(table.column("item_id"), "truncated")).set_column(
        1, "image", pa.array(["cut.jpg"])), only_truncated)
    overrides = {
        "catalog.path": str(only_truncated), "catalog.images_root": str(small_catalog["images_root"]),
        "out": str(tmp_path / "o"), "vlm.backend": "openai", "vlm.endpoint": vlm_server, "vlm.model": "served-vlm",
        "vlm.max_retries": 0, "run.runner": "local", "export.enabled": False,
    }
    published = run_job(load_job_config(None, overrides), progress=False)  # recorded, published from its text
    skipped = {r["item_id"]: r["reason"] for r in pq.read_table(published.version_dir / "skipped.parquet").to_pylist()}
    assert "truncated" in skipped["truncated"] and artifact.current_version(tmp_path / "o") == published.version
    empty = tmp_path / "no-images-here"
    empty.mkdir()
    wrong_root = {**overrides, "catalog.path": str(small_catalog["path"]), "catalog.images_root": str(empty)}
    with pytest.raises(UserError, match=r"none of the 9 catalog images could be read .*images_root"):
        run_job(load_job_config(None, wrong_root), progress=False)
    assert artifact.current_version(tmp_path / "o") == published.version  # the last good version serves on
