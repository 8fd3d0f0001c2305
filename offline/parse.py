"""Turning a VLM's answer to the structured prompt into named fields, tolerantly."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_SYNONYMS = {"color": "colour", "colours": "colour", "colors": "colour", "target": "target_group",
             "gender": "target_group", "audience": "target_group", "type": "category",
             "product_type": "category", "fabric": "material", "occasions": "occasion"}
_LINE = re.compile(r"^\s*[-*•]?\s*[*_]*([A-Za-z][A-Za-z _-]{0,40}?)[*_]*\s*[:=]\s*(.+?)\s*$")
_JSON = re.compile(r"\{.*\}", re.S)
_WRAPPING = " \t\"'*_`"


@dataclass(frozen=True)
class Parsed:
    fields: dict[str, str | None]
    ok: bool
    error: str | None


def _norm_key(key: str) -> str:
    k = re.sub(r"[\s-]+", "_", key.strip().lower())
    return _SYNONYMS.get(k, k)


def _clean(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v) for v in value)
    # quotes and Markdown emphasis around it (a chat model's "**Colour:** navy" left "** navy")
    text = str(value).strip(_WRAPPING).rstrip(".,;").strip(_WRAPPING)
    return text or None


def parse_structured(answer: str, fields: list[str]) -> Parsed:
    """Fill ``fields`` from a JSON object or ``key: value`` lines; never raises.

    ``ok`` is True only when every field got a value; ``error`` names what was missing.
    """
    found: dict[str, str | None] = {}
    match = _JSON.search(answer or "")
    if match:
        try:
            obj = json.loads(match.group(0))
            if isinstance(obj, dict):
                found = {_norm_key(str(k)): _clean(v) for k, v in obj.items()}
        except (json.JSONDecodeError, RecursionError):  # a model stuck on "[" nests past the parser's depth
            pass
    if not found:
        for line in (answer or "").splitlines():
            m = _LINE.match(line)
            if m:
                found.setdefault(_norm_key(m.group(1)), _clean(m.group(2)))
    values = {f: found.get(f) for f in fields}
    missing = [f for f, v in values.items() if v is None]
    if not (answer or "").strip():
        return Parsed(values, False, "empty answer")
    if missing:
        return Parsed(values, False, f"missing field(s): {', '.join(missing)}")
    return Parsed(values, True, None)
