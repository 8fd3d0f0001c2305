"""The serving state of one loaded version and what can be asked of it: recommend, search,
item. The HTTP service and ``LocalClient`` both call these methods, so the limits, the
errors and the answers are the same in-process and over HTTP.

Every refusal is one of the domain errors of ``errors`` (the request's own mistakes are
``UserError``s), with a message that names the problem; ``errors.http_reply`` says what each
becomes in HTTP.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from groundrec.online.config import ServeConfig
from groundrec.online.errors import NotFound, Unprocessable
from groundrec.online.live_checks import check_changes
from groundrec.online.profiling import check_default_strategy, load_sequence
from groundrec.online.retrieve import NoHistory, Retriever
from groundrec.online.version import VersionError, load_version
from groundrec.shared import artifact
from groundrec.shared.errors import UserError
from groundrec.shared.onnx_encoder import OnnxTextEncoder, encoder_variants
from groundrec.online.schemas import (BatchOut, RecommendRequest, ResultOut, SearchRequest, UserQuery, result_json,
                                      result_out, search_query)

log = logging.getLogger("groundrec.serve")

# One user's answer as the batch worker gives it: its JSON, the ids of its items in order and the
# version that ranked them (a plain tuple: it crosses the compute process's pipe cheaply).
Shown = tuple[bytes, tuple[str, ...], str]

# An absolute local path (not the path part of a URI such as s3://bucket/key).
_LOCAL_PATH = re.compile(r"(?<![\w:/.~-])/[^/\s'\"(),;]+(?:/[^/\s'\"(),;]+)*/?")


def public_text(text: str) -> str:
    """``text`` for an open endpoint: each absolute local path cut to its last component
    (``/srv/build/art/versions/X`` -> ``.../X``); the logs keep the full text."""
    return _LOCAL_PATH.sub(lambda m: ".../" + m.group().rstrip("/").rsplit("/", 1)[-1], text)


def public_uri(uri):
    """A catalog image location as an open endpoint shows it: remote URIs as they are, a local
    path by its file name only."""
    if not isinstance(uri, str) or "://" in uri and not uri.startswith("file://"):
        return uri
    return uri.rstrip("/").rsplit("/", 1)[-1]


def checked(limits: ServeConfig, body: RecommendRequest | SearchRequest | UserQuery) -> RecommendRequest | UserQuery:
    """``body`` as the query a backend answers (a search is a text query), refused when it
    exceeds the limits (``Unprocessable`` naming the limit), before any work is queued. The
    one check of a request: the service makes it before queueing, ``Serving.recommend``
    (``LocalClient``) before answering; ``answer`` takes checked queries."""
    query = search_query(body) if isinstance(body, SearchRequest) else body
    check_request(limits, query)
    return query


def check_request(limits: ServeConfig, body: UserQuery) -> None:
    """Refuse what exceeds the limits."""
    if isinstance(body, RecommendRequest) and body.batch is not None:
        if len(body.batch) > limits.max_batch:
            raise Unprocessable(f"batch has {len(body.batch)} users, more than max_batch={limits.max_batch}")
        for q in body.batch:
            _check_one(limits, q)
    else:
        _check_one(limits, body)


def _check_one(limits: ServeConfig, q: UserQuery) -> None:
    if q.k > limits.max_k:
        raise Unprocessable(f"k={q.k} exceeds max_k={limits.max_k}")
    if q.text and len(q.text) > limits.max_text_chars:
        raise Unprocessable(f"text has {len(q.text)} characters, more than max_text_chars={limits.max_text_chars}")


def _own(e: UserError) -> UserError:
    """The retriever's ``NoHistory`` (fallback: error) is a request that cannot be answered as
    asked, like one beyond a limit; its other errors (an unknown filter column, no encoder for
    text, bad weights...) are the request's mistakes as they are."""
    return Unprocessable(str(e)) if isinstance(e, NoHistory) else e


