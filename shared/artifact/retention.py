"""Which versions stay: the serving markers a running server keeps fresh, and gc, which never
deletes what CURRENT names, what a server falls back to, the newest verified version or one a
server reports serving."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

from groundrec.shared.artifact.activations import fallbacks
from groundrec.shared.artifact.layout import VERSIONS, is_version_id
from groundrec.shared.artifact.pointer import current_lock, current_version, is_uri, list_versions, newest_verified

log = logging.getLogger("groundrec.artifact")

# A server records the version it serves in <root>/.serving/<place>-<pid> and refreshes the
# file while it runs; gc never deletes a version named there. Its place is its host and, on
# Linux, its PID namespace: containers sharing a hostname (and a mounted root) number their
# processes apart, so a pid is only looked up where it was given.
SERVING = ".serving"
SERVING_FRESH_S = 24 * 3600.0


def _place() -> str:
    """Where this process's pid means something: its host name, and its PID namespace where
    the system names one (``pid:[4026531836]`` on Linux)."""
    import socket

    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()}@{namespace.partition('[')[2].rstrip(']') or namespace}"


def record_serving(root: str | Path, version_id: str, *more: str) -> Path | None:
    """Say (for gc) that this process serves ``version_id`` (and ``more``: an experiment's
    pinned versions, one per line); None for an object-store root or
    a root this process cannot write (a read-only mount): gc there keeps CURRENT and the
    newest verified version only."""
    if is_uri(root):
        return None
    folder = Path(root) / SERVING
    marker = folder / f"{_place()}-{os.getpid()}"
    try:
        folder.mkdir(exist_ok=True)
        tmp = folder / f".{marker.name}.{uuid.uuid4().hex}.tmp"
        tmp.write_text("".join(v + "\n" for v in (version_id, *more)))
        os.replace(tmp, marker)
    except OSError:
        return None
    return marker


def forget_serving(marker: Path | None) -> None:
    if marker is not None:
        marker.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serving_versions(root: str | Path, fresh_s: float = SERVING_FRESH_S) -> set[str]:
    """Versions that running servers report serving. A marker of a process gone from this
    place (host and PID namespace) is removed; one from another place counts while refreshed
    within ``fresh_s``."""
    import time

    folder = Path(root) / SERVING
    if is_uri(root) or not folder.is_dir():
        return set()
    here, now, found = _place(), time.time(), set()
    for marker in folder.iterdir():
        if marker.name.startswith("."):
            continue
        place, _, pid = marker.name.rpartition("-")
        try:
            if place == here and pid.isdigit() and not _alive(int(pid)):
                marker.unlink(missing_ok=True)
                continue
            if now - marker.stat().st_mtime > fresh_s:
                continue
            text = marker.read_text(errors="replace").strip()
        except OSError:
            continue
        found.update(line for line in text.splitlines() if is_version_id(line))
    return found


def gc(root: Path, keep: int) -> list[str]:
    """Delete the oldest versions beyond ``keep``. Never deleted, whatever ``keep`` says: the
    one CURRENT names, the versions a server falls back to when CURRENT's cannot be loaded
    (``activations.fallbacks``: newer versions the gate refused no longer push them out), the
    newest that verifies and any a running server reports serving."""
    try:
        current = current_version(root)
    except ValueError:
        current = None
    versions = list_versions(root)
    protected = {current, newest_verified(root, versions), *serving_versions(root),
                 *(fallbacks(root, current, versions) if current else [])} - {None}
    old = [v for v in versions if v not in protected]
    doomed = old[: max(0, len(old) - max(0, keep - len(protected)))]
    for left in (Path(root) / VERSIONS).glob(".deleting-*"):  # a gc killed while it deleted
        shutil.rmtree(left, ignore_errors=True)
    deleted = []
    for v in doomed:
        trash = Path(root) / VERSIONS / f".deleting-{v}-{uuid.uuid4().hex}"  # the same file system
        with current_lock(root):  # no activation between the look at CURRENT and the version leaving it
            if _named_now(root) == v:  # activated since gc began (a rollback to an old version): kept
                continue
            try:
                os.replace(Path(root) / VERSIONS / v, trash)
            except FileNotFoundError:  # another gc took it
                continue
            except OSError as e:  # e.g. its folder's permissions: kept, and said, never the publishing job's failure
                log.warning("old version %s could not be collected, kept: %s", v, e)
                continue
        shutil.rmtree(trash, ignore_errors=True)
        deleted.append(v)
    return deleted


def _named_now(root: Path) -> str | None:
    try:
        return current_version(root)
    except ValueError:
        return None
