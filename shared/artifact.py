"""The artifact contract: the one place that knows what a published version is.

An artifacts root (a local folder or an fsspec URI such as ``s3://bucket/groundrec``) holds

    versions/<id>/        one immutable version (the files below + manifest.json)
    CURRENT               one line: the id of the version to serve, replaced atomically
    .staging/<id>/        a version being written; renamed into versions/ when complete

This module names every file of a version, types the manifest that vouches for them,
writes a version (checksums, then rename, then CURRENT), and opens, verifies and locates
one. The offline job writes through it, the service and the CLI read through it; adding a
file to a version is a change here and in the stage that produces it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from groundrec.shared.errors import UserError

# --- layout ----------------------------------------------------------------------------
VERSIONS = "versions"
CURRENT = "CURRENT"
STAGING = ".staging"

MANIFEST = "manifest.json"
INDEX = "index.faiss"
EMBEDDINGS = "embeddings.npy"
ITEMS = "items.parquet"
SKIPPED = "skipped.parquet"
# A hybrid version (manifest.collab set) adds the collaborative model's two matrices, rows
# aligned with ITEMS: query-side vectors (summed over a history) and item-side vectors (the
# index holds [embedding, collab.weight * item-side vector]).
COLLAB_QUERY = "collab_query.npy"
COLLAB_ITEM = "collab_item.npy"
# A hybrid indexed at the content's width (manifest.collab.projection set) adds the projection:
# the index holds [embedding, weight * item-side] @ PROJECT_ITEM, a profile is searched as
# [content profile, collaborative query] @ PROJECT_QUERY.
PROJECT_ITEM = "project_item.npy"
PROJECT_QUERY = "project_query.npy"
ENCODER_DIR = "encoder"
# Inside ENCODER_DIR: a descriptor naming the tokenizer and one ONNX file per variant.
ENCODER_CONFIG = "encoder.json"
ENCODER_TOKENIZER = "tokenizer.json"
ENCODER_ONNX = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
# A manifest must vouch for these: a version without them cannot serve.
REQUIRED_FILES = (INDEX, EMBEDDINGS, ITEMS)

FORMAT_VERSION = 1
_ID_FORMAT = "%Y%m%dT%H%M%S.%fZ"
VERSION_ID = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{6}$")


@dataclass(frozen=True)
class VersionFiles:
    """The paths of one version's files, given its folder."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def index(self) -> Path:
        return self.root / INDEX

    @property
    def embeddings(self) -> Path:
        return self.root / EMBEDDINGS

    @property
    def items(self) -> Path:
        return self.root / ITEMS

    @property
    def skipped(self) -> Path:
        return self.root / SKIPPED

    @property
    def collab_query(self) -> Path:
        return self.root / COLLAB_QUERY

    @property
    def collab_item(self) -> Path:
        return self.root / COLLAB_ITEM

    @property
    def project_item(self) -> Path:
        return self.root / PROJECT_ITEM

    @property
    def project_query(self) -> Path:
        return self.root / PROJECT_QUERY

    @property
    def encoder_dir(self) -> Path:
        return self.root / ENCODER_DIR

    @property
    def has_encoder(self) -> bool:
        return (self.encoder_dir / ENCODER_CONFIG).is_file()


# --- manifest --------------------------------------------------------------------------
class FileEntry(BaseModel):
    sha256: str
    bytes: int


