"""Every curl example in README.md, run as written with the real curl against the real
service (``groundrec serve`` over a version the real job published, with a SQLite event
store): each answers 2xx with JSON of its endpoint's shape, and where the README shows the
answer (a ``# {...}`` line right after the command) it is that answer.

Two things are rewritten, nothing else: ``localhost:8000`` becomes the test server's address,
and the README's item ids (H&M article ids) become ids of the test's demo catalog, each README
id always the same demo id. The status comes from curl itself (``--write-out`` in a curlrc of
the test's own, which curl reads besides the command's options), so the command stays as the
reader types it."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from groundrec.online.schemas import BatchOut, EventsOut, ResultOut
from groundrec.online.testing import serving
from helpers import publish_demo

README = Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
_ITEM_ID = re.compile(r'("item_id":\s*")([^"]+)(")')


def _complete(text: str) -> bool:
    """Whether ``text`` is a whole shell command (no open quote, no continuation backslash)."""
    if text.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:  # "No closing quotation": the quoted body goes on over the next line
        return False
    return True


def readme_curls(markdown: str) -> list[tuple[str, str | None]]:
    """The curl commands of the fenced code blocks, in order, each with the answer the README
    shows for it (the JSON of a ``# {...}`` line right after it) or None."""
    found = []
    for block in _FENCE.findall(markdown):
        lines = block.splitlines()
        n = 0
        while n < len(lines):
            if not lines[n].lstrip().startswith("curl "):
                n += 1
                continue
            command = lines[n]
            while not _complete(command) and n + 1 < len(lines):
                n += 1
                command += "\n" + lines[n]
            n += 1
            shown = None
            if n < len(lines) and lines[n].lstrip().startswith("# {"):
                text = lines[n].lstrip()[2:]
                try:  # the JSON, up to any remark after it
                    shown = json.JSONDecoder().raw_decode(text)[0]
                except ValueError:
                    shown = None
            found.append((command, shown))
    return found


def test_readme_curls_are_found_whole():
    """The extraction itself: a quoted body over two lines, a backslash continuation, a
    trailing comment, an answer line."""
    md = ("text\n```bash\ncurl -s a:1/x -d '{\"a\": 1,\n    \"b\": 2}'\n# {\"ok\": true}   (a remark)\n"
          "groundrec serve\ncurl -s \\\n  -X DELETE a:1/y   # a comment\n```\n")
    assert readme_curls(md) == [("curl -s a:1/x -d '{\"a\": 1,\n    \"b\": 2}'", {"ok": True}),
                                ("curl -s \\\n  -X DELETE a:1/y   # a comment", None)]


def _path(command: str) -> tuple[str, str]:
    """(method, path) of a curl command."""
    args = shlex.split(command, comments=True)
    method = args[args.index("-X") + 1] if "-X" in args else ("POST" if "-d" in args or "--data" in args else "GET")
    url = next(a for a in args[1:] if "localhost:8000" in a)
    return method, "/" + url.split("localhost:8000", 1)[1].lstrip("/").split("?")[0]


def _check_shape(method: str, path: str, answer) -> None:
    """The answer has the shape of its endpoint (a new endpoint in the README: add it here)."""
    if (method, path) == ("POST", "/events"):
        EventsOut.model_validate(answer)
    elif (method, path) == ("POST", "/recommend"):
        out = BatchOut.model_validate(answer) if "results" in answer else ResultOut.model_validate(answer)
        assert out.version, answer
    elif (method, path) == ("POST", "/search"):
        assert ResultOut.model_validate(answer).items, answer
    elif method == "DELETE" and path.startswith("/users/"):
        assert set(answer) == {"user_id", "deleted_events"} and answer["deleted_events"] >= 0, answer
    elif method in ("PUT", "PATCH", "DELETE") and path.startswith("/items/") or (method, path) == ("POST", "/items"):
        assert answer["accepted"] >= 1 and answer["applied_through"] >= 1, answer
    elif (method, path) in (("GET", "/latest"), ("GET", "/popular")):
        assert ResultOut.model_validate(answer).items and answer["recommendation_id"], answer
    elif method == "GET" and path.startswith("/items/"):
        assert answer["item"]["item_id"] == path.split("/")[2], answer
    elif method == "GET" and path in ("/readyz", "/healthz"):
        assert answer.get("ready", True) is True and answer.get("status", "ok") == "ok", answer
    else:
        pytest.fail(f"no expected shape for {method} {path}: add one to _check_shape")


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_vlm):
    return publish_demo(tmp_path_factory.mktemp("readme"), tiny_vlm())


def test_every_readme_curl_answers_2xx_json_of_its_shape(published, tmp_path):
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is not installed (apt-get install curl): the README's examples use it")
    commands = readme_curls(README.read_text())
    assert any(_path(c) == ("POST", "/events") for c, _ in commands), "the README's events examples are gone?"
    catalog = sorted({i for h in published["histories"] for i in h})
    readme_ids = list(dict.fromkeys(m.group(2) for c, _ in commands for m in _ITEM_ID.finditer(c)))
    assert len(readme_ids) <= len(catalog)
    as_demo = dict(zip(readme_ids, catalog))
    (tmp_path / ".curlrc").write_text('write-out = "\\n%{http_code}"\n')  # read by curl besides the command
    env = {**os.environ, "CURL_HOME": str(tmp_path)}
    with serving(published["artifacts"], "--events", f"sqlite:///{tmp_path}/events.db") as server:
        for command, shown in commands:
            method, path = _path(command)
            run = _ITEM_ID.sub(lambda m: m.group(1) + as_demo[m.group(2)] + m.group(3), command)
            run = run.replace("localhost:8000", f"127.0.0.1:{server.port}")
            done = subprocess.run(["bash", "-c", run], capture_output=True, text=True, env=env, timeout=60)
            assert done.returncode == 0, (command, done.stderr)
            body, _, status = done.stdout.rpartition("\n")
            assert status.isdigit() and 200 <= int(status) < 300, (command, status, body)
            answer = json.loads(body)
            _check_shape(method, path, answer)
            if shown is not None:
                assert answer == shown, (command, answer)
