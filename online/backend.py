"""What the service asks of the version it serves: one protocol, two implementations.
``serving.Serving`` scores in this process (``compute: thread``); ``compute.RemoteServing``
sends each batch to a child process that holds the version (``compute: process``). The
holder swaps them and the service calls them without knowing which it has."""

from __future__ import annotations

from typing import Protocol

from groundrec.online.schemas import UserQuery


class Backend(Protocol):
    version_id: str
    default_strategy: str  # the version's profile strategy for a request that names none (its manifest's)
    has_sequence: bool  # whether the version holds a learned profile encoder (the ``sequence`` strategy)

    @property
    def alive(self) -> bool:
        """False once a compute process has died: the holder then starts a new one."""

    @property
    def threads(self) -> dict[str, int] | None:
        """The native thread pools of a compute process (None: this process's, reported by the service)."""

    def answer(self, items: list[UserQuery]) -> list:
        """Per request, in order: a single user's ``serving.Shown`` (JSON, item ids, version), a
        batch request's JSON bytes, or the request's error (``errors``); the requests are
        checked already (``serving.checked``)."""

    def item(self, item_id: str) -> dict:
        """One catalog row of the version (``errors.NotFound`` when absent)."""

    def unknown(self, item_ids: list[str]) -> int:
        """How many of these ids the version does not hold."""

    def set_popularity(self, popularity: dict[str, float] | None) -> None:
        """Replace the interactions per item id behind the prior and the popular fallback."""

    def apply_live(self, arg) -> dict:
        """Apply live items (``online/live``): ``arg`` is (LiveItems, their embeddings or None);
        the embeddings computed."""

    def check_live(self, arg: tuple[list, bool]) -> None:
        """Refuse changes the version cannot take (``online/live_checks.check_changes``); ``arg``:
        (changes, whether a patched or deleted item must exist in it: the current version's check)."""

    def close(self) -> None:
        """Release what the backend holds (a compute process is stopped)."""


QUERY_S = 0.005  # a user's list in a batch request, with a margin (0.2-1.4 ms each on these 2 cores, filtered or not)
TEXT_S = 0.25  # the longest a text may take to encode (a few ms to ~60 ms at 256 tokens on a free core), a margin in
POPULARITY_S = 5e-6  # an item id of a popularity refresh sent to a compute process (~0.6 µs each to pickle and unpickle here)


def popularity_timeout(base_s: float, popularity: dict | None) -> float:
    """How long a popularity refresh may take: a few million ids are seconds of pickling, not a
    hang (under the batch timeout alone, each compute process was killed at every refresh)."""
    return base_s + POPULARITY_S * len(popularity or ())


def answer_timeout(base_s: float, items: list) -> float:
    """How long a call answering ``items`` may take before its compute process is taken for
    hung: ``compute_timeout_s``, ``TEXT_S`` a text to encode (a batch of 256 long texts is
    seconds of honest work; it was stopped as hung, then again on the standby) and ``QUERY_S``
    a user beyond the first 64 (one call may carry 64 batch requests of 256 users each, tens of
    thousands of lists: honest bulk traffic, not a hang)."""
    queries = [q for item in items for q in (getattr(item, "batch", None) or [item])]
    return base_s + TEXT_S * sum(bool(q.text) for q in queries) + QUERY_S * max(0, len(queries) - 64)