class Manifest(BaseModel):
    """What a version holds and the checksums that vouch for it. Unknown fields written by a
    newer job are kept (``extra="allow"``), so an older server can still read the version."""

    model_config = ConfigDict(extra="allow")

    format_version: int = FORMAT_VERSION
    version: str
    created_at: str
    code_version: str
    models: dict
    prompt: dict
    text_template: str
    dim: int
    counts: dict
    index: dict
    encoder_export: dict | None = None
    timings_s: dict
    id_column: str = "item_id"
    catalog_text_columns: list[str] = []
    collab: dict | None = Field(None, description="hybrid versions: the collaborative model (name, rank, reg, "
                                "weight, interactions window, validation metrics); None: content only")
    learn: dict | None = Field(None, description="content-only versions whose job was given interactions: the learn "
                               "stage's report (what was tried and scored on validation) when it chose weight 0")
    files: dict[str, FileEntry] = {}

    @property
    def projected(self) -> bool:
        """A hybrid indexed through a projection (``collab.projection``)."""
        return bool(self.collab and self.collab.get("projection"))

    @property
    def hybrid_dim(self) -> int:
        """A hybrid vector's full width: the content embedding's plus the collaborative rank."""
        return self.dim + (int(self.collab["rank"]) if self.collab else 0)

    @property
    def index_dim(self) -> int:
        """The index's dimension: the projection's, else the full hybrid (or content) width."""
        return int(self.collab["projection"]["dim"]) if self.projected else self.hybrid_dim

    def required_files(self) -> tuple[str, ...]:
        return (REQUIRED_FILES + ((COLLAB_QUERY, COLLAB_ITEM) if self.collab else ())
                + ((PROJECT_ITEM, PROJECT_QUERY) if self.projected else ()))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def checksum_tree(root: Path) -> dict[str, FileEntry]:
    root = Path(root)
    return {str(p.relative_to(root)): FileEntry(sha256=sha256_file(p), bytes=p.stat().st_size)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST}


def write_manifest(directory: Path, manifest: Manifest) -> None:
    manifest.files = checksum_tree(directory)
    (Path(directory) / MANIFEST).write_text(json.dumps(manifest.model_dump(mode="json"), indent=2))


def read_manifest(directory: Path) -> Manifest:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has no {MANIFEST}: not a published groundrec version")
    return Manifest.model_validate_json(path.read_text())


def verify(directory: Path) -> Manifest:
    """Raise ValueError naming every file that is missing, unvouched for, or whose checksum
    does not match."""
    manifest = read_manifest(directory)
    problems = [f"{rel}: not listed in the manifest" for rel in manifest.required_files() if rel not in manifest.files]
    for rel, entry in manifest.files.items():
        p = Path(directory) / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
        elif p.stat().st_size != entry.bytes or sha256_file(p) != entry.sha256:
            problems.append(f"{rel}: checksum mismatch")
    if problems:
        raise UserError(f"version {Path(directory).name} does not match its manifest: {'; '.join(problems)}")
    return manifest


# --- ids and the CURRENT pointer -------------------------------------------------------
def new_version_id() -> str:
    """Sortable by creation time (microseconds), unique across writers."""
    return datetime.now(timezone.utc).strftime(_ID_FORMAT) + "-" + uuid.uuid4().hex[:6]


def is_version_id(text: str) -> bool:
    return bool(VERSION_ID.match(text))


def created_at(version_id: str) -> float | None:
    """The publication time (Unix seconds) encoded in a version id, or None for another name."""
    try:
        return datetime.strptime(version_id.split("-")[0], _ID_FORMAT).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def is_uri(root: str | Path) -> bool:
    """An object-store (or other fsspec) location rather than a local folder."""
    text = str(root)
    return "://" in text and not text.startswith("file://")


def _parse_pointer(raw: bytes, where: str) -> str | None:
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        return None
    if not is_version_id(text):
        shown = text[:40] + ("..." if len(text) > 40 else "")
        raise UserError(f"{where}/{CURRENT} does not hold a version id ({shown!r}); "
                         f"fix it with `groundrec versions activate ID --artifacts {where}`")
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


def activate(root: str | Path, version_id: str) -> None:
    """Point CURRENT at an existing version, atomically."""
    root = Path(root)
    if version_id not in list_versions(root):
        raise UserError(f"no published version {version_id!r} in {root}; have {list_versions(root)}")
    tmp = root / f".{CURRENT}.{uuid.uuid4().hex}.tmp"
    tmp.write_text(version_id + "\n")
    with open(tmp) as f:
        os.fsync(f.fileno())
    os.replace(tmp, root / CURRENT)


def newest_verified(root: Path, candidates: list[str] | None = None) -> str | None:
    """The newest version that verifies against its manifest (what a server falls back to)."""
    for v in reversed(candidates if candidates is not None else list_versions(root)):
        try:
            verify(version_path(root, v))
            return v
        except (OSError, ValueError):
            continue
    return None


