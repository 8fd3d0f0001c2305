"""The CURRENT pointer: which version an artifacts root serves, the versions it holds, and
moving CURRENT atomically."""

from __future__ import annotations

import os
import re
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path

from groundrec.shared.artifact.layout import CURRENT, MANIFEST, VERSIONS, is_version_id, verify
from groundrec.shared.errors import UserError


def is_uri(root: str | Path) -> bool:
    """An object-store (or other fsspec) location rather than a local folder."""
    text = str(root)
    return "://" in text and not text.startswith("file://")


def local_folder(value):
    """``value`` (a folder the job writes), refused when it is an object-store URI: s3://b/x, or
    what a ``Path`` made of one (s3:/b/x), which became a local folder called "s3:"."""
    if value is not None and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/", str(value)) and not str(value).startswith("file:"):
        raise ValueError(f"{value} is an object-store URI: the job writes to a local or mounted folder (publish "
                         f"there, e.g. a shared volume, and point the service at it or at a copy in the store)")
    return value


def _parse_pointer(raw: bytes, where: str) -> str | None:
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        return None
    if not is_version_id(text):
        shown = text[:40] + ("..." if len(text) > 40 else "")
        fix = (f"write a version id into it (the versions commands work on the job's local folder)" if is_uri(where)
               else f"fix it with `groundrec versions activate ID --artifacts {where}`")
        raise UserError(f"{where}/{CURRENT} does not hold a version id ({shown!r}); {fix}")
    return text


def current_version(root: str | Path) -> str | None:
    """The id CURRENT names, None when nothing is published; ValueError when CURRENT holds
    anything but a well-formed version id (it is never used as a path as it stands)."""
    if is_uri(root):
        import fsspec

        try:
            with fsspec.open(f"{str(root).rstrip('/')}/{CURRENT}", "rb") as f:
                return _parse_pointer(f.read(128), str(root))
        except FileNotFoundError:
            return None
    pointer = Path(root) / CURRENT
    if not pointer.is_file():
        return None
    with open(pointer, "rb") as f:
        return _parse_pointer(f.read(128), str(root))


def version_path(root: str | Path, version_id: str) -> Path:
    if not is_version_id(version_id):
        raise UserError(f"{version_id!r} is not a version id")
    return Path(root) / VERSIONS / version_id


def list_versions(root: str | Path) -> list[str]:
    d = Path(root) / VERSIONS
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if p.is_dir() and is_version_id(p.name) and (p / MANIFEST).is_file())


def current_path(root: str | Path) -> Path:
    vid = current_version(root)
    if vid is None:
        raise FileNotFoundError(f"no published version in {root}: run `groundrec offline run --out {root}` first")
    path = version_path(root, vid)
    if not path.is_dir():
        raise FileNotFoundError(f"{root}/{CURRENT} names version {vid}, which does not exist")
    return path


CURRENT_LOCK = ".current.lock"
class _Guard:
    """A root's lock within this process: its threads wait on the holder; ``depth`` is the
    holder's (re-entrant)."""

    def __init__(self):
        self.lock, self.depth = threading.RLock(), 0


_guards: dict[str, _Guard] = {}
_guards_lock = threading.Lock()


@contextmanager
def current_lock(root: str | Path):
    """Hold CURRENT still (an OS lock on ``<root>/.current.lock``, re-entrant in this process;
    another thread of it waits on the holder): the job holds it from its last look at CURRENT
    through its activation and the record of it, ``activate`` and gc take it, so a rollback
    made meanwhile waits (saying so) and then holds, and gc never deletes a version activated
    beside it. A lock file that neither exists nor can be made (a read-only mount) is no lock (nobody moves CURRENT there)."""
    import fcntl
    import logging

    key = str(Path(root).resolve())
    with _guards_lock:
        guard = _guards.setdefault(key, _Guard())
    with guard.lock:
        if guard.depth:  # this thread holds it already
            guard.depth += 1
            try:
                yield
            finally:
                guard.depth -= 1
            return
        handle = _lock_file(Path(root) / CURRENT_LOCK)
        try:
            if handle is not None:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    logging.getLogger("groundrec").warning(
                        "waiting for a job activating a version in %s (seconds; tens for a large version)", root)
                    fcntl.flock(handle, fcntl.LOCK_EX)
            guard.depth = 1
            yield
        finally:
            guard.depth = 0
            if handle is not None:
                os.close(handle)


def _lock_file(path: Path) -> int | None:
    """A descriptor of the lock file: read-write where it can be (NFS emulates flock with
    fcntl locks, and an exclusive one needs a file open for writing), else read-only (another
    user's file locks too); None where it neither exists nor can be made (a read-only mount)."""
    for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY | os.O_CREAT, os.O_RDONLY):
        try:
            return os.open(path, flags, 0o644)
        except OSError:
            continue
    return None


def activate(root: str | Path, version_id: str) -> None:
    """Point CURRENT at an existing version, atomically (under ``current_lock``)."""
    root = Path(root)
    with current_lock(root):
        if version_id not in list_versions(root):
            raise UserError(f"no published version {version_id!r} in {root}; have {list_versions(root)}")
        tmp = root / f".{CURRENT}.{uuid.uuid4().hex}.tmp"
        tmp.write_text(version_id + "\n")
        with open(tmp) as f:
            os.fsync(f.fileno())
        os.replace(tmp, root / CURRENT)
        synced_dir(root)  # the rename itself on disk: a power cut cannot take the activation back


def synced_dir(directory: Path) -> None:
    """A folder's entries (names created, renamed into it) flushed to disk."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def newest_verified(root: Path, candidates: list[str] | None = None) -> str | None:
    """The newest version that verifies against its manifest (what a server falls back to)."""
    for v in reversed(candidates if candidates is not None else list_versions(root)):
        try:
            verify(version_path(root, v))
            return v
        except (OSError, ValueError):
            continue
    return None
