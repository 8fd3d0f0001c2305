"""A write group's live items encoded before the compute process applies them
(``compute.RemoteServing``): the primary names the texts its apply would embed, its standby
encodes every other one while the primary encodes the rest a few at a time (request batches
are scored in between), and the primary then applies them all with their embeddings given.
Encoding is the write path's cost (docs/benchmarks.md, issue 33: 6-14 ms per H&M text on one
core), so where the second core is free a group is applied in about half the time.

The standby runs only a pure function of the texts (``Serving.encode``): whatever it is doing
(loading, applying a backlog), its embeddings are the primary's. A standby that fails leaves its
share to the primary's apply, which encodes whatever it is not given."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

log = logging.getLogger("groundrec.serve")
MIN_SHARED = 2  # fewer texts than this are encoded by the primary's apply
PAUSE_S = 0.001  # between two of its calls: a thread waiting for the primary gets its lock


def live_timeout(items: list, vectors: dict | None) -> float:
    """How long applying live items may take (a few ms to encode each, a wide margin)."""
    return 60.0 + 0.05 * sum(i.item_id not in (vectors or {}) for i in items)


def encoded_vectors(remote, items: list, given: dict | None) -> dict[str, np.ndarray]:
    """Embeddings of ``items``' texts not in ``given``, computed before the primary of ``remote``
    (a ``compute.RemoteServing``) applies them: every other one by its standby where it has one
    and may (``standby_encodes``), the rest by the primary in calls of ``live_encode_chunk`` texts,
    between which it scores the requests waiting (a feed of 100 long texts held its batches for
    a second in one call). {} for a lone text: the primary's apply encodes it."""
    if sum(not i.deleted for i in items) < MIN_SHARED:
        return {}
    call, standby, timeout_s = remote._call, remote.standby, live_timeout(items, given)
    texts: dict[str, str] = call("live_texts", (items, given), timeout_s)
    if len(texts) < MIN_SHARED:
        return {}
    ids = sorted(texts, key=lambda i: len(texts[i]))  # alike lengths in each share (the encoder pads a batch)
    share = remote.limits.standby_encodes and standby is not None and standby.alive
    mine, theirs = (ids[0::2], ids[1::2]) if share else (ids, [])
    out: dict[str, np.ndarray] = {}

    def encode_theirs() -> None:
        try:
            out.update(zip(theirs, standby.call("encode", [texts[i] for i in theirs], timeout_s, wait=False)))
        except BlockingIOError:  # busy (a new standby applying the live catalog): the primary's apply encodes them
            pass
        except Exception as e:  # the primary's apply encodes them instead
            log.warning("the standby compute process did not encode %d live items: %s", len(theirs), e)

    thread = threading.Thread(target=encode_theirs, name="groundrec-standby-encode", daemon=True) if theirs else None
    if thread is not None:
        thread.start()
    try:
        step = remote.limits.live_encode_chunk or len(mine) or 1  # 8 H&M texts: ~0.1 s in fp32 on one core
        for start in range(0, len(mine), step):
            if start:
                time.sleep(PAUSE_S)  # a request batch waiting for the primary takes its turn
            chunk = mine[start:start + step]
            out.update(zip(chunk, call("encode", [texts[i] for i in chunk], timeout_s)))
    finally:
        if thread is not None:
            thread.join()
    return out