@dataclass(frozen=True)
class Serving:
    """A version served in this process: the in-process ``Backend``, and what ``LocalClient``
    calls (``recommend``, ``search``: the limits checked once, as the service checks them)."""

    version_id: str
    retriever: Retriever
    limits: ServeConfig
    # Live items are applied between batches, never under one (``compute: thread`` answers in
    # the batch worker while the service applies them from its own threads).
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)
    alive: ClassVar[bool] = True  # answered in this process (``compute.RemoteServing`` may die)
    threads: ClassVar[None] = None  # this process's pools: the service reports them itself

    @property
    def default_strategy(self) -> str:
        return self.retriever.default_strategy

    @property
    def has_sequence(self) -> bool:
        return self.retriever.sequence is not None

    def answer(self, items: list[UserQuery]) -> list[Shown | bytes | UserError]:
        """JSON answers for checked requests gathered from many callers, in order: the
        single-user ones in one batched search, each batch request as its own. A request that
        cannot be answered gets its error; the others are answered. The JSON is built here, in
        the batch worker, so the event loop only sends it. A single-user answer comes as a
        ``Shown`` (its JSON, item ids and version: the impression log needs no parse); a batch
        request's as its JSON."""
        with self.lock:
            return self._answer(items)

    def _answer(self, items: list[UserQuery]) -> list[Shown | bytes | UserError]:
        out: list = [None] * len(items)
        singles = [n for n, q in enumerate(items) if not (isinstance(q, RecommendRequest) and q.batch is not None)]
        if singles:
            results = self.retriever.recommend_batch([items[n] for n in singles], errors="return")
            for n, r in zip(singles, results):
                out[n] = _own(r) if isinstance(r, Exception) else (
                    result_json(r, self.version_id), tuple(i.item_id for i in r.items), self.version_id)
        for n, q in enumerate(items):
            if out[n] is None:
                try:
                    out[n] = self._batch(q).model_dump_json().encode()
                except UserError as e:
                    out[n] = e
        return out

    def _batch(self, body: RecommendRequest) -> BatchOut:
        """Every entry answered, or the batch refused naming the first entry that cannot be
        (``batch[n]: ...``, its own error's status)."""
        results = self.retriever.recommend_batch(body.batch, errors="return")
        for n, r in enumerate(results):
            if isinstance(r, UserError):
                e = _own(r)
                refusal = type(e)(f"batch[{n}]: {e}")
                refusal.entry, refusal.reason = n, str(e)  # an experiment's batch renumbers it (recommender)
                raise refusal from None
        return BatchOut(results=[result_out(r, self.version_id) for r in results], version=self.version_id)

    def recommend(self, body: RecommendRequest | SearchRequest | UserQuery) -> ResultOut | BatchOut:
        """One user (or a text search), or every user of ``body.batch`` in one batched search."""
        query = checked(self.limits, body)
        if isinstance(query, RecommendRequest) and query.batch is not None:
            return self._batch(query)
        try:
            return result_out(self.retriever.recommend(query), self.version_id)
        except UserError as e:
            raise _own(e) from None

    def search(self, body: SearchRequest) -> ResultOut:
        return self.recommend(body)

    def close(self) -> None:
        """Nothing to release: the version goes with the last reference to it."""

    def set_popularity(self, popularity: dict[str, float] | None) -> None:
        with self.lock:  # never between a live apply's rows and their counts
            self.retriever.set_popularity(popularity)

    def unknown(self, item_ids: list[str]) -> int:
        """How many of these ids name no item (a deleted one included)."""
        row_of, live = self.retriever.v.row_of, self.retriever.live
        return sum(i not in row_of or (live is not None and i in live.deleted) for i in item_ids)

    def item(self, item_id: str) -> dict:
        """The item's row (a live item's latest), and whether answers may show it now."""
        with self.lock:
            v, live = self.retriever.v, self.retriever.live
            row = v.row_of.get(item_id)
            if row is None or (live is not None and item_id in live.deleted):
                raise NotFound(f"no item {item_id!r} in version {self.version_id}")
            item = v.items.slice(row, 1).to_pylist()[0]
            state = live.state(item_id, row) if live is not None else {}
        if "image_uri" in item:
            item["image_uri"] = public_uri(item["image_uri"])
        return {"version": self.version_id, "item": item, **state}

    def apply_live(self, arg) -> dict:
        """Apply live items (``online/live``): ``arg`` is (items, embeddings given or None); the
        embeddings computed here."""
        items, vectors = arg
        with self.lock:
            return self.retriever.apply_live(items, vectors)

    def live_texts(self, arg) -> dict[str, str]:
        """The texts applying live items would embed: ``arg`` as ``apply_live``'s."""
        items, vectors = arg
        with self.lock:
            return self.retriever.live_texts(items, vectors)

    def encode(self, texts: list[str]):
        """``texts`` embedded by the version's ONNX text encoder (part of a write group's live
        items, for the process that applies them)."""
        if self.retriever.encoder is None:
            raise Unprocessable(f"version {self.version_id} has no ONNX text encoder to embed live items")
        return self.retriever.encoder.encode(texts)

    def check_live(self, arg: tuple[list[tuple[str, str, dict]], bool]) -> None:
        """Refuse, before anything is stored, a change this version cannot take: an unknown
        column or a value of the wrong type (``Unprocessable`` naming it), and where ``arg``'s
        ``must_exist`` is set a patch or delete of an item that does not exist (``NotFound``).
        ``arg``: (changes, must_exist)."""
        changes, must_exist = arg
        with self.lock:
            check_changes(self.retriever, changes, must_exist)


