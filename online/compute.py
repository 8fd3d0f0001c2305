"""Retrieval in a child process: one version, served to the HTTP process over a pipe.

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
from pathlib import Path

from groundrec.online.backend import answer_timeout
from groundrec.online.config import ServeConfig
from groundrec.online.errors import ERRORS, Unavailable
from groundrec.online.live_checks import remembered
from groundrec.online.live_sharing import encoded_vectors, live_timeout
from groundrec.online.serving import build_serving
from groundrec.online.threads import limit_threads
from groundrec.online.version import VersionError

log = logging.getLogger("groundrec.serve")
START_TIMEOUT_S = 600.0  # a version that does not load within this is refused


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
            try:
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


class RemoteServing:
    """The compute-process ``Backend``: each call answered by a ``ComputeProcess``, with a
    warm standby (``compute_standby``, on by default): a second child holding the same
    version, idle. A child that dies (its pipe closes) or hangs (no answer within
    ``compute_timeout_s``) is replaced by the standby at once and the call in flight is
    retried there, once; a new standby is then started in the background. Without a standby
    the replacement is started on the spot and the call waits (the queue's bound sheds the rest)."""

    def __init__(self, version_id: str, limits: ServeConfig, start_child, popularity: dict | None = None):
        self.version_id, self.limits = version_id, limits
        self._start_child = start_child  # popularity -> a new ComputeProcess of this version
        self._popularity = popularity
        self._lock = threading.RLock()  # _replace starts a child (``_started``) under it
        self._closed = False
        self.replaced = 0  # children replaced after a death or a hang
        # The live items applied (id -> LiveItem) and their embeddings: a child started later
        # (a replacement, a standby) gets them before it serves, without encoding them again.
        self._live: dict = {}
        self._vectors: dict = {}
        self.process = self._started(popularity)
        self.standby: ComputeProcess | None = None
        if limits.compute_standby:
            self._refill()

    @classmethod
    def start(cls, cfg: ServeConfig, version_id: str, path: str | Path, popularity: dict | None = None) -> RemoteServing:
        """Start a child (and its standby) serving the version in the local folder ``path``."""
        return cls(version_id, cfg, lambda pop: ComputeProcess(cfg, version_id, path, pop), popularity)

    @property
    def alive(self) -> bool:
        return self.process.alive or getattr(self.standby, "alive", False)  # one read of the standby

    @property
    def threads(self) -> dict[str, int]:
        return self.process.threads

    def _call(self, op: str, arg, timeout_s: float | None = None):
        process = self.process
        if not process.alive:
            process = self._replace(process)
        try:
            return process.call(op, arg, timeout_s)
        except ComputeDied as e:
            log.error("version %s: %s; replacing it and retrying the call once", self.version_id, e)
            return self._replace(process).call(op, arg, timeout_s)

    def _replace(self, dead: ComputeProcess) -> ComputeProcess:
        with self._lock:
            if self._closed:  # retired (a newer version serves): a late call starts no child nobody would stop
                raise ComputeDied(f"version {self.version_id} is no longer served here")
            if self.process is dead:
                standby, self.standby = self.standby, None
                if standby is None or not standby.alive:
                    try:  # no standby: load one now, the call waits
                        standby = self._started(self._popularity)
                    except VersionError as e:  # not the request's fault (VersionError is a UserError)
                        raise ComputeDied(f"version {self.version_id}: no compute process could be started: {e}") from None
                self.process = standby
                self.replaced += 1
        threading.Thread(target=dead.close, args=(0.5,), daemon=True).start()
        if self.limits.compute_standby and self.standby is None:
            self._refill()
        return self.process

    def _refill(self) -> None:
        """Start a standby in the background (a failure is logged; the next death then waits)."""
        def run():
            try:
                child = self._started(self._popularity)
            except Exception as e:
                log.error("version %s: no standby compute process: %s", self.version_id, e)
                return
            with self._lock:
                if self._closed or self.standby is not None:
                    extra, child = child, None
                else:
                    self.standby, extra = child, None
            if extra is not None:
                extra.close()
                return
            with self._lock:  # what was applied while it loaded (applying again skips the rest)
                live, vectors = list(self._live.values()), dict(self._vectors)
            if live:
                try:
                    child.call("live", (live, vectors), live_timeout(live, vectors))
                except ComputeDied:
                    pass

        threading.Thread(target=run, name=f"groundrec-standby-{self.version_id}", daemon=True).start()

    def _started(self, popularity):
        """A new child with this backend's popularity and live items."""
        child = self._start_child(popularity)
        with self._lock:
            live, vectors = list(self._live.values()), dict(self._vectors)
        if live:
            try:
                child.call("live", (live, vectors), live_timeout(live, vectors))
            except BaseException:
                child.close()
                raise
        return child

    def answer(self, items: list) -> list:
        return self._call("answer", items, answer_timeout(self.limits.compute_timeout_s, items))

    def apply_live(self, arg) -> dict:
        """Apply live items in the child (their texts encoded half by the standby: ``live_sharing``),
        then in its standby with those embeddings. Remembered first, so a child started meanwhile
        gets them; one promoted while this ran gets them too (applying twice changes nothing)."""
        items, given = arg
        with remembered(self._live, items, self._lock):  # forgotten again if the version refuses them
            with self._lock:
                for item in items:
                    self._vectors.pop(item.item_id, None)
            given = {**(given or {}), **encoded_vectors(self, items, given)}
            known = {**given, **self._call("live", (items, given), live_timeout(items, given))}
        with self._lock:
            self._vectors.update(known)
        for child in {id(c): c for c in (self.process, self.standby) if c is not None and c.alive}.values():
            try:
                child.call("live", (items, known), live_timeout(items, known))
            except ComputeDied:  # replaced by the next refill, which gets every live item
                pass
        return known

    def check_live(self, arg: tuple[list, bool]) -> None:
        return self._call("check_live", arg)

    def item(self, item_id: str) -> dict:
        return self._call("item", item_id)

    def unknown(self, item_ids: list[str]) -> int:
        return self._call("unknown", item_ids)

    def set_popularity(self, popularity: dict[str, float] | None) -> None:
        self._popularity = popularity
        self._call("popularity", popularity)
        standby = self.standby
        if standby is not None and standby.alive:
            standby.call("popularity", popularity)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            standby, self.standby = self.standby, None
        self.process.close()
        if standby is not None:
            standby.close()
