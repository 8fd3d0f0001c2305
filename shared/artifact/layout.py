"""What a published version is: the artifacts root's layout, the name of every file of a
version, the manifest that vouches for them (checksums) and version ids. Pure naming and
checking: nothing here moves CURRENT or writes a version.

The learned profile encoder (issue 34): a version may hold a folder ``sequence/``
(``SEQUENCE_DIR``), exactly what ``groundrec.offline.sequence.export`` writes (``SEQUENCE_FILES``:
sequence.json, sequence.onnx, sequence_items.npy, sequence_project.npz), checksummed in the
manifest's ``files`` like ``encoder/`` (``sequence/sequence.json`` etc.); ``verify`` refuses a
version whose ``sequence/`` holds one of them unlisted, or whose ``default_strategy`` is
``sequence`` without them (``Manifest.required_files``). The service then loads it
(``VersionFiles.sequence_dir``, ``has_sequence``) and serves the ``sequence`` strategy. The
manifest says which strategy a request that names none gets (``default_strategy``; absent
in older manifests: ``mean``) and may carry the encoder's validation scores (``sequence``, a
free-form dict, present whether or not the encoder was published)."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from groundrec.shared.errors import UserError

VERSIONS = "versions"
CURRENT = "CURRENT"
STAGING = ".staging"

MANIFEST = "manifest.json"
INDEX = "index.faiss"
EMBEDDINGS = "embeddings.npy"
ITEMS = "items.parquet"
SKIPPED = "skipped.parquet"
# Optional: a WebP thumbnail per item with a readable image (item_id, webp), for the web page.
THUMBNAILS = "thumbnails.parquet"
# A hybrid version (manifest.collab set) adds the collaborative model's two matrices, rows
# aligned with ITEMS: query-side vectors (summed over a history) and item-side vectors (the
# index holds [embedding, collab.weight * item-side vector]).
COLLAB_QUERY = "collab_query.npy"
COLLAB_ITEM = "collab_item.npy"
COLLAB_CONTENT_MAP = "collab_content_map.npy"  # optional: content -> [query, item], for live items
# A hybrid indexed at the content's width (manifest.collab.projection set) adds the projection:
# the index holds [embedding, weight * item-side] @ PROJECT_ITEM, a profile is searched as
# [content profile, collaborative query] @ PROJECT_QUERY.
PROJECT_ITEM = "project_item.npy"
PROJECT_QUERY = "project_query.npy"
# A hybrid's ITEMS has this column: each item's interactions in the learn window (0: a new item,
# which collab.fresh_weight lifts).
WINDOW_INTERACTIONS = "window_interactions"
# Interactions per item in the last ``recent_days`` of the job's window: the version's own
# recent-popularity prior (``recent_weight`` x ln(1 + count), chosen on validation; the column
# is written only where that weight is above 0).
RECENT_INTERACTIONS = "recent_interactions"
# ITEMS' float64 column of when each item first appeared (seconds since the epoch; null: not
# known): its first interaction the job read, or a live item's first PUT (``GET /latest``).
FIRST_SEEN = "first_seen"
ENCODER_DIR = "encoder"
# Inside ENCODER_DIR: a descriptor naming the tokenizer and one ONNX file per variant.
ENCODER_CONFIG = "encoder.json"
ENCODER_TOKENIZER = "tokenizer.json"
ENCODER_ONNX = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
# The learned profile encoder's export (optional; offline/sequence/export.py writes it, the
# names of shared/sequence_encoder.py): served as the ``sequence`` strategy.
SEQUENCE_DIR = "sequence"
SEQUENCE_FILES = ("sequence.json", "sequence.onnx", "sequence_items.npy", "sequence_project.npz")
# What a request that names no strategy gets from a version whose manifest does not say.
DEFAULT_STRATEGY = "mean"
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
    def thumbnails(self) -> Path:
        return self.root / THUMBNAILS

    @property
    def collab_query(self) -> Path:
        return self.root / COLLAB_QUERY

    @property
    def collab_item(self) -> Path:
        return self.root / COLLAB_ITEM

    @property
    def collab_content_map(self) -> Path:
        return self.root / COLLAB_CONTENT_MAP

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

    @property
    def sequence_dir(self) -> Path:
        """The learned profile encoder's export (``SequenceEncoder(files.sequence_dir)``)."""
        return self.root / SEQUENCE_DIR

    @property
    def has_sequence(self) -> bool:
        return (self.sequence_dir / SEQUENCE_FILES[0]).is_file()


