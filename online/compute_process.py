"""Retrieval in a child process: one version, served to the HTTP process over a pipe (the
child's loop and ``ComputeProcess``, its handle; ``compute.RemoteServing`` keeps one serving
and a warm standby).

In one process the event loop (HTTP parsing, validation) and the batch worker take turns
on the GIL. Every BLAS call and every large numpy operation of a batch releases it; under
load the loop takes it, and the worker waits for its next turn: a batch's few more array
operations (a hybrid's profiles) cost far more than their arithmetic. Here the version lives in a child process whose only thread scores batches,
so the two no longer share a GIL; the HTTP process keeps no copy of the version.
The child is started for one version and serves it until closed: a new version starts a
new child (the holder swaps them as it swaps in-process versions), so a child never
changes under a batch in flight. A child that dies makes its calls ``ComputeDied`` (an
``Unavailable``: 503) until a new one is started; a closed backend starts none."""

from __future__ import annotations

import gc
import logging
import multiprocessing as mp
import pickle
import signal
import threading
import time
from pathlib import Path

from groundrec.online.config import ServeConfig
from groundrec.online.errors import ERRORS, Unavailable
from groundrec.online.serving import build_serving
from groundrec.online.threads import limit_threads
from groundrec.online.version import VersionError

log = logging.getLogger("groundrec.serve")
START_TIMEOUT_S = 600.0  # a version that does not load within this is refused
WATCHDOG_S = 0.25  # how often a call's deadline is checked (a sleep, not a timer per call: calls are many)


def _child(conn, cfg_json: str, version_id: str, path: str, popularity: dict | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the whole group: the server stops us
    cfg = ServeConfig.model_validate_json(cfg_json)
    threads = limit_threads(cfg.compute_threads)
    try:
        serving = build_serving(cfg, version_id, path, popularity)
    except Exception as e:
        conn.send(("failed", f"{type(e).__name__}: {e}"))
        return
    gc.collect()
    gc.freeze()  # the version's objects live as long as this process: out of the collector's sight
    conn.send(("ready", threads))
    ops = {"answer": serving.answer, "item": serving.item, "unknown": serving.unknown, "popularity": serving.set_popularity,
           "live": serving.apply_live, "check_live": serving.check_live, "live_texts": serving.live_texts,
           "encode": serving.encode}
    while True:
        try:
            op, arg = conn.recv()
        except (EOFError, OSError):
            return  # the server has gone
        if op == "stop":
            return
        try:
            reply = ("ok", ops[op](arg))
        except Exception as e:  # the caller gets it (domain errors pickle as they are), the child keeps serving
            if not isinstance(e, ERRORS):  # a bug: its traceback goes to this process's log
                log.exception("compute process of version %s: %s failed", version_id, op)
            reply = ("error", e)
        try:
            conn.send(reply)
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            conn.send(("error", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]} (not picklable: {e})")))


class ComputeDied(Unavailable):
    """The compute process exited or hung (and was stopped): the call never got an answer."""


class ComputeProcess:
    """A child process serving one version. ``call`` is thread-safe (one call at a time)."""

    def __init__(self, cfg: ServeConfig, version_id: str, path: str | Path, popularity: dict | None = None,
                 start_timeout_s: float = START_TIMEOUT_S):
        self.version_id, self.timeout_s = version_id, cfg.compute_timeout_s
        ctx = mp.get_context("spawn")  # never fork a process with an event loop and threads
        self._conn, child_end = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(child_end, cfg.model_dump_json(), version_id, str(path), popularity),
                                 name=f"groundrec-compute-{version_id}", daemon=True)
        self._proc.start()
        child_end.close()
        self._lock = threading.Lock()
        try:
            if not self._conn.poll(start_timeout_s):
                raise VersionError(f"version {version_id} did not load within {start_timeout_s:.0f} s")
            kind, payload = self._conn.recv()
        except (EOFError, OSError):
            self._proc.join(5)
            raise VersionError(f"the compute process loading version {version_id} exited "
                               f"(code {self._proc.exitcode}): out of memory?") from None
        except BaseException:
            self.close()
            raise
        if kind == "failed":
            self.close()
            raise VersionError(payload)
        self.threads: dict[str, int] = payload  # the native thread pools the child runs with
        # A call's deadline beyond the wait for its first byte (``call``'s poll): a child that stops
        # reading a large argument or stalls in the middle of a large reply is killed by the watchdog.
        self._deadline: float | None = None
        threading.Thread(target=self._watchdog, name=f"groundrec-watchdog-{version_id}", daemon=True).start()

    def _watchdog(self) -> None:
        while self._proc.is_alive():
            deadline = self._deadline
            if deadline is not None and time.monotonic() > deadline:
                log.error("the compute process of version %s stalled in the middle of a call: stopping it", self.version_id)
                self._proc.kill()
                return
            time.sleep(WATCHDOG_S)

    @property
    def alive(self) -> bool:
        return self._proc.is_alive()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def call(self, op: str, arg, timeout_s: float | None = None, wait: bool = True):
        """``op`` answered by the child; a child silent for ``timeout_s`` (default: the serve
        config's ``compute_timeout_s``, meant for a batch) is taken for hung. ``wait`` False:
        ``BlockingIOError`` at once while another call is in flight."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        if not self._lock.acquire(blocking=wait):
            raise BlockingIOError(f"the compute process of version {self.version_id} is busy")
        try:
            try:  # the watchdog's deadline leaves the poll below its own timeout first (its message)
                self._deadline = time.monotonic() + 2 * timeout_s + WATCHDOG_S
                self._conn.send((op, arg))
                if not self._conn.poll(timeout_s):  # hung: stop it, the holder's next check replaces it
                    self._proc.kill()
                    self._proc.join(5)
                    raise ComputeDied(f"the compute process of version {self.version_id} did not answer within "
                                      f"{timeout_s:g} s and was stopped; a new one is being started, retry later")
                kind, value = self._conn.recv()
            except (EOFError, OSError):
                self._proc.join(1)
                raise ComputeDied(f"the compute process of version {self.version_id} exited (code "
                                  f"{self._proc.exitcode}); a new one is being started, retry later") from None
        finally:
            self._deadline = None
            self._lock.release()
        if kind == "error":
            raise value
        return value

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the child after the call in flight, if any."""
        with self._lock:
            try:
                self._conn.send(("stop", None))
            except (OSError, ValueError):
                pass
            self._proc.join(timeout_s)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout_s)
            self._conn.close()
