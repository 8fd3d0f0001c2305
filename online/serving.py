"""The serving state of one loaded version and what can be asked of it: recommend, search,
item. The HTTP service and ``LocalClient`` both call these methods, so the limits, the
error statuses and the answers are the same in-process and over HTTP.

Every refusal is a ``ServingError`` carrying the HTTP status it maps to and a message that
names the problem; the service turns it into a response in one handler.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from groundrec.online.config import ServeConfig
from groundrec.online.retrieve import NoHistory, Retriever
from groundrec.online.version import load_version
from groundrec.shared import artifact
from groundrec.shared.errors import UserError
from groundrec.shared.onnx_encoder import OnnxTextEncoder
from groundrec.online.schemas import (BatchOut, RecommendRequest, ResultOut, SearchRequest, UserQuery, result_json,
                                      result_out, search_query)


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


class ServingError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail

    def __reduce__(self):  # crosses the pipe from the compute process intact
        return ServingError, (self.status, self.detail)


def check_request(limits: ServeConfig, body: UserQuery) -> None:
    """Refuse what exceeds the limits (422 naming the limit), before any work is queued."""
    if isinstance(body, RecommendRequest) and body.batch is not None:
        if len(body.batch) > limits.max_batch:
            raise ServingError(422, f"batch has {len(body.batch)} users, more than max_batch={limits.max_batch}")
        for q in body.batch:
            _check_one(limits, q)
    else:
        _check_one(limits, body)


def _check_one(limits: ServeConfig, q: UserQuery) -> None:
    if q.k > limits.max_k:
        raise ServingError(422, f"k={q.k} exceeds max_k={limits.max_k}")
    if q.text and len(q.text) > limits.max_text_chars:
        raise ServingError(422, f"text has {len(q.text)} characters, more than max_text_chars={limits.max_text_chars}")


def _serving_error(e: UserError) -> ServingError:
    if isinstance(e, NoHistory):
        return ServingError(422, str(e))
    return ServingError(400, str(e))  # unknown filter column, no encoder for text, bad weights...


@contextmanager
def _as_serving_errors():
    """The request's own problems (``UserError``) become 4xx; anything else is a bug and
    propagates to the guard's 500."""
    try:
        yield
    except UserError as e:
        raise _serving_error(e) from None


@dataclass(frozen=True)
class Serving:
    """A version served in this process: the in-process ``Backend``, and what ``LocalClient``
    calls (``recommend``, ``search``: the limits checked once, as the service checks them)."""

    version_id: str
    retriever: Retriever
    limits: ServeConfig
    alive: ClassVar[bool] = True  # answered in this process (``compute.RemoteServing`` may die)
    threads: ClassVar[None] = None  # this process's pools: the service reports them itself

    def answer(self, items: list[UserQuery]) -> list[bytes | ServingError]:
        """JSON answers for checked requests gathered from many callers, in order: the
        single-user ones in one batched search, each batch request as its own. A request that
        cannot be answered gets its ServingError; the others are answered. The JSON is built
        here, in the batch worker, so the event loop only sends it."""
        out: list = [None] * len(items)
        singles = [n for n, q in enumerate(items) if not (isinstance(q, RecommendRequest) and q.batch is not None)]
        if singles:
            results = self.retriever.recommend_batch([items[n] for n in singles], errors="return")
            for n, r in zip(singles, results):
                out[n] = _serving_error(r) if isinstance(r, Exception) else result_json(r, self.version_id)
        for n, q in enumerate(items):
            if out[n] is None:
                try:
                    out[n] = self._batch(q).model_dump_json().encode()
                except ServingError as e:
                    out[n] = e
        return out

    def _batch(self, body: RecommendRequest) -> BatchOut:
        with _as_serving_errors():
            results = self.retriever.recommend_batch(body.batch)
        return BatchOut(results=[result_out(r, self.version_id) for r in results], version=self.version_id)

    def recommend(self, body: RecommendRequest | UserQuery) -> ResultOut | BatchOut:
        """One user, or every user of ``body.batch`` in one batched search."""
        check_request(self.limits, body)
        if isinstance(body, RecommendRequest) and body.batch is not None:
            return self._batch(body)
        with _as_serving_errors():
            return result_out(self.retriever.recommend(body), self.version_id)

    def search(self, body: SearchRequest) -> ResultOut:
        return self.recommend(search_query(body))

    def close(self) -> None:
        """Nothing to release: the version goes with the last reference to it."""

    def set_popularity(self, popularity: dict[str, float] | None) -> None:
        self.retriever.set_popularity(popularity)

    def unknown(self, item_ids: list[str]) -> int:
        row_of = self.retriever.v.row_of
        return sum(i not in row_of for i in item_ids)

    def item(self, item_id: str) -> dict:
        v = self.retriever.v
        row = v.row_of.get(item_id)
        if row is None:
            raise ServingError(404, f"no item {item_id!r} in version {self.version_id}")
        item = v.items.slice(row, 1).to_pylist()[0]
        if "image_uri" in item:
            item["image_uri"] = public_uri(item["image_uri"])
        return {"version": self.version_id, "item": item}


def build_serving(cfg: ServeConfig, version_id: str, path, popularity: dict[str, float] | None = None) -> Serving:
    """Load version ``version_id`` from the local folder ``path`` (verified) with its encoder."""
    path = Path(path)
    version = load_version(path)
    files = artifact.VersionFiles(path)
    encoder = (OnnxTextEncoder(files.encoder_dir, cfg.encoder_variant, threads=cfg.compute_threads)
               if files.has_encoder else None)
    retriever = Retriever(version, popularity=popularity, encoder=encoder, fallback=cfg.fallback,
                          half_life_days=cfg.half_life_days, n_interests=cfg.n_interests,
                          max_history=cfg.max_history, max_per=cfg.max_per)
    return Serving(version_id, retriever, cfg)
