"""The activation log: who made which version current, and how (the job, through its
promotion gate or not, or a person with ``groundrec versions activate``), one JSON line per
activation in ``<root>/activations.jsonl``. A version the gate refused and a person activated
anyway is recorded as such (``gate_bypassed``), so the override shows in the history."""

from __future__ import annotations

import json
import time
from pathlib import Path

from groundrec.shared.artifact.layout import read_manifest
from groundrec.shared.artifact.pointer import is_uri, version_path

ACTIVATIONS = "activations.jsonl"
FALLBACK_TRIES = 3  # older versions a server tries when nothing serves and CURRENT's cannot be loaded


def record_activation(root: str | Path, version_id: str, by: str, gate_bypassed: bool = False,
                      note: str = "") -> dict | None:
    """Append one activation (None for an object-store root: not recorded there)."""
    if is_uri(root):
        return None
    entry = {"at": time.time(), "version": version_id, "by": by, "gate_bypassed": gate_bypassed, "note": note}
    with open(Path(root) / ACTIVATIONS, "a") as f:
        f.write(json.dumps(entry) + "\n")
    return entry


def activations(root: str | Path) -> list[dict]:
    """Every recorded activation, oldest first."""
    path = Path(root) / ACTIVATIONS
    if is_uri(root) or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fallbacks(root: str | Path, current: str, versions: list[str]) -> list[str]:
    """The versions a server tries, newest first, when CURRENT's (``current``) cannot be
    loaded: the newest ``FALLBACK_TRIES`` older than it that were once current (never one the
    gate refused or nobody activated). gc keeps them (``retention.gc``)."""
    served = {a.get("version") for a in activations(root)}
    return [v for v in versions if v < current and v in served][::-1][:FALLBACK_TRIES]


def gate_refused(root: str | Path, version_id: str) -> str | None:
    """Why the promotion gate refused this version (None: it did not, or there was no gate)."""
    try:
        gate = read_manifest(version_path(root, version_id)).gate
    except (OSError, ValueError):
        return None
    if gate and gate.get("mode") == "gate" and not gate.get("activated"):
        return gate.get("reason") or "refused by the gate"
    return None
