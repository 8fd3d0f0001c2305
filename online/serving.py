"""The serving state of one loaded version and what can be asked of it: recommend, search,
item. The HTTP service and ``LocalClient`` both call these methods, so the limits, the
error statuses and the answers are the same in-process and over HTTP.

Every refusal is a ``ServingError`` carrying the HTTP status it maps to and a message that
names the problem; the service turns it into a response in one handler.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from groundrec.online.config import ServeConfig
from groundrec.online.retrieve import NoHistory, Retriever
from groundrec.online.schemas import BatchOut, RecommendRequest, ResultOut, SearchRequest, UserQuery, result_out


class ServingError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


@contextmanager
def _as_serving_errors():
    try:
        yield
    except NoHistory as e:
        raise ServingError(422, str(e)) from None
    except ValueError as e:  # unknown filter column, no encoder for text, bad weights...
        raise ServingError(400, str(e)) from None


@dataclass(frozen=True)
class Serving:
    version_id: str
    retriever: Retriever
    limits: ServeConfig

    def _check(self, q: UserQuery) -> None:
        lim = self.limits
        if q.k > lim.max_k:
            raise ServingError(422, f"k={q.k} exceeds max_k={lim.max_k}")
        if len(q.history) > lim.max_history:
            raise ServingError(422, f"history has {len(q.history)} items, more than max_history={lim.max_history}")
        if q.text and len(q.text) > lim.max_text_chars:
            raise ServingError(422, f"text has {len(q.text)} characters, more than max_text_chars={lim.max_text_chars}")

    def _one(self, q: UserQuery) -> ResultOut:
        self._check(q)
        with _as_serving_errors():
            return result_out(self.retriever.recommend(q.to_query()), self.version_id)

    def recommend(self, body: RecommendRequest) -> ResultOut | BatchOut:
        """One user, or every user of ``body.batch`` in one batched search."""
        if body.batch is None:
            return self._one(body)
        if len(body.batch) > self.limits.max_batch:
            raise ServingError(422, f"batch has {len(body.batch)} users, more than max_batch={self.limits.max_batch}")
        for q in body.batch:
            self._check(q)
        with _as_serving_errors():
            results = self.retriever.recommend_batch([q.to_query() for q in body.batch])
        return BatchOut(results=[result_out(r, self.version_id) for r in results], version=self.version_id)

    def search(self, body: SearchRequest) -> ResultOut:
        return self._one(UserQuery(text=body.text, k=body.k, filters=body.filters, with_fields=body.with_fields))

    def item(self, item_id: str) -> dict:
        v = self.retriever.v
        row = v.row_of.get(item_id)
        if row is None:
            raise ServingError(404, f"no item {item_id!r} in version {self.version_id}")
        return {"version": self.version_id, "item": v.items.slice(row, 1).to_pylist()[0]}
