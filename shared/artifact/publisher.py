"""The only code that writes a version: one writer per root (an OS lock), a staging folder,
checksums, an atomic rename into versions/, then CURRENT, then gc. ``publishing`` wraps the
whole protocol for a writer (the job, the synthetic benchmark versions)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from groundrec.shared.artifact.layout import STAGING, VERSIONS, Manifest, new_version_id, verify, write_manifest
from groundrec.shared.artifact.pointer import activate, synced_dir
from groundrec.shared.artifact.retention import gc
from groundrec.shared.errors import UserError

LOCK = ".lock"


class Locked(UserError, RuntimeError):
    """Another job is writing to the same artifacts root."""


@contextmanager
def writer_lock(root: Path):
    """One writer per artifacts root: a second job stops at once with a message naming the
    first (an OS lock, released when the holder exits, even by kill -9). Inside the lock,
    staging folders left by killed runs are removed."""
    import fcntl
    import socket

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    handle = open(root / LOCK, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise Locked(f"another groundrec job is publishing to {root} ({holder}); "
                     "wait for it to finish, or give this one another --out") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
                     f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}\n")
        handle.flush()
        clean_staging(root)
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def clean_staging(root: Path) -> list[str]:
    """Remove what killed runs left in .staging/ (call only while holding the writer lock)."""
    staging = Path(root) / STAGING
    if not staging.is_dir():
        return []
    removed = [p.name for p in staging.iterdir()]
    for name in removed:
        shutil.rmtree(staging / name, ignore_errors=True)
    return removed


def staging_dir(root: Path, version_id: str) -> Path:
    path = Path(root) / STAGING / version_id
    path.mkdir(parents=True, exist_ok=False)
    return path


def publish(root: Path, staged: Path, manifest: Manifest, keep: int = 0, activate_it: bool = True) -> Path:
    """Checksum a complete staged folder, rename it into versions/, then move CURRENT (unless
    ``activate_it`` is False: the promotion gate kept the serving version). Anything failing
    before the rename leaves what is published untouched."""
    root = Path(root)
    write_manifest(staged, manifest)
    verify(staged)
    synced(staged)  # on disk before anything names it: a power cut cannot leave CURRENT naming empty files
    final = root / VERSIONS / manifest.version
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)
    synced_dir(final.parent)
    if activate_it:
        activate(root, manifest.version)
    if keep:
        gc(root, keep)
    return final


def synced(folder: Path) -> None:
    """Every file under ``folder`` and every folder in it flushed to disk (``fsync``)."""
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    for directory in sorted({p.parent for p in Path(folder).rglob("*")} | {Path(folder)}):
        synced_dir(directory)


def discard_staging(staged: Path) -> None:
    shutil.rmtree(staged, ignore_errors=True)


@dataclass
class Publication:
    """A version being written: its id and its staging folder. ``publish(manifest)`` makes it
    the served version; leaving the block without it discards the staging folder."""

    root: Path
    version: str
    staged: Path
    keep: int = 0
    final: Path | None = None

    def publish(self, manifest: Manifest, activate_it: bool = True, collect: bool = True) -> Path:
        """``collect`` False: the old versions are left for ``collect`` (after the caller lets
        go of CURRENT)."""
        self.final = publish(self.root, self.staged, manifest, keep=self.keep if collect else 0,
                             activate_it=activate_it)
        return self.final

    def collect(self) -> list[str]:
        """Delete the oldest versions beyond ``keep`` (``retention.gc``)."""
        return gc(self.root, self.keep) if self.keep else []


@contextmanager
def publishing(root: Path, keep: int = 0) -> Iterator[Publication]:
    """Hold the writer lock, stage a new version and publish it or, on any error (or without a
    ``publish``), discard it: what is published stays as it was."""
    with writer_lock(root):
        version = new_version_id()
        pub = Publication(Path(root), version, staging_dir(root, version), keep)
        try:
            yield pub
        finally:
            if pub.final is None:
                discard_staging(pub.staged)
