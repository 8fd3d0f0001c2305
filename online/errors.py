"""What can stop a request, in the service's own words, and the one place that says what each
becomes in HTTP.

The domain raises these and knows nothing of HTTP; ``http_reply`` turns any of them into a
reply (status, JSON body ``{"detail": ...}``, headers), for the hot routes (through the
guard), FastAPI's exception handlers and the web page alike. They cross the compute
process's pipe as they are (a message is their only argument, so they pickle). Anything else
raised while answering is a bug: the guard's 500 with a request id (``guard``).

| error | HTTP |
|---|---|
| ``Overloaded``: the request queue is full | 503, ``Retry-After``, one fixed detail |
| ``Unavailable``: no version loaded, the event store down, a compute process died | 503 |
| ``Disabled``: the server is set up without what the request needs (events off) | 501 (no retry helps) |
| ``NotFound``: an item the version does not hold | 404 |
| ``Unprocessable``: beyond a limit, an unknown event type, nothing to rank by | 422 |
| ``UserError`` (``shared.errors``): anything else the request got wrong | 400 |
| ``ClientGone``: the client left before its answer was ready | 499, no body (nobody reads it) |
"""

from __future__ import annotations

from pydantic_core import to_json

from groundrec.shared.errors import UserError

Reply = tuple[int, bytes, list[tuple[bytes, bytes]]]
OVERLOADED_DETAIL = "overloaded, retry later: the request queue is full"
_OVERLOADED_BODY = to_json({"detail": OVERLOADED_DETAIL})


class Unavailable(Exception):
    """What the answer needs is not there now (no version loaded, the event store cannot be
    reached, the compute process died); the message says which."""


class Overloaded(Unavailable):
    """The request queue is full: retry later. (The message, for logs, says how full; every
    client is told the same.)"""


class Disabled(UserError):
    """The server is set up without what the request needs (the event store: events off); the
    message says which setting. Not the request's mistake, and no retry will help."""


class NotFound(UserError):
    """The request names something the version does not hold."""


class Unprocessable(UserError):
    """The request is well formed but will not be answered as asked: it exceeds a limit, names
    an event type the server does not know, or gives nothing to rank by."""


class ClientGone(Exception):
    """The client went away before its answer was ready; the work was dropped."""


ERRORS = (Unavailable, UserError, ClientGone)  # everything ``http_reply`` answers


def http_status(e: BaseException) -> int:
    """The status ``e`` is answered with (``ERRORS`` only)."""
    if isinstance(e, Unavailable):
        return 503
    if isinstance(e, Disabled):
        return 501
    if isinstance(e, NotFound):
        return 404
    if isinstance(e, Unprocessable):
        return 422
    if isinstance(e, UserError):
        return 400
    if isinstance(e, ClientGone):
        return 499
    raise TypeError(f"{type(e).__name__} is not an answerable error: it is a bug (the guard's 500)")


def http_reply(e: BaseException, retry_after_s: int = 1) -> Reply:
    """The one mapping of an error to HTTP: status, JSON body, headers."""
    if isinstance(e, Overloaded):
        return 503, _OVERLOADED_BODY, [(b"retry-after", str(retry_after_s).encode())]
    status = http_status(e)
    if status == 499:
        return 499, b"", []
    return status, to_json({"detail": str(e)}), []
