"""Starting a server for tests and benchmarks, and waiting until it is ready: the one copy.

``serving(artifacts, *args)`` runs ``groundrec serve`` as a subprocess on a free loopback
port and yields a ``Server`` once ``/readyz`` answers 200; ``started(command)`` does the same
for any command that serves HTTP (``{port}`` in an argument becomes the port); ``running(app)``
serves an ASGI app with uvicorn in a thread of this process. A server that exits or is not
ready in time raises ``ServerNotReady`` with the tail of its output. Torch-free, like the rest
of the online tier.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

TAIL_CHARS = 4000


class ServerNotReady(RuntimeError):
    """The server exited, or did not answer its readiness probe in time."""


def free_port() -> int:
    """A port nothing listens on now (the kernel's choice on loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A server process started by ``started`` or ``serving``: in its own process group, so
    ``kill`` reaches its workers and compute processes too."""

    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self, chars: int = TAIL_CHARS) -> str:
        """The last ``chars`` characters the server wrote (stdout and stderr together)."""
        try:
            with open(self.log, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - chars))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the server's whole process group (nothing when it is gone)."""
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM to the server (it shuts down its own children), SIGKILL to whatever of its
        group is left after ``timeout``; returns its exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            return None


def wait_ready(url: str, path: str = "/readyz", timeout: float = 90, proc: subprocess.Popen | None = None,
               until: Callable[[], bool] | None = None, output: Callable[[], str] = lambda: "") -> None:
    """Poll ``url + path`` until it answers 200 (and ``until()`` holds, when given). Raises
    ``ServerNotReady`` with ``output()`` when ``proc`` exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + path, timeout=2).status_code == 200 and (until is None or until()):
                return
        except httpx.TransportError:
            pass
        if proc is not None and proc.poll() is not None:
            raise ServerNotReady(f"the server at {url} exited with status {proc.returncode} before {path} "
                                 f"answered 200; its output ends:\n{output()}")
        if time.monotonic() > deadline:
            raise ServerNotReady(f"the server at {url} did not answer 200 on {path} within {timeout:g} s; "
                                 f"its output ends:\n{output()}")
        time.sleep(0.2)


@contextmanager
def started(command: Sequence[str], ready: str = "/readyz", timeout: float = 90, env: dict | None = None,
            log: Path | str | None = None, until: Callable[[Server], bool] | None = None,
            stop_timeout: float = 30) -> Iterator[Server]:
    """Run ``command`` (each ``{port}`` in it replaced by a free port) in its own process group,
    its output in ``log`` (a temporary file when not given), and yield it once ``ready``
    answers 200 and ``until(server)`` holds. Stopped on exit (``Server.stop``)."""
    port = free_port()
    keep = log is not None
    if log is None:
        fd, name = tempfile.mkstemp(prefix="groundrec-server-", suffix=".log")
        os.close(fd)
        log = name
    log = Path(log)
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(a).replace("{port}", str(port)) for a in command], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    server = Server(proc, port, log)
    try:
        wait_ready(server.url, ready, timeout, proc, (lambda: until(server)) if until else None, server.output)
        yield server
    finally:
        server.stop(stop_timeout)
        if not keep:
            log.unlink(missing_ok=True)


def serve_command(artifacts, *args: str) -> list[str]:
    """``groundrec serve`` with this interpreter, on ``{port}`` (see ``started``)."""
    return [sys.executable, "-m", "groundrec.shared.cli", "serve", "--artifacts", str(artifacts),
            "--port", "{port}", *map(str, args)]


@contextmanager
def serving(artifacts, *args: str, **kwargs) -> Iterator[Server]:
    """``groundrec serve --artifacts ARTIFACTS ARGS...`` on a free loopback port, ready
    (``/readyz`` 200: a version is loaded); ``kwargs`` as for ``started``."""
    with started(serve_command(artifacts, *args), **kwargs) as server:
        yield server


@contextmanager
def running(app, timeout: float = 30, root_path: str = "") -> Iterator[str]:
    """Serve the ASGI ``app`` with uvicorn on a free loopback port in a thread of this process
    (its lifespan run); yields its base URL once it listens. ``root_path``: uvicorn's (the
    prefix a proxy serves the app under)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                           root_path=root_path))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise ServerNotReady("the in-process server did not start (its lifespan failed, or it took "
                                 f"over {timeout:g} s; the log above says why)")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
