"""Live items' embeddings kept in the event store (``item_vectors``), so that a process that
applies the live catalog again (a server's restart, another worker or replica, a hot swap to
a version it served before) encodes only what no server has encoded yet: before each apply
the store is asked for the embeddings of the items' states in that version (its id and the
encoder variant, the item id, the state's ``seq``), and what the apply then encodes is
written back in the background. A cache: a miss or a store that does not answer costs an
encoding, never an answer (docs/operations.md, § 10)."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from groundrec.online.errors import Unavailable
from groundrec.shared.events import StoreUnavailable

log = logging.getLogger("groundrec.serve")


class LiveVectors:
    def __init__(self, events, variant: str, on_encoded=None):
        self.events, self.variant = events, variant  # ``online.events.Events``; the serve config's encoder_variant
        self.on_encoded = on_encoded  # called with how many texts an apply encoded
        self._saver = ThreadPoolExecutor(1, thread_name_prefix="groundrec-live-vectors")

    def key(self, version_id: str) -> str:
        return f"{version_id}/{self.variant}"

    def cached(self, version_id: str, items: list) -> dict[str, np.ndarray]:
        """The cached embeddings of these items' states in the version, by item id."""
        keys = [(i.item_id, i.seq) for i in items if not i.deleted]
        if not keys:
            return {}
        try:
            found = self.events.store().item_vectors(self.key(version_id), keys)
        except (StoreUnavailable, Unavailable) as e:  # a cache: the apply encodes them
            log.warning("live items' embeddings not read from the event store (they are encoded): %s", e)
            return {}
        return {item_id: np.frombuffer(blob, np.float32) for (item_id, _), blob in found.items()}

    def apply(self, backend, items: list) -> None:
        """Apply ``items`` to ``backend`` with the cached embeddings given; cache what it encoded."""
        given = self.cached(backend.version_id, items)
        known = backend.apply_live((items, given or None)) or {}
        seq = {i.item_id: i.seq for i in items}
        new = [(item_id, seq[item_id], np.asarray(v, np.float32).tobytes())
               for item_id, v in known.items() if item_id not in given and item_id in seq]
        if new:
            if self.on_encoded is not None:
                self.on_encoded(len(new))
            try:
                self._saver.submit(self._save, self.key(backend.version_id), new)
            except RuntimeError:  # closed: the server is stopping (the next process encodes them)
                pass

    def _save(self, key: str, rows: list[tuple[str, int, bytes]]) -> None:
        try:
            self.events.store().add_item_vectors(key, rows)
        except Exception as e:  # a cache: the next process encodes them again
            log.warning("%d live items' embeddings not cached in the event store: %s", len(rows), e)

    def close(self) -> None:
        """Write what is queued, then stop."""
        self._saver.shutdown(wait=True)
