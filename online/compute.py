"""The compute-process backend: a version served by a ``compute_process.ComputeProcess`` and a
warm standby, a dead or hung child replaced and its call retried (``RemoteServing``)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from groundrec.online.backend import answer_timeout, popularity_timeout
from groundrec.online.compute_process import ComputeDied, ComputeProcess
from groundrec.online.config import ServeConfig
from groundrec.online.live_checks import remembered
from groundrec.online.live_sharing import encoded_vectors, live_timeout
from groundrec.online.version import VersionError
from groundrec.shared import artifact

log = logging.getLogger("groundrec.serve")
__all__ = ["ComputeDied", "ComputeProcess", "RemoteServing"]


class RemoteServing:
    """The compute-process ``Backend``: each call answered by a ``ComputeProcess``, with a
    warm standby (``compute_standby``, on by default): a second child holding the same
    version, idle. A child that dies (its pipe closes) or hangs (no answer within
    ``compute_timeout_s``) is replaced by the standby at once and the call in flight is
    retried there, once; a new standby is then started in the background. Without a standby
    the replacement is started on the spot and the call waits (the queue's bound sheds the rest)."""

    default_strategy: str = artifact.DEFAULT_STRATEGY  # the version's (``start`` reads its manifest)
    has_sequence: bool = False  # whether it holds a learned profile encoder (``start`` looks)

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
        backend = cls(version_id, cfg, lambda pop: ComputeProcess(cfg, version_id, path, pop), popularity)
        backend.default_strategy = artifact.read_manifest(path).default_strategy  # what the child checked at its load
        backend.has_sequence = artifact.VersionFiles(Path(path)).has_sequence
        return backend

    @property
    def alive(self) -> bool:
        return self.process.alive or getattr(self.standby, "alive", False)  # one read of the standby

    @property
    def threads(self) -> dict[str, int]:
        return self.process.threads

    def _call(self, op: str, arg, timeout_s: float | None = None):
        self._check_standby()
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

    def _check_standby(self) -> None:
        """A standby that died idle (killed for memory, a crash, a timeout of a live item's
        encoding) is closed and another started in the background: it was kept, unnoticed,
        until the serving child died and its replacement was loaded while the calls waited."""
        standby = self.standby
        if standby is None or standby.alive:
            return
        with self._lock:
            if self._closed or self.standby is not standby:
                return
            self.standby = None
        log.error("version %s: the standby compute process has died; starting another", self.version_id)
        threading.Thread(target=standby.close, args=(0.5,), daemon=True).start()
        self._refill()

    def _refill(self) -> None:
        """Start a standby in the background (a failure is logged; the next death then waits)."""
        def run():
            if self._closed:  # retired meanwhile: no version loaded for nobody
                return
            popularity = self._popularity
            try:
                child = self._started(popularity)
            except Exception as e:
                if not self._closed:  # closed meanwhile (retired, the server stopping): its load was stopped
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
            try:
                if live:
                    child.call("live", (live, vectors), live_timeout(live, vectors))
                if self._popularity is not popularity:  # refreshed while it loaded (set_popularity skipped it)
                    child.call("popularity", self._popularity,
                               popularity_timeout(self.limits.compute_timeout_s, self._popularity))
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
        with self._lock:  # before they are remembered: a child started between never pairs a new state with an old vector
            for item in items:
                self._vectors.pop(item.item_id, None)
        with remembered(self._live, items, self._lock):  # forgotten again if the version refuses them
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
        # a write group's checks (tens of microseconds a field): given time by its size, never taken for a hang
        return self._call("check_live", arg, self.limits.compute_timeout_s + 0.001 * len(arg[0]))

    def item(self, item_id: str) -> dict:
        return self._call("item", item_id)

    def unknown(self, item_ids: list[str]) -> int:
        return self._call("unknown", item_ids)

    def set_popularity(self, popularity: dict[str, float] | None) -> None:
        self._popularity = popularity
        timeout = popularity_timeout(self.limits.compute_timeout_s, popularity)
        self._call("popularity", popularity, timeout)
        standby = self.standby
        if standby is not None and standby.alive:
            standby.call("popularity", popularity, timeout)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            standby, self.standby = self.standby, None
        self.process.close()
        if standby is not None:
            standby.close()
