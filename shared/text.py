"""Item text from a template: the one rule the job's encode stage and the service's live items
(``online/live``) fill a template by, so an item embedded online reads as the job would embed it."""

from __future__ import annotations

import re


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return ""


_JOINERS = re.compile(r"(\s*[.,;:]\s*){2,}")


def render(template: str, row: dict) -> str:
    """Fill the template; absent or empty values leave no dangling punctuation."""
    values = _Blank({k: ("" if v is None else str(v).strip()) for k, v in row.items()})
    text = template.format_map(values)
    text = _JOINERS.sub(lambda m: m.group(0).strip()[0] + " ", text)
    return re.sub(r"\s+", " ", text).strip(" .,;:") or ""
