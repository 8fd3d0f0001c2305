"""online/testing.py, the one way tests and benchmarks start a server: ready means the probe
answered 200, a server that dies or never gets ready is an error carrying its output, and on
exit the whole process group is gone."""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import asynccontextmanager

import httpx
import psutil
import pytest
from fastapi import FastAPI

from groundrec.online.testing import ServerNotReady, free_port, running, serving, started

HTTP_SERVER = [sys.executable, "-m", "http.server", "{port}", "--bind", "127.0.0.1"]


def test_started_waits_for_its_probe_and_stops_the_whole_group(tmp_path):
    (tmp_path / "ready").write_text("yes")
    # a server with a child of its own (as a compute process is): both must be gone afterwards
    cmd = [sys.executable, "-c", "import subprocess, sys, runpy; subprocess.Popen(['sleep', '300']); "
           "sys.argv = ['http.server', sys.argv[1], '--bind', '127.0.0.1', '--directory', sys.argv[2]]; "
           "runpy.run_module('http.server', run_name='__main__')", "{port}", str(tmp_path)]
    with started(cmd, ready="/ready", timeout=30,
                 until=lambda s: len(psutil.Process(s.pid).children()) == 1) as server:
        assert httpx.get(server.url + "/ready").text == "yes"
        procs = [psutil.Process(server.pid), *psutil.Process(server.pid).children()]
        log = server.log
    assert server.proc.poll() is not None and not log.exists()  # a temporary log is removed
    alive = lambda: [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]  # noqa: E731
    deadline = time.time() + 10  # killed: gone once the kernel has reaped them (a loaded machine is slower)
    while alive() and time.time() < deadline:
        time.sleep(0.05)
    assert not alive()
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url + "/ready", timeout=1)


def test_a_server_that_exits_is_an_error_with_its_output(tmp_path):
    cmd = [sys.executable, "-c", "import sys; print('cannot open the artifacts: nope'); sys.exit(3)"]
    with pytest.raises(ServerNotReady, match=r"(?s)exited with status 3.*cannot open the artifacts: nope"):
        with started(cmd, timeout=30):
            pass


def test_a_server_that_never_gets_ready_times_out_and_is_stopped(tmp_path):
    log = tmp_path / "server.log"
    with pytest.raises(ServerNotReady, match="did not answer 200 on /missing within 3 s") as caught:
        with started(HTTP_SERVER, ready="/missing", timeout=3, log=log):  # room to start and log a GET when loaded
            pass
    assert "GET /missing" in str(caught.value) and "GET /missing" in log.read_text()  # a given log is kept


def test_serving_starts_groundrec_serve_with_the_given_flags(tmp_path):
    """No version published: /healthz answers at once and /readyz says 503 (what `serving`
    waits for by default; here the probe is /healthz)."""
    with serving(tmp_path, "--events", "none", ready="/healthz", timeout=60) as server:
        assert httpx.get(server.url + "/readyz").status_code == 503
        assert psutil.Process(server.pid).cmdline()[-2:] == ["--events", "none"]
    with pytest.raises(ServerNotReady, match="did not answer 200 on /readyz within 3 s"):
        with serving(tmp_path, "--events", "none", timeout=3):
            pass


def test_free_port_is_free():
    port = free_port()
    with subprocess.Popen([sys.executable, "-c", "import socket; s = socket.socket(); "
                           f"s.bind(('127.0.0.1', {port})); print('bound')"], stdout=subprocess.PIPE, text=True) as p:
        assert p.communicate(timeout=30)[0].strip() == "bound"


def test_running_serves_an_app_in_this_process_with_its_lifespan():
    state = []

    @asynccontextmanager
    async def lifespan(app):
        state.append("up")
        yield
        state.append("down")

    app = FastAPI(lifespan=lifespan)
    app.get("/ping")(lambda: {"pong": True})
    with running(app) as url:
        assert httpx.get(url + "/ping").json() == {"pong": True} and state == ["up"]
    assert state == ["up", "down"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # uvicorn exits its thread
def test_running_an_app_whose_lifespan_fails_is_an_error():
    @asynccontextmanager
    async def broken(app):
        raise RuntimeError("no version")
        yield

    with pytest.raises(ServerNotReady):
        with running(FastAPI(lifespan=broken), timeout=10):
            pass
