"""The scoring core: every rule that decides a score, written once, numpy only.

The offline job's learn stage, ``groundrec eval`` and the service all call these functions,
so what eval measures is what the service serves:

- ``profiles``: a user's content profile from the vectors of their history (mean, recency,
  weighted, multi-interest; the latest ``MAX_HISTORY`` items), one user or a batch (the
  ``sequence`` strategy's query comes from the learned encoder instead);
- ``collab``: a history's collaborative query, the hybrid query (content profile beside it,
  through the version's projection) and the rows the index holds for an item;
- ``popularity``: interaction counts per item and the popularity prior;
- ``ranking``: exclusion of seen items, the prior, and top-k with ties to the lower row.

No torch, transformers, ray or faiss here (a test proves it). This file itself imports
nothing, so the request schemas (and the HTTP client) can name the strategies without numpy.
"""

# The profiles built from the history's item vectors (``profiles.build_profile``) ...
VECTOR_STRATEGIES = ("mean", "recency", "weighted", "multi_interest")
# ... and every strategy a request may name: ``sequence`` is the version's learned profile
# encoder (``shared/sequence_encoder.py``, run by the service where a version holds it).
STRATEGIES = VECTOR_STRATEGIES + ("sequence",)
# The strategies whose profile reads a history entry's time or weight (``build_profile``);
# the others read only the item.
READS_TIME_OR_WEIGHT = frozenset({"recency", "weighted"})