# --- manifest --------------------------------------------------------------------------
class FileEntry(BaseModel):
    sha256: str
    bytes: int


class Manifest(BaseModel):
    """What a version holds and the checksums that vouch for it. Unknown fields written by a
    newer job are kept (``extra="allow"``), so an older server can still read the version."""

    model_config = ConfigDict(extra="allow")

    format_version: int = FORMAT_VERSION  # raised only by a change an older reader would misread
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
    catalog_image_column: str = Field("image", description="the catalog's image column (a live item's change of it "
                                      "drops its grounded fields and its thumbnail)")
    collab: dict | None = Field(None, description="hybrid versions: the collaborative model (name, rank, reg, "
                                "weight, interactions window, validation metrics); None: content only")
    learn: dict | None = Field(None, description="content-only versions whose job was given interactions: the learn "
                               "stage's report (what was tried and scored on validation) when it chose weight 0")
    gate: dict | None = Field(None, description="whether the job made this version current: the activation mode "
                              "and, for the promotion gate, the window, users, both versions' scores and the test")
    notes: list[str] = Field([], description="what the job said about this run (e.g. a catalog without images)")
    default_strategy: str = Field(DEFAULT_STRATEGY, description="the profile strategy of a request that names none "
                                  "(absent in manifests written before it: mean); 'sequence' needs the version's "
                                  "sequence/ folder")
    sequence: dict | None = Field(None, description="the learned profile encoder's validation scores (free-form), "
                                  "whether or not it was published (sequence/)")
    files: dict[str, FileEntry] = {}

    @property
    def projected(self) -> bool:
        """A hybrid indexed through a projection (``collab.projection``)."""
        return bool(self.collab and self.collab.get("projection"))

    @property
    def recent_weight(self) -> float:
        """The weight of the version's recent-popularity prior (a hybrid's or content alone's);
        0: none, and for versions published before it existed."""
        return float((self.collab or self.learn or {}).get("recent_weight") or 0.0)

    @property
    def profile_half_life_days(self) -> float:
        """The content profile's recency the job chose for a content-only version, in days (the
        ``recency`` strategy's half-life; its ``default_strategy`` is then ``recency``); 0: none."""
        return float((self.collab or self.learn or {}).get("profile_half_life_days") or 0.0)

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
                + ((PROJECT_ITEM, PROJECT_QUERY) if self.projected else ())
                + (sequence_files() if self.default_strategy == "sequence" else ()))


def sequence_files() -> tuple[str, ...]:
    """The sequence encoder's files as the manifest's ``files`` names them."""
    return tuple(f"{SEQUENCE_DIR}/{name}" for name in SEQUENCE_FILES)


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


def _known_format(manifest: Manifest) -> Manifest:
    """A version of a newer format than this code reads is refused with the reason (additive
    fields are not a new format: an older server reads around them)."""
    if manifest.format_version > FORMAT_VERSION:
        raise ValueError(f"version {manifest.version} is of artifact format {manifest.format_version}, newer than "
                         f"this groundrec reads ({FORMAT_VERSION}): upgrade groundrec to serve it")
    return manifest


def read_manifest(directory: Path) -> Manifest:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has no {MANIFEST}: not a published groundrec version")
    return _known_format(Manifest.model_validate_json(path.read_text()))


def verify(directory: Path) -> Manifest:
    """Raise ValueError naming every file that is missing, unvouched for, or whose checksum
    does not match."""
    manifest = read_manifest(directory)
    required = manifest.required_files()
    if (Path(directory) / SEQUENCE_DIR).is_dir():  # an encoder present is served: all of it vouched for
        required += tuple(rel for rel in sequence_files() if rel not in required and (Path(directory) / rel).exists())
    problems = [f"{rel}: not listed in the manifest" for rel in required if rel not in manifest.files]
    for rel, entry in manifest.files.items():
        p = Path(directory) / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
        elif p.stat().st_size != entry.bytes or sha256_file(p) != entry.sha256:
            problems.append(f"{rel}: checksum mismatch")
    if problems:
        raise UserError(f"version {Path(directory).name} does not match its manifest: {'; '.join(problems)}")
    return manifest



# --- ids -------------------------------------------------------------------------------
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
