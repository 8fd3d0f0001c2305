"""Grounding fidelity: do the VLM's structured fields agree with the catalog's own attributes?

Values are normalised (lower case, words only, plural "s" dropped, synonyms mapped); a field
counts as right when the VLM's words are all in the catalog value's, or hold all of them and
one word more, a qualifier ("dark blue" vs "blue" agree; "blue" vs "red" do not). An answer that
hedges ("black or navy blue", a list of every colour) is wrong: it would be right on every item.
The majority baseline, reported beside each accuracy for scale, is what the best constant
answer scores by the same rule: a catalog value, or one of its words ("blue" every time is right
on "blue", "dark blue" and "light blue" alike).
"""

from __future__ import annotations

import re
from collections import Counter

SYNONYMS = {"gray": "grey", "multicolour": "multi", "multicolor": "multi", "multicoloured": "multi",
            "striped": "stripe", "stripes": "stripe", "tshirt": "t shirt", "tee": "t shirt", "plain": "solid",
            "color": "colour", "floral": "flower", "check": "checked", "plaid": "checked"}


def normalise(value: str | None, synonyms: dict[str, str] | None = None) -> frozenset[str]:
    table = {**SYNONYMS, **{k.lower(): v.lower() for k, v in (synonyms or {}).items()}}
    words = []
    for w in re.findall(r"[a-z0-9]+", (value or "").lower().replace("t-shirt", "tshirt")):
        w = table.get(w, w)  # before and after dropping a plural "s": "stripes" and "tshirts" both map
        w = w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
        words.extend(table.get(w, w).split())
    return frozenset(words)


HEDGES = frozenset({"or", "and"})  # an answer naming alternatives
MAX_EXTRA_WORDS = 1  # beyond the catalog value's words: a qualifier ("dark"), not a list


def agrees(vlm_value: str | None, catalog_value: str | None, synonyms: dict[str, str] | None = None) -> bool:
    a, b = normalise(vlm_value, synonyms), normalise(catalog_value, synonyms)
    if not a or not b or (a & HEDGES) - b:
        return False
    return a <= b or (b <= a and len(a - b) <= MAX_EXTRA_WORDS)


def field_accuracy(vlm_values: list[str | None], catalog_values: list[str | None],
                   synonyms: dict[str, str] | None = None) -> dict:
    """Accuracy over items whose catalog value is known; unanswered VLM fields count as wrong."""
    pairs = [(v, c) for v, c in zip(vlm_values, catalog_values) if normalise(c, synonyms)]
    if not pairs:
        return {"n": 0, "accuracy": None, "answered": None, "majority_baseline": None}
    right = sum(agrees(v, c, synonyms) for v, c in pairs)
    answered = sum(bool(normalise(v, synonyms)) for v, _ in pairs)
    return {"n": len(pairs), "accuracy": right / len(pairs), "answered": answered / len(pairs),
            "majority_baseline": best_constant([c for _, c in pairs], synonyms) / len(pairs)}


def best_constant(catalog_values: list[str | None], synonyms: dict[str, str] | None = None) -> int:
    """How many of ``catalog_values`` the best constant answer gets right (``agrees``): tried
    are every distinct value and every word of one."""
    counts = Counter(" ".join(sorted(normalise(c, synonyms))) for c in catalog_values)
    answers = set(counts) | {w for value in counts for w in value.split()}
    return max(sum(n for value, n in counts.items() if agrees(a, value)) for a in answers)
