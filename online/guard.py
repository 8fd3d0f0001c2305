"""Pure ASGI middleware in front of every route: API key, body size and read timeout, the
answers to the errors the hot routes raise (``errors.http_reply``), the last-resort 500, and
the request metrics. Pure ASGI (no ``BaseHTTPMiddleware``): nothing
is buffered or copied, and the body is counted as it is read, so a chunked body is stopped
at the limit and a body that stops half-way is given up after ``body_timeout_s``."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import time
import uuid
from urllib.parse import parse_qsl, unquote_to_bytes

from pydantic_core import to_json
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from groundrec.online.errors import ERRORS, Overloaded, Reply, http_reply
from groundrec.online.hotpath import route_path, send_reply
from groundrec.online.metrics import ServiceMetrics
from groundrec.shared.errors import UserError

log = logging.getLogger("groundrec.serve")
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/ui/login"})
KEY_COOKIE = b"groundrec_key"  # the web page's key (set by /ui/login, HttpOnly), accepted on GETs only
_FULL = Overloaded("the request queue is full")  # refused before the body is read: nothing raised it


def error_reply(e: BaseException, metrics: ServiceMetrics, retry_after_s: int) -> Reply:
    """``errors.http_reply``, with an overload counted once (``groundrec_shed_total``)."""
    if isinstance(e, Overloaded):
        metrics.shed.inc()
    return http_reply(e, retry_after_s)


def bug_reply(e: BaseException, path) -> bytes:
    """The one answer to a bug (a 500's JSON body): its traceback logged once, under a request
    id the body names. FastAPI's routes answer with it too (``service``'s handler), before the
    exception reaches the guard, which then logs nothing more."""
    request_id = getattr(e, "_request_id", None)
    if request_id is None:
        request_id = uuid.uuid4().hex[:16]
        log.error("unhandled error on %s (request id %s)", path, request_id, exc_info=e)
        try:
            e._request_id = request_id
        except AttributeError:  # an exception type with __slots__: logged again if it comes back
            pass
    return to_json({"detail": f"internal error ({type(e).__name__}); the server log has its traceback under "
                              f"request id {request_id}", "request_id": request_id})


class _Refused(HTTPException):
    """Raised while FastAPI reads the body, it passes through FastAPI's body parsing (which
    turns other exceptions into a 400) to its HTTPException handler: same JSON, same status."""


async def _json(send, status: int, detail: str, headers: list | None = None) -> None:
    await send_reply(send, status, to_json({"detail": detail}), headers or [])


def _key(scope, headers: dict) -> bytes:
    """The X-API-Key header, else (GET only: a cookie rides along on any request) the page's
    cookie."""
    key = headers.get(b"x-api-key")
    if key is not None or scope["method"] != "GET" or b"cookie" not in headers:
        return key or b""
    for part in headers[b"cookie"].split(b";"):  # leniently: another cookie on the host may be malformed
        name, _, value = part.strip().partition(b"=")
        if name == KEY_COOKIE:
            return _unquoted(value.decode("latin-1")).encode()
    return b""


def _unquoted(value: str) -> str:
    """A cookie value as ``http.cookies`` quoted it (``"..."`` with backslash and octal
    escapes: a key holding ``;``, ``,``, a quote or a space), read back as it was set."""
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    return re.sub(r'\\([0-3][0-7]{2}|.)', lambda m: chr(int(m[1], 8)) if len(m[1]) == 3 else m[1], value[1:-1])


def _utf8_path(scope) -> bool:
    """Whether the path as sent (``raw_path``, percent-escapes undone) is UTF-8."""
    raw = scope.get("raw_path")
    try:
        unquote_to_bytes(raw if raw is not None else scope["path"].encode()).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def is_write(method: str, path: str) -> bool:
    """Requests that change stored data: posting events, erasing a user, changing the live catalog."""
    return ((method == "POST" and path in ("/events", "/items")) or (method == "DELETE" and path.startswith("/users/"))
            or (method in ("PUT", "PATCH", "DELETE") and path.startswith("/items/")))


def is_private(scope, path: str) -> bool:
    """Reads a read-only key may not make: the web page's view of a user by id
    (``/ui/user?user_id=...``) lists that user's stored history, which no API route shows. A
    list for a ``user_id`` leaves that user's stored items out, so the read key can still infer
    them by asking (docs/operations.md, "Keys"): it belongs on a storefront's server."""
    return path == "/ui/user" and any(
        name == "user_id" and value for name, value in parse_qsl(scope.get("query_string", b"").decode("latin-1")))


def usable_key(key: str) -> bool:
    """Whether a key can travel as a header, the page's cookie and the client's: printable ASCII."""
    return key.isascii() and key.isprintable()


def api_keys(cfg) -> tuple[str | None, str | None]:
    """The API key and the read-only key from the environment variables the serve config names,
    checked before anything starts: a read key alone leaves no way to write, and a key is sent
    in a header, so it must be latin-1 text."""
    api_key, read_key = os.environ.get(cfg.api_key_env) or None, os.environ.get(cfg.read_api_key_env) or None
    if read_key and not api_key:
        raise UserError(f"{cfg.read_api_key_env} is set but {cfg.api_key_env} is not: set the API key too (writes "
                        "need it), or unset the read-only key")
    for name, key in ((cfg.api_key_env, api_key), (cfg.read_api_key_env, read_key)):
        if not usable_key(key or ""):
            raise UserError(f"{name} holds a character other than printable ASCII (a header, a cookie and the "
                            "client carry no other): use ASCII letters and digits")
    return api_key, read_key


