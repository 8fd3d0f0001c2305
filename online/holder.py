"""Holds the serving version and swaps in a new one when CURRENT moves (hot reload).

A request takes ``holder.current`` once and uses it to the end, so a swap never
changes a request in flight. A version that fails to load or verify is rejected:
the old one keeps serving, the failure is logged and counted.

With ``compute: process`` (the default) each version is served by its own child process
(``compute.RemoteServing``); the one swapped out is closed ``RETIRE_GRACE_S`` later (a compute
process stopped, an in-process version released), when any batch begun on it is long done,
and one that dies is replaced at the next check.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

from groundrec.online.compute import ComputeDied, RemoteServing
from groundrec.online.config import ServeConfig
from groundrec.online.backend import Backend
from groundrec.online.live_checks import apply_everywhere, apply_or_skip
from groundrec.online.serving import build_serving
from groundrec.shared import artifact
from groundrec.shared.scoring.popularity import counts_of_file

log = logging.getLogger("groundrec.serve")
RETIRE_GRACE_S = 10.0  # a swapped-out compute process is stopped this long after the swap
RETRY_FIRST_S, RETRY_MAX_S = 60.0, 3600.0  # a rejected version is tried again after these (doubling)


def load_popularity(cfg: ServeConfig) -> dict[str, float] | None:
    """Purchases per item id from ``cfg.interactions`` (None without)."""
    return None if cfg.interactions is None else counts_of_file(cfg.interactions, cfg.interactions_item_column)


class VersionHolder:
    def __init__(self, cfg: ServeConfig, on_loaded=None, on_failed=None):
        self.cfg = cfg
        self.current: Backend | None = None
        self.rejected: dict[str, str] = {}  # version id -> why
        self._retry: dict[str, tuple[float, float]] = {}  # rejected version id -> (tried again from, delay)
        self._named: str | None = None  # what CURRENT named at the last check
        self._on_loaded, self._on_failed = on_loaded, on_failed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._marker = None  # <artifacts>/.serving/<host>-<pid>: tells gc what this process serves
        self._retired: list[tuple[float, Backend]] = []  # (when swapped out, backend): closed after a grace
        self._popularity = load_popularity(self.cfg)
        # Versions an experiment's arms name by id, loaded beside the current one and kept (none
        # without an experiment); a pinned id that is also CURRENT's shares its backend.
        self.pinned: dict[str, Backend] = {}
        # The live catalog (the items API) as applied, id -> LiveItem: every backend gets it,
        # one loaded later (a hot swap, a pinned arm) before it serves.
        self.live: dict = {}
        self.vectors = None  # their embeddings kept in the event store (``live_vectors.LiveVectors``), or None
        self._live_lock = threading.Lock()
        self._wanted_pins = sorted(v for v in (cfg.experiment.versions() if cfg.experiment else ()) if v != "current")

    def backend(self, version: str) -> Backend | None:
        """What serves ``version`` ('current' or a pinned id) now: None when it is not loaded
        (the caller serves the current version instead and says so)."""
        current = self.current
        if version == "current" or (current is not None and current.version_id == version):
            return current
        return self.pinned.get(version)

    def set_popularity(self, popularity: dict[str, float] | None) -> None:
        """New popularity for the serving version now and for every version loaded later."""
        self._popularity = popularity
        for backend in self.loaded():  # a dead one gets the next refresh (its next child starts with the old)
            try:  # one backend's failure leaves the others refreshed (the pinned arms too)
                backend.set_popularity(popularity)
            except ComputeDied as e:
                log.error("version %s missed a popularity refresh: %s", getattr(backend, "version_id", "?"), e)

    def loaded(self) -> list[Backend]:  # every backend serving now (the current version and the pinned arms), each once
        return [b for b in self._every() if b.alive]

    def apply_live(self, items: list) -> None:
        """Apply live items to every loaded version (current, pinned arms), alive or not (a compute backend
        starts its next child with them); a pinned arm's failure is skipped (``apply_everywhere``)."""
        with self._live_lock:
            for item in items:
                self.live[item.item_id] = item
            apply_everywhere(self._every(), self.current, lambda backend: self._apply(backend, items))

    def _every(self) -> list[Backend]:  # the current backend and the pinned arms', each once, alive or not
        return list({id(b): b for b in [self.current, *self.pinned.values()] if b is not None}.values())

    def _apply(self, backend: Backend, items: list) -> None:
        """Live items applied to one backend, with their cached embeddings (``self.vectors``, set by
        the live catalog) when it keeps them; an item it cannot take skipped (``apply_or_skip``)."""
        vectors = self.vectors
        apply_or_skip((lambda batch: backend.apply_live((batch, None))) if vectors is None else
                      (lambda batch: vectors.apply(backend, batch)), items, backend.version_id)

    def _with_live(self, backend: Backend, close: bool = True) -> None:
        """Give a backend about to serve every live item: the bulk first, then, under the lock
        its caller holds while it swaps the backend in, what arrived meanwhile (skipped when
        applied already). One that fails is closed unless ``close`` is False (an arm's, serving on)."""
        try:
            if self.live:
                self._apply(backend, list(dict(self.live).values()))  # a copy: applied to meanwhile
        except BaseException:
            if close:  # never swapped in: its processes stopped
                backend.close()
            raise

    def build(self, version_id: str) -> Backend:
        path = artifact.locate(self.cfg.artifacts, version_id, self.cfg.version_cache_dir)  # copied here if remote
        if self.cfg.compute == "process":
            return RemoteServing.start(self.cfg, version_id, path, self._popularity)
        return build_serving(self.cfg, version_id, path, self._popularity)

    def check(self) -> bool:
        """Load the version CURRENT names if it is new and not rejected, or restart the serving
        one if its compute process has died (the pinned versions likewise); True when swapped."""
        self._close_retired()
        try:
            return self._check_current()
        finally:
            if self._wanted_pins:
                self._check_pinned()  # after CURRENT: a pin of the version CURRENT names shares its backend
                self._mark()  # gc keeps the pinned versions too

    def _refused(self, version_id: str) -> bool:
        """Rejected, and not yet due to be tried again (``_reject``)."""
        return version_id in self.rejected and time.monotonic() < self._retry.get(version_id, (0.0, 0.0))[0]

    def _reject(self, version_id: str, why: str) -> None:
        """Refuse a version until it is due again: a failure may pass (a fetch's network error, a
        process killed for memory), so it is tried again after a minute, then twice as long
        after each failure (at most an hour); CURRENT naming it anew tries it at once."""
        delay = min(2 * self._retry.get(version_id, (0.0, RETRY_FIRST_S / 2))[1], RETRY_MAX_S)
        self.rejected[version_id] = why
        self._retry[version_id] = (time.monotonic() + delay, delay)

    def _accepted(self, version_id: str) -> None:
        self.rejected.pop(version_id, None)
        self._retry.pop(version_id, None)

    def _check_current(self) -> bool:
        try:
            wanted = artifact.current_version(self.cfg.artifacts)
        except (ValueError, OSError) as e:  # a malformed or unreadable pointer is refused like a broken version
            if self.rejected.get(artifact.CURRENT) != str(e):
                self.rejected[artifact.CURRENT] = str(e)
                log.error("refusing %s, still serving %s: %s", artifact.CURRENT,
                          self.current.version_id if self.current else None, e)
                if self._on_failed:
                    self._on_failed(artifact.CURRENT, str(e))
            wanted = self.current.version_id if self.current else ""  # what serves goes on (restarted if dead)
        else:
            self.rejected.pop(artifact.CURRENT, None)
            if wanted is not None and wanted != self._named:  # CURRENT names it anew (an activation): try it now
                self._retry.pop(wanted, None)
            self._named = wanted
        dead = self.current is not None and not self.current.alive
        if dead:
            log.error("the compute process of version %s has died: starting a new one", self.current.version_id)
            wanted = wanted if wanted and not self._refused(wanted) else self.current.version_id
        elif wanted is None or (self.current and self.current.version_id == wanted) or self._refused(wanted):
            return False
        if wanted and self._swap_to(wanted, restart=dead and wanted == self.current.version_id):
            return True
        if self.current is None:  # nothing serves: the newest older version once current that loads
            for older in artifact.fallbacks(self.cfg.artifacts, wanted, artifact.list_versions(self.cfg.artifacts)):
                if not self._refused(older) and self._swap_to(older):
                    log.error("CURRENT (%s) cannot be loaded: serving %s, once current, meanwhile", wanted, older)
                    return True
        return False

    @property
    def fallback_for(self) -> str | None:
        """CURRENT's version while it cannot load and another serves in its place (``/readyz``)."""
        named, current = self._named, self.current
        return named if named and current is not None and current.version_id != named and named in self.rejected \
            else None

    def _swap_to(self, wanted: str, restart: bool = False) -> bool:
        """Load ``wanted`` and make it the current version; False (rejected, logged and counted;
        the current version serving on) when it cannot be loaded. ``restart``: it is the current
        version's dead compute process being replaced (a failure is tried again next check)."""
        started, popularity = time.perf_counter(), self._popularity
        reused = None if restart else self.pinned.get(wanted)  # an arm's backend becomes current: no second copy
        try:
            serving = reused if reused is not None and reused.alive else self.build(wanted)
            self._with_live(serving, close=serving is not reused)  # the bulk (an arm's: what it missed, skipped)
        except Exception as e:  # a broken version must never take the service down
            if restart:  # nothing rejected (tried again next check): no reload failure counted
                log.error("version %s: its compute process could not be restarted: %s", wanted, e)
                return False
            self._reject(wanted, f"{type(e).__name__}: {e}")
            log.error("rejected version %s, still serving %s: %s", wanted,
                      self.current.version_id if self.current else None, e)
            if self._on_failed:
                self._on_failed(wanted, str(e))
            return False
        self._accepted(wanted)
        with self._live_lock:
            stopped = self._stop.is_set()  # stopped while it loaded: nothing installed, nothing left running
            if not stopped:
                if serving is not reused:
                    self._with_live(serving)  # what arrived meanwhile
                previous, self.current = self.current, serving
                if self.pinned.get(wanted) is serving:
                    del self.pinned[wanted]
                if previous is not None and previous.version_id in self._wanted_pins and previous.alive \
                        and previous.version_id not in self.pinned:  # an arm pinned to it serves on from it
                    self.pinned[previous.version_id], previous = previous, None
                if previous is not None:  # closed once batches begun on it are done (by stop() if it comes first)
                    self._retired.append((time.monotonic(), previous))
        if stopped:
            if serving is not reused:
                serving.close()
            return False
        if self._popularity is not popularity:  # refreshed while it loaded (set_popularity skipped it)
            try:
                serving.set_popularity(self._popularity)
            except Exception as e:  # the next refresh brings it; the swap is done and the old version retires
                log.error("version %s: the refreshed popularity was not applied: %s", wanted, e)
        self._mark()  # at once: gc reads it (the collection below can take a while under load)
        del previous
        # The version's objects (id maps, tables) live until the next swap: move them out of
        # the collector's sight, so its full passes under load stop walking them (the p99).
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        log.info("serving version %s (loaded in %.2f s)", wanted, time.perf_counter() - started)
        if self._on_loaded and not restart:  # a restarted compute process is no version loaded
            self._on_loaded(wanted)
        return True

    def _check_pinned(self) -> None:
        """Load each pinned version not loaded yet (or whose compute process died); one that
        cannot be loaded is rejected, logged and counted, and its arm served by the current one."""
        for version_id in self._wanted_pins:
            if self.current is not None and self.current.version_id == version_id:
                if version_id in self.pinned:  # CURRENT moved onto a pinned version: one backend is enough
                    self._retired.append((time.monotonic(), self.pinned.pop(version_id)))
                continue
            loaded = self.pinned.get(version_id)
            if (loaded is not None and loaded.alive) or self._refused(version_id):
                continue
            if loaded is not None:  # its compute process died
                self.pinned.pop(version_id).close()
            try:
                backend = self.build(version_id)
                self._with_live(backend)
                with self._live_lock:
                    if self._stop.is_set():  # stopped while it loaded
                        backend.close()
                        return
                    self._with_live(backend)
                    self.pinned[version_id] = backend
                self._accepted(version_id)
                log.info("experiment: version %s loaded beside the current one", version_id)
            except Exception as e:  # an arm's broken version never takes the service down
                self._reject(version_id, f"{type(e).__name__}: {e}")
                log.error("experiment: version %s could not be loaded, its arm is served by the current "
                          "version: %s", version_id, e)
                if self._on_failed:
                    self._on_failed(version_id, str(e))

    def _close_retired(self, grace_s: float | None = None) -> None:
        grace_s = RETIRE_GRACE_S if grace_s is None else grace_s
        now = time.monotonic()
        while self._retired and now - self._retired[0][0] >= grace_s:
            self._retired.pop(0)[1].close()

    def _mark(self) -> None:
        if self.current is not None and not self._stop.is_set():  # a stopped server's marker stays gone
            # every pin the experiment names, loaded or not yet: gc must not delete one before it loads
            self._marker = artifact.record_serving(self.cfg.artifacts, self.current.version_id, *self._wanted_pins)

    def start(self) -> None:
        self.check()
        self._thread = threading.Thread(target=self._watch, name="groundrec-reload", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.cfg.reload_interval_s):
            try:
                if not self.check():
                    self._mark()  # refresh: a marker older than a day no longer protects
            except Exception:  # keep watching whatever happens
                log.exception("version check failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        artifact.forget_serving(self._marker)
        with self._live_lock:  # a swap still loading installs (or retires) nothing after this (``_swap_to``)
            serving = [b for b in (self.current, *self.pinned.values(), *(b for _, b in self._retired)) if b is not None]
            self._retired.clear()
        for backend in serving:
            backend.close()
