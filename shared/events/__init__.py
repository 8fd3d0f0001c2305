"""The event log: what users did online (views, carts, purchases), the histories the service
recommends from by user id, and the interactions the nightly job learns from. One contract
(``store.EventStore``), two backends: SQLite (embedded, the default) and Redis (shared)."""

from groundrec.shared.events.store import (Event, EventStore, Impression, ItemChange, StoreUnavailable, open_existing,
                                           open_store)

__all__ = ["Event", "EventStore", "Impression", "ItemChange", "StoreUnavailable", "open_existing", "open_store"]