class Guard:
    def __init__(self, app, metrics: ServiceMetrics, api_key: str | None, max_body_bytes: int,
                 body_timeout_s: float, overloaded=lambda: False, shed_paths=frozenset(), retry_after_s: int = 1,
                 read_key: str | None = None, named_paths=frozenset()):
        self.app, self.metrics = app, metrics
        # The keys as bytes, compared in constant time. The read-only key opens every route but
        # the writes; the API key opens all of them. A read key alone leaves no way to write.
        self.api_key = api_key.encode("latin-1") if api_key else None
        self.read_key = read_key.encode("latin-1") if read_key else None
        self.max_body_bytes, self.body_timeout_s = max_body_bytes, body_timeout_s
        # Shedding here, before the body is read and validated, keeps a refusal cheap.
        self.overloaded, self.shed_paths, self.retry_after_s = overloaded, shed_paths, retry_after_s
        self.named_paths = shed_paths | named_paths  # paths no FastAPI route names (the hot routes): metric labels
        self._series: dict[tuple[str, int], tuple] = {}  # (endpoint, status) -> its two metric series

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        path = route_path(scope)  # what the router will run: every decision below is on it
        if not (self.api_key or self.read_key) and path in self.shed_paths and self.overloaded():
            return await self._shed(scope, send, started)  # the cheapest answer: nothing else is built
        status = {"code": 500, "sent": False}
        headers = dict(scope.get("headers") or [])

        async def sending(message):
            if message["type"] == "http.response.start":
                status["code"], status["sent"] = message["status"], True
            await send(message)

        body = {"bytes": 0, "done": False, "by": None}

        async def receiving():
            if body["done"]:  # after the body only a disconnect can come: no deadline
                return await receive()
            if body["by"] is None:  # one deadline for the whole body, not one per chunk (a slow drip)
                body["by"] = time.monotonic() + self.body_timeout_s
            try:
                message = await asyncio.wait_for(receive(), max(0.0, body["by"] - time.monotonic()))
            except asyncio.TimeoutError:
                raise _Refused(408, f"request body not received within {self.body_timeout_s:g} s") from None
            if message["type"] == "http.request":
                body["bytes"] += len(message.get("body", b""))
                body["done"] = not message.get("more_body", False)
                if body["bytes"] > self.max_body_bytes:
                    raise _Refused(413, f"body larger than max_body_bytes={self.max_body_bytes}")
            return message

        try:
            if path not in OPEN_PATHS and not self._allowed(scope, path, _key(scope, headers)):
                if scope["method"] == "GET" and (path == "/" or path.startswith("/ui/")):
                    login = (scope.get("root_path") or "").encode("latin-1") + b"/ui/login"  # the page signs in
                    return await send_reply(sending, 303, b"", [(b"location", login)])
                raise _Refused(401, "missing or wrong X-API-Key header" if not is_write(scope["method"], path)
                               else "missing or wrong X-API-Key header: writes need the API key, not the read-only key")
            if path in self.shed_paths and self.overloaded():
                return await self._shed(scope, send, started)
            if "\ufffd" in scope.get("path", "") and not _utf8_path(scope):
                raise _Refused(400, "the request path holds percent-escapes that are not UTF-8 (the server would read "
                                    "each as U+FFFD, so two ids would be one): escape ids as UTF-8")
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
                raise _Refused(413, f"body larger than max_body_bytes={self.max_body_bytes}")
            await self.app(scope, receiving, sending)
        except Overloaded as e:  # the queue filled while this request's body was read
            if not status["sent"]:
                return await self._shed(scope, send, started, e)
        except ERRORS as e:  # a hot route's refusal, or the request's own mistake
            if not status["sent"]:
                await send_reply(sending, *http_reply(e))
        except ClientDisconnect:  # a FastAPI route's body cut off: nobody to answer, no error of ours
            status["code"] = 499
        except _Refused as e:
            if not status["sent"]:
                await _json(sending, e.status_code, e.detail)
        except Exception as e:  # a bug: never let it take the process down, and make it findable
            body = bug_reply(e, scope.get("path"))
            if not status["sent"]:
                await send_reply(sending, 500, body)
        self._count(scope, status, started)

    def _allowed(self, scope, path: str, key: bytes) -> bool:
        if self.api_key and hmac.compare_digest(key, self.api_key):
            return True
        if is_write(scope["method"], path) or is_private(scope, path):
            return not self.api_key and not self.read_key
        if self.read_key:
            return hmac.compare_digest(key, self.read_key)
        return not self.api_key

    async def _shed(self, scope, send, started: float, error: Overloaded = _FULL) -> None:
        """503 with Retry-After, before the body is read when the queue is full already, after
        it when the batcher's ``enqueue`` refused it."""
        await send_reply(send, *error_reply(error, self.metrics, self.retry_after_s))
        self._count(scope, {"code": 503}, started)

    def _count(self, scope, status: dict, started: float) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or (scope["path"] if scope["path"] in self.named_paths else "unmatched")
        key = (endpoint, status["code"])
        series = self._series.get(key)
        if series is None:  # few keys: the routes (or "unmatched") x the statuses they answer
            series = self._series[key] = (self.metrics.requests.labels(endpoint, str(status["code"])),
                                          self.metrics.latency.labels(endpoint))
        series[0].inc()
        series[1].observe(time.perf_counter() - started)
