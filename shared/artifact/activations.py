"""The activation log: who made which version current, and how (the job, through its
promotion gate or not, or a person with ``groundrec versions activate``), one JSON line per
activation in ``<root>/activations.jsonl``. A version the gate refused and a person activated
anyway is recorded as such (``gate_bypassed``), so the override shows in the history."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from groundrec.shared.artifact.layout import read_manifest
from groundrec.shared.artifact.pointer import is_uri, version_path

log = logging.getLogger("groundrec.artifact")
ACTIVATIONS = "activations.jsonl"
FALLBACK_TRIES = 3  # older versions a server tries when nothing serves and CURRENT's cannot be loaded


def record_activation(root: str | Path, version_id: str, by: str, gate_bypassed: bool = False,
                      note: str = "") -> dict | None:
    """Append one activation (None for an object-store root: not recorded there)."""
    if is_uri(root):
        return None
    entry = {"at": time.time(), "version": version_id, "by": by, "gate_bypassed": gate_bypassed, "note": note}
    path = Path(root) / ACTIVATIONS
    with open(path, "a+b") as f:
        size, cut = f.seek(0, os.SEEK_END), False
        if size:  # a last line a full disk cut short: the new record starts on a line of its own
            f.seek(size - 1)
            cut = f.read(1) != b"\n"
        f.write((b"\n" if cut else b"") + json.dumps(entry).encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())
    return entry


def activations(root: str | Path) -> list[dict]:
    """Every recorded activation, oldest first. A line that is not a record (cut short by a full
    disk or a power cut, edited by hand) is skipped with a warning: it stopped a server's
    fallback at start and every gc."""
    path = Path(root) / ACTIVATIONS
    if is_uri(root) or not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if isinstance(entry, dict):
            out.append(entry)
        else:
            log.warning("%s line %d is not an activation record (skipped): %.80r", path, n, line)
    return out


def fallbacks(root: str | Path, current: str, versions: list[str]) -> list[str]:
    """The versions a server tries when CURRENT's (``current``) cannot be loaded: up to
    ``FALLBACK_TRIES`` that were once current (never one the gate refused or nobody
    activated), the most recently current first: after a rollback from V2 to V1 and a V3 that
    cannot be loaded, V1 (the version ids' order put V2, rolled back from, first). gc keeps them
    (``retention.gc``)."""
    existing, last = set(versions), {}
    for n, a in enumerate(activations(root)):
        last[a.get("version")] = n
    order = sorted((v for v in last if v in existing and v != current), key=last.__getitem__, reverse=True)
    return order[:FALLBACK_TRIES]


def gate_refused(root: str | Path, version_id: str) -> str | None:
    """Why the promotion gate refused this version (None: it did not, or there was no gate)."""
    try:
        gate = read_manifest(version_path(root, version_id)).gate
    except (OSError, ValueError):
        return None
    if gate and gate.get("mode") == "gate" and not gate.get("activated"):
        return gate.get("reason") or "refused by the gate"
    return None
