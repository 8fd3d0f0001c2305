"""A write group's live items encoded on two compute processes at once (``compute.RemoteServing``):
the primary names the texts its apply would embed, its standby encodes every other one while
the primary encodes the rest, and the primary then applies them all with their embeddings given.
Encoding is the write path's cost (docs/benchmarks.md, issue 33: 6-14 ms per H&M text on one
core), so where the second core is free a group is applied in about half the time.

The standby runs only a pure function of the texts (``Serving.encode``): whatever it is doing
(loading, applying a backlog), its embeddings are the primary's. A standby that fails leaves its
share to the primary's apply, which encodes whatever it is not given."""

from __future__ import annotations

import logging
import threading

import numpy as np

log = logging.getLogger("groundrec.serve")
MIN_SHARED = 2  # fewer texts than this are encoded by the primary alone


def live_timeout(items: list, vectors: dict | None) -> float:
    """How long applying live items may take (a few ms to encode each, a wide margin)."""
    return 60.0 + 0.05 * sum(i.item_id not in (vectors or {}) for i in items)


def shared_vectors(remote, items: list, given: dict | None) -> dict[str, np.ndarray]:
    """Embeddings of ``items``' texts not in ``given``, half of them by the standby of
    ``remote`` (a ``compute.RemoteServing``), the other half by its primary; {} when there is no
    standby, its config says not to (``standby_encodes``) or there is too little to share."""
    call, standby, timeout_s = remote._call, remote.standby, live_timeout(items, given)
    if not remote.limits.standby_encodes or standby is None or not standby.alive or \
            sum(not i.deleted for i in items) < MIN_SHARED:
        return {}
    texts: dict[str, str] = call("live_texts", (items, given), timeout_s)
    if len(texts) < MIN_SHARED:
        return {}
    ids = sorted(texts, key=lambda i: len(texts[i]))  # alike lengths in each share (the encoder pads a batch)
    mine, theirs = ids[0::2], ids[1::2]
    out: dict[str, np.ndarray] = {}

    def encode_theirs() -> None:
        try:
            out.update(zip(theirs, standby.call("encode", [texts[i] for i in theirs], timeout_s, wait=False)))
        except BlockingIOError:  # busy (a new standby applying the live catalog): the primary's apply encodes them
            pass
        except Exception as e:  # the primary's apply encodes them instead
            log.warning("the standby compute process did not encode %d live items: %s", len(theirs), e)

    thread = threading.Thread(target=encode_theirs, name="groundrec-standby-encode", daemon=True)
    thread.start()
    try:
        out.update(zip(mine, call("encode", [texts[i] for i in mine], timeout_s)))
    finally:
        thread.join()
    return out