# A server records the version it serves in <root>/.serving/<host>-<pid> and refreshes the
# file while it runs; gc never deletes a version named there.
SERVING = ".serving"
SERVING_FRESH_S = 24 * 3600.0


def record_serving(root: str | Path, version_id: str) -> Path | None:
    """Say (for gc) that this process serves ``version_id``; None for an object-store root or
    a root this process cannot write (a read-only mount): gc there keeps CURRENT and the
    newest verified version only."""
    import socket

    if is_uri(root):
        return None
    folder = Path(root) / SERVING
    marker = folder / f"{socket.gethostname()}-{os.getpid()}"
    try:
        folder.mkdir(exist_ok=True)
        tmp = folder / f".{marker.name}.{uuid.uuid4().hex}.tmp"
        tmp.write_text(version_id + "\n")
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
    """Versions that running servers report serving. A marker of a process gone from this host
    is removed; one from another host counts while refreshed within ``fresh_s``."""
    import socket
    import time

    folder = Path(root) / SERVING
    if is_uri(root) or not folder.is_dir():
        return set()
    host, now, found = socket.gethostname(), time.time(), set()
    for marker in folder.iterdir():
        if marker.name.startswith("."):
            continue
        name_host, _, pid = marker.name.rpartition("-")
        try:
            if name_host == host and pid.isdigit() and not _alive(int(pid)):
                marker.unlink(missing_ok=True)
                continue
            if now - marker.stat().st_mtime > fresh_s:
                continue
            text = marker.read_text(errors="replace").strip()
        except OSError:
            continue
        if is_version_id(text):
            found.add(text)
    return found


def gc(root: Path, keep: int) -> list[str]:
    """Delete the oldest versions beyond ``keep``. Never deleted, whatever ``keep`` says: the
    one CURRENT names, the newest that verifies (what serves if CURRENT is broken) and any a
    running server reports serving."""
    try:
        current = current_version(root)
    except ValueError:
        current = None
    versions = list_versions(root)
    protected = {current, newest_verified(root, versions), *serving_versions(root)} - {None}
    old = [v for v in versions if v not in protected]
    doomed = old[: max(0, len(old) - max(0, keep - len(protected)))]
    for v in doomed:
        shutil.rmtree(Path(root) / VERSIONS / v)
    return doomed


# --- writing ---------------------------------------------------------------------------
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


def publish(root: Path, staged: Path, manifest: Manifest, keep: int = 0) -> Path:
    """Checksum a complete staged folder, rename it into versions/, then move CURRENT.
    Anything failing before the rename leaves what is published untouched."""
    root = Path(root)
    write_manifest(staged, manifest)
    verify(staged)
    final = root / VERSIONS / manifest.version
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)
    activate(root, manifest.version)
    if keep:
        gc(root, keep)
    return final


def discard_staging(staged: Path) -> None:
    shutil.rmtree(staged, ignore_errors=True)


# --- locating (local or URI) -----------------------------------------------------------
def default_cache_dir(root: str) -> Path:
    return Path(tempfile.gettempdir()) / "groundrec-versions" / hashlib.sha256(str(root).encode()).hexdigest()[:12]


def fetch_version(root: str, version_id: str, cache_dir: Path) -> Path:
    """Copy a version from an fsspec location (s3://, gs://, ...) into a local folder, once:
    FAISS and onnxruntime read local files. The copy is verified like any version."""
    import fsspec

    if not is_version_id(version_id):
        raise UserError(f"{version_id!r} is not a version id")
    local = Path(cache_dir) / version_id
    if (local / MANIFEST).is_file():
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    fs, base = fsspec.core.url_to_fs(str(root).rstrip("/"))
    source = f"{base}/{VERSIONS}/{version_id}"
    if not fs.exists(f"{source}/{MANIFEST}"):
        raise FileNotFoundError(f"{root} has no version {version_id} (no {MANIFEST})")
    tmp = local.parent / f".{version_id}.{uuid.uuid4().hex}"
    tmp.mkdir()
    for remote in fs.find(source):
        target = tmp / remote[len(source):].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote, str(target))
    os.replace(tmp, local)
    return local


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
