"""Finding a version to read: a local artifacts root, a version folder, or an fsspec URI
(s3://, gs://, ...) copied once into a local cache and verified like any version."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from groundrec.shared.artifact.layout import MANIFEST, VERSIONS, is_version_id, verify
from groundrec.shared.artifact.pointer import current_version, is_uri, version_path
from groundrec.shared.errors import UserError


def default_cache_dir(root: str) -> Path:
    return Path(tempfile.gettempdir()) / "groundrec-versions" / hashlib.sha256(str(root).encode()).hexdigest()[:12]


def fetch_version(root: str, version_id: str, cache_dir: Path) -> Path:
    """Copy a version from an fsspec location (s3://, gs://, ...) into a local folder, once:
    FAISS and onnxruntime read local files. The copy is verified before it enters the cache
    (a version caught mid-upload is refused now and fetched whole on a later try, never cached
    broken); processes fetching the same version at once each copy it, and the first copy in
    is the one every one of them uses."""
    import fsspec

    if not is_version_id(version_id):
        raise UserError(f"{version_id!r} is not a version id")
    local = Path(cache_dir) / version_id
    local.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _owned(local.parent)
    if (local / MANIFEST).is_file():
        try:
            verify(local)
            return local
        except (OSError, ValueError):  # a copy gone bad (a disk, a cache an older release filled): fetched again
            _removed(local)
    fs, base = fsspec.core.url_to_fs(str(root).rstrip("/"))
    source = f"{base}/{VERSIONS}/{version_id}"
    if not fs.exists(f"{source}/{MANIFEST}"):
        raise FileNotFoundError(f"{root} has no version {version_id} (no {MANIFEST})")
    tmp = local.parent / f".{version_id}.{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        for remote in fs.find(source):
            if remote.rstrip("/") == source or remote.endswith("/"):  # a folder marker (S3 consoles make them)
                continue
            target = tmp / _inside(remote, source, root)
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(remote, str(target))
        verify(tmp)
        try:
            os.replace(tmp, local)
        except OSError:  # another process put its copy in first (a folder is not replaced)
            if not (local / MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    evict(local.parent, spare=version_id)
    return local


def _inside(remote: str, source: str, root) -> str:
    """``remote``'s path within the version folder ``source``, refused (``UserError``) when it
    is not one: an object key holding a ``..`` or ``.`` segment (an object store allows them)
    would be written outside the local copy, before the manifest's checksums are read."""
    rel = remote[len(source):] if remote.startswith(source + "/") else None
    parts = rel.strip("/").split("/") if rel else []
    if not parts or any(p in ("", ".", "..") or "\\" in p or ":" in p for p in parts):
        raise UserError(f"{root}: {remote!r} is not a file name inside version folder {source!r}: refused "
                        f"(a '..' or '.' segment, a backslash or a drive would be written outside the local copy)")
    return "/".join(parts)


def _owned(folder: Path) -> None:
    """The local cache folder, and the folder above it when that is the shared default's
    (``groundrec-versions`` under the temporary directory), belong to this user or root and no
    other user may write to them: another local user could otherwise plant a version, checksums
    and all, that the cache serves as it is (a root-owned, group-writable volume is allowed)."""
    if not hasattr(os, "getuid"):
        return
    for f in (folder, folder.parent) if folder.parent.name == "groundrec-versions" else (folder,):
        st = f.stat() if f.exists() else None
        if st is not None and st.st_uid == os.getuid() and st.st_mode & 0o022:  # ours, made under a umask of 0
            os.chmod(f, st.st_mode & 0o755)
            st = f.stat()
        if st is not None and (st.st_uid not in (os.getuid(), 0) or st.st_mode & 0o002):
            raise UserError(f"the version cache {f} belongs to another user (uid {st.st_uid}) or anyone may write "
                            f"to it (mode {st.st_mode & 0o777:o}): set version_cache_dir to a folder of this user's")


CACHE_KEEP = 3  # remote versions kept in a local cache (the newest; a process reading an older one fetches it again)


def _removed(folder: Path) -> None:
    """Renamed aside first (a sibling process never reads a folder half-deleted: it finds no
    manifest and fetches), then deleted."""
    aside = folder.parent / f".{folder.name}.gone.{uuid.uuid4().hex}"
    try:
        os.replace(folder, aside)
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def evict(cache_dir: Path, keep: int = CACHE_KEEP, spare: str | None = None) -> list[str]:
    """Remove all but the newest ``keep`` cached versions (never ``spare``, the one just fetched)
    and copies left half-done by killed fetches over an hour ago: a cache of nightly versions
    of several GiB each no longer fills the disk."""
    import time

    versions = sorted(p.name for p in Path(cache_dir).iterdir() if p.is_dir() and is_version_id(p.name))
    doomed = [v for v in versions[:-keep] if v != spare] if keep else []
    for v in doomed:
        _removed(Path(cache_dir) / v)
    for p in Path(cache_dir).glob(".*"):  # a fetch's own copy is named .<id>.<random>
        if p.is_dir() and time.time() - p.stat().st_mtime > 3600:
            shutil.rmtree(p, ignore_errors=True)
    return doomed


def locate(root: str | Path, version_id: str | None = None, cache_dir: Path | None = None) -> Path:
    """The local folder of a version: ``version_id`` of an artifacts root, or the one CURRENT
    names; a root that is an fsspec URI has the version copied to ``cache_dir`` first. A path
    that already is a version folder is returned as it is."""
    if not is_uri(root) and version_id is None and (Path(root) / MANIFEST).is_file():
        return Path(root)
    if version_id is None:
        version_id = current_version(root)
        if version_id is None:
            raise FileNotFoundError(f"no published version in {root}: run `groundrec offline run --out {root}` first")
    if is_uri(root):
        return fetch_version(str(root), version_id, cache_dir or default_cache_dir(str(root)))
    path = version_path(root, version_id)
    if not path.is_dir():
        raise FileNotFoundError(f"{root} has no version {version_id}")
    return path
