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


def item_text(template: str, row: dict, text_columns: list[str]) -> str:
    """An item's text to embed, in the job and for a live item alike: the template filled from
    its row; where that is empty (no grounding yet, or fields the template names that did not
    parse), its catalog ``text_columns`` present in the row, joined; "" when both are empty."""
    text = render(template, row)
    present = [c for c in text_columns if c in row]
    return text if text or not present else render(". ".join("{%s}" % c for c in present), row)