def check_max_per(cfg: ServeConfig, version) -> None:
    """The server's and the experiment arms' default ``max_per`` name columns this version's
    items have: else the version is refused (``VersionError``, the last good one serves on),
    not every request blamed for the server's setting."""
    defaults = [("max_per", cfg.max_per)] + [(f"experiment arm {a.name!r}'s max_per", a.defaults.get("max_per"))
                                             for a in (cfg.experiment.arms if cfg.experiment else ())]
    for where, limits in defaults:
        missing = sorted(set(limits or {}) - set(version.items.column_names))
        if missing:
            raise VersionError(f"version {version.path.name}: the server's {where} names column(s) {missing} that its "
                               f"items do not have; columns: {', '.join(sorted(version.items.column_names)[:12])}")


def served_variant(wanted: str, encoder_dir: Path, version_id: str) -> str:
    """The text encoder's variant to load: the configured one, else fp32 with a warning where
    the version has no int8 graph (the job drops one whose cosine to fp32 is below
    ``export.int8_min_cosine``, or exports none with ``export.int8: false``): a version is not
    refused for a faster variant it does not have."""
    if wanted == "fp32" or wanted in encoder_variants(encoder_dir):
        return wanted
    log.warning("version %s has no %s text encoder (the job did not export one): serving fp32", version_id, wanted)
    return "fp32"


def build_serving(cfg: ServeConfig, version_id: str, path, popularity: dict[str, float] | None = None) -> Serving:
    """Load version ``version_id`` from the local folder ``path`` (verified) with its encoders
    (the text encoder; the sequence encoder where the version holds ``sequence/``)."""
    path = Path(path)
    version = load_version(path)
    check_default_strategy(version)
    check_max_per(cfg, version)
    files = artifact.VersionFiles(path)
    encoder = (OnnxTextEncoder(files.encoder_dir, served_variant(cfg.encoder_variant, files.encoder_dir, version_id),
                               threads=cfg.compute_threads)
               if files.has_encoder else None)
    retriever = Retriever(version, popularity=popularity, encoder=encoder, fallback=cfg.fallback,
                          half_life_days=cfg.half_life_days, n_interests=cfg.n_interests,
                          max_history=cfg.max_history, max_per=cfg.max_per,
                          sequence=load_sequence(files, version, cfg.compute_threads))
    return Serving(version_id, retriever, cfg)
