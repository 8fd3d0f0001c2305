"""``LocalClient``: the client API with no server, a version loaded in this process and
answered by the service's own serving methods (``groundrec.online.client`` re-exports it)."""

from __future__ import annotations

from pathlib import Path

from groundrec.online.client_bodies import GroundrecError, _batch_body, _recommend_body, _search_body
from groundrec.online.schemas import (BatchOut, RecommendRequest, ResultOut, SearchRequest, UserQuery, ordered_fields,
                                      similar_fields)


class LocalClient:
    """The client API with no server: a version loaded in this process, answered by the same
    serving methods as the HTTP service (same limits; refusals raise ``GroundrecError``)."""

    def __init__(self, artifacts: str | Path, encoder_variant: str = "fp32", **serve_options):
        from groundrec.online.config import ServeConfig
        from groundrec.online.holder import VersionHolder

        holder = VersionHolder(ServeConfig(artifacts=str(artifacts), encoder_variant=encoder_variant,
                                           **{**serve_options, "compute": "thread"}))  # in this process
        if not holder.check():
            raise FileNotFoundError(f"no loadable version in {artifacts}: {holder.rejected or 'nothing published'}")
        self._serving = holder.current

    def _call(self, method, *args):
        from groundrec.online.errors import ERRORS, http_status

        try:
            return method(*args)
        except ERRORS as e:  # the status the service would answer, the same message
            raise GroundrecError(http_status(e), str(e)) from None

    def recommend(self, history=(), k: int | None = None, **options) -> ResultOut:
        return self._call(self._serving.recommend, _no_user_id(RecommendRequest(**_recommend_body(history, k, **options))))

    def recommend_batch(self, users: list[dict | UserQuery], k: int | None = None) -> BatchOut:
        return self._call(self._serving.recommend, _no_user_id(RecommendRequest(**_batch_body(users, k))))

    def search(self, text: str, k: int = 10, **options) -> ResultOut:
        return self._call(self._serving.search, SearchRequest(**_search_body(text, k, **options)))

    def item(self, item_id: str, full: bool = False) -> dict:
        """As GET /items/{id} answers: the same JSON values (``answers.item_json``: NaN as None,
        dates as ISO text, bytes as base64), not the catalog's raw ones."""
        from pydantic_core import from_json

        from groundrec.online.answers import item_json

        answer = from_json(item_json(self._call(self._serving.item, item_id)))
        return answer if full else answer["item"]

    def similar(self, item_id: str, k: int = 10, filters: dict | None = None) -> ResultOut:
        """Items like ``item_id``, as GET /items/{id}/similar answers (a bad k is a 422 before
        the id is looked up, as there)."""
        if k < 1:
            raise GroundrecError(422, f"k must be at least 1, not {k}")
        if self._serving.unknown([item_id]):
            raise GroundrecError(404, f"no item {item_id!r} in the serving version")
        return self._list(similar_fields(item_id, k, filters))

    def popular(self, k: int = 10, filters: dict | None = None) -> ResultOut:
        """The most popular items, as GET /popular answers (the popularity of ``interactions``)."""
        return self._list(ordered_fields("popular", k, filters))

    def latest(self, k: int = 10, filters: dict | None = None) -> ResultOut:
        """The items that appeared last, as GET /latest answers."""
        return self._list(ordered_fields("latest", k, filters))

    def _list(self, fields: dict) -> ResultOut:
        try:
            body = RecommendRequest(**fields)
        except ValueError as e:  # a bad k or filter: what the service answers 422
            raise GroundrecError(422, str(e)) from None
        return self._call(self._serving.recommend, body)

    def close(self) -> None:
        """Nothing to release (the version is memory-mapped in this process); for ``with``."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _no_user_id(body: RecommendRequest) -> RecommendRequest:
    """``LocalClient`` has no event store to read a user's history from: a user_id is refused
    (501, as a service with events off answers it), never silently ignored."""
    if any(q.user_id is not None for q in (body.batch or [body])):
        raise GroundrecError(501, "LocalClient has no event store: send the history itself, or use Client against "
                                  "a server with events on")
    return body
