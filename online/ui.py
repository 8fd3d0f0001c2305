"""The web page: look at what groundrec recommends, and why. Server-rendered HTML (no build
step, no CDN, works offline); every list comes through the same request path as the API
(``Recommender.ask``: the same limits, batcher and errors), so the page shows exactly what
a client gets. Pages: ``/`` (popular items and a search box), ``/ui/search``, ``/ui/items/{id}``
(image, catalog fields, what the VLM said, the nearest items), ``/ui/user`` (a history built
by clicking, or a user id from the event store: the list with images, scores and the grounded
fields each item shares with the history), ``/ui/version`` (manifest, skipped items, the eval
report), ``/ui/online`` (the online report: ui_online.py). Thumbnails: ``GET /items/{id}/thumbnail``.
The lists of ``/``, ``/ui/search`` and ``/ui/user`` take a ``max_per`` (``?max_per=title:1``,
a field of their form; the server's default when absent, shown beside the field). The HTML
itself is ``ui_html.py``. Standard library only: nothing heavy is imported, and nothing here
runs on the hot routes."""

from __future__ import annotations

import hashlib
import json
import threading
from html import escape
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode

import pyarrow.parquet as pq
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from groundrec.online.errors import ERRORS, NotFound, Overloaded, Unavailable, Unprocessable, http_status
from groundrec.online.guard import KEY_COOKIE as KEY_COOKIE_NAME, usable_key
from groundrec.online.recommender import Recommender
from groundrec.online.schemas import RecommendRequest, SearchRequest, validation_line
from groundrec.online.ui_html import (PLACEHOLDER, grid, joined, max_per_field, page, parse_max_per, root, segment, split,
                                      thumb, why)
from groundrec.online.ui_online import mount_online
from groundrec.shared import artifact
from groundrec.shared.live_items import IMAGE, image_changed

KEY_COOKIE = KEY_COOKIE_NAME.decode()


class Thumbnails:
    """The serving version's thumbnails, read in the server process (not the compute process:
    images never cross its pipe), reopened when the version changes."""

    def __init__(self, cfg):
        self.cfg = cfg
        self._lock = threading.Lock()
        self._version: str | None = None
        self._rows: dict[str, int] = {}
        self._webp = None
        self._column = IMAGE  # the catalog's image column (the version's manifest says which)

    def get(self, version_id: str, item_id: str, live=None) -> bytes | None:
        """The item's thumbnail in the version; None without one, or when ``live`` (its state in
        the live catalog) has another image than the version's (the old photo is not its)."""
        with self._lock:
            if version_id != self._version:
                self._open(version_id)
            row = self._rows.get(item_id)
            if row is None or (live is not None and (live.deleted or image_changed(
                    live, {self._column: self._images.get(item_id)}, self._column))):
                return None
            return self._webp[row].as_py()

    def _open(self, version_id: str) -> None:
        path = artifact.VersionFiles(artifact.locate(self.cfg.artifacts, version_id, self.cfg.version_cache_dir))
        self._rows, self._webp, self._images = {}, None, {}
        if path.thumbnails.is_file():
            table = pq.read_table(path.thumbnails, memory_map=True)
            self._rows = {i: n for n, i in enumerate(table.column("item_id").to_pylist())}
            self._webp = table.column("webp")
            manifest = artifact.read_manifest(path.root)
            id_column, self._column = manifest.id_column, manifest.catalog_image_column
            if self._column in pq.read_schema(path.items).names:
                items = pq.read_table(path.items, columns=[id_column, self._column])
                self._images = dict(zip(items.column(id_column).to_pylist(), items.column(self._column).to_pylist()))
        self._version = version_id


def mount_ui(app: FastAPI, rec: Recommender, report_dir: Path | None = None) -> None:
    cfg = rec.cfg
    thumbs = Thumbnails(cfg)

    def version() -> str | None:
        current = rec.holder.current
        return current.version_id if current is not None else None

    async def guarded(render, request: Request) -> HTMLResponse:
        try:
            try:
                return await render()
            except ValidationError as e:  # a query value out of the API's range (k=0, a 300-character user id)
                raise Unprocessable(validation_line(e.errors())) from None
        except Overloaded:
            raise  # the one overload answer (JSON, Retry-After), as on every route
        except ERRORS as e:  # the page of the error the API answers
            shown = page("Not available", f'<p class="error" role="alert">{escape(str(e))}</p>', version(), root(request))
            shown.status_code = http_status(e)
            return shown

    async def history_row(item_id: str) -> dict | None:
        """A history item's catalog row; None for one deleted since (the list leaves it out too)."""
        try:
            return (await run_in_threadpool(rec.serving().item, item_id))["item"]
        except NotFound:
            return None

    mount_online(app, rec, page, guarded, version)  # /ui/online: the online report (online/ui_online.py)

    @app.get("/items/{item_id:path}/thumbnail", include_in_schema=True)
    def thumbnail(item_id: str, request: Request):
        """The item's WebP thumbnail (a placeholder image when it has none). Its URL stays the
        same when its picture changes (a new version, a live item's new image): a browser asks
        again each time (``no-cache``; a 304 when its copy is current) and only the browser keeps
        it (``private``: a shared cache would hand key-protected images to anyone)."""
        current = version()
        data = thumbs.get(current, item_id, rec.catalog.state.get(item_id)) if current else None
        kind = "image/webp" if data is not None else "image/svg+xml"
        data = PLACEHOLDER if data is None else data
        tag = f'"{hashlib.sha1(data).hexdigest()[:16]}"'
        headers = {"Cache-Control": "private, no-cache", "ETag": tag}
        if tag in request.headers.get("if-none-match", "") or request.headers.get("if-none-match") == "*":
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=kind, headers=headers)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def home(request: Request, h: str | None = None, max_per: str = ""):
        async def render():
            popular = await rec.ask(RecommendRequest(history=[], k=min(40, cfg.max_k), with_fields=True, order="popular",
                                                     max_per=parse_max_per(max_per)), request.receive)
            form = ('<form class="inline" action="ui/search" role="search"><label for="q">Search items</label>'
                    '<input id="q" name="q" type="search" required placeholder="e.g. black strap top">'
                    f'<input type="hidden" name="max_per" value="{escape(max_per)}">'
                    '<button type="submit">Search</button></form>')
            limit = f'<form class="inline" action="./">{max_per_field(max_per, cfg.max_per)}<button type="submit">Update</button></form>'
            return page("Items", form + "<h2>Most popular</h2>" + limit
                        + grid(popular["items"], split(h), "most popular items"), version(), root(request))
        return await guarded(render, request)

    @app.get("/ui/search", response_class=HTMLResponse, include_in_schema=False)
    async def search(request: Request, q: str = "", column: str = "", value: str = "", h: str | None = None,
                     max_per: str = ""):
        async def render():
            filters = {column: value} if column and value else None
            limit = parse_max_per(max_per)
            found = {"items": []}
            if q:  # an empty search is the form alone; POST /search's own request (no experiment arm)
                found = await rec.ask(SearchRequest(text=q, k=min(40, cfg.max_k), filters=filters, with_fields=True,
                                                    max_per=limit), request.receive)
            form = (f'<form class="inline" action="ui/search" role="search"><label for="q">Search items</label>'
                    f'<input id="q" name="q" type="search" value="{escape(q)}" required>'
                    f'<label for="column">filter column</label><input id="column" name="column" value="{escape(column)}">'
                    f'<label for="value">equals</label><input id="value" name="value" value="{escape(value)}">'
                    f'{max_per_field(max_per, cfg.max_per)}<button type="submit">Search</button></form>')
            return page(f"Search: {q}" if q else "Search", form + grid(found["items"], split(h), "search results",
                                                                          score=True), version(), root(request))
        return await guarded(render, request)

    @app.get("/ui/items/{item_id:path}", response_class=HTMLResponse, include_in_schema=False)
    async def item_page(request: Request, item_id: str):
        async def render():
            found = await run_in_threadpool(rec.serving().item, item_id)
            row = found["item"]
            near = await rec.ask(RecommendRequest(history=[item_id], k=min(12, cfg.max_k), with_fields=True,
                                                    strategy="mean"), request.receive)
            grounded = {k: v for k, v in row.items() if k.startswith("vlm_") and v not in (None, "")}
            catalog = {k: v for k, v in row.items() if not k.startswith("vlm_") and k not in
                       ("text", "image", "image_sha256", "parse_ok", "parse_error", "from_cache", "grounded",
                        "ground_error", artifact.WINDOW_INTERACTIONS, artifact.RECENT_INTERACTIONS)}
            source = ("grounded by the VLM" if row.get("grounded") else
                      f"published from catalog text (not grounded: {row.get('ground_error') or 'no image'})")
            title = str(row.get("title") or item_id)
            hidden = ('<p id="not-shown" role="status"><strong>Not shown in any answer now</strong> (hidden, or past '
                      'its available_until).</p>' if found.get("shown") is False else "")
            body = (hidden + f'<div style="display:flex;gap:1.5rem;flex-wrap:wrap">{thumb(item_id, title)}<div>'
                    f'<h2>What the VLM said</h2><p id="source">{escape(source)}</p>'
                    + ("<table aria-label='grounded fields'>" + "".join(
                        f"<tr><th scope='row'>{escape(k.removeprefix('vlm_'))}</th><td>{escape(str(v))}</td></tr>"
                        for k, v in grounded.items()) + "</table>" if grounded else "<p>No grounded text.</p>")
                    + f'<h2>Embedded text</h2><p>{escape(str(row.get("text") or ""))}</p>'
                    + "<h2>Catalog</h2><table aria-label='catalog fields'>" + "".join(
                        f"<tr><th scope='row'>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in catalog.items())
                    + f'</table><p><a href="ui/user?{urlencode({"h": joined([item_id])})}">Start a history with this item</a></p>'
                    f'</div></div><h2>Nearest items</h2>' + grid(near["items"], [item_id], "nearest items", score=True))
            return page(title, body, version(), root(request))
        return await guarded(render, request)

    @app.get("/ui/user", response_class=HTMLResponse, include_in_schema=False)
    async def user_page(request: Request, h: str | None = None, user_id: str = "", k: int = 12,
                        popularity_weight: float = 0.0, diversity: float = 0.0, column: str = "", value: str = "",
                        max_per: str = ""):
        async def render():
            history = split(h)
            body_args = {"history": history, "k": k, "popularity_weight": popularity_weight, "diversity": diversity,
                         "with_fields": True, "explain": True, "filters": {column: value} if column and value else None,
                         "max_per": parse_max_per(max_per), "order": "popular"}  # no history: the popular list
            if user_id:
                body_args["user_id"] = user_id
            asked = RecommendRequest(**body_args)
            answer = await rec.ask(asked, request.receive)
            stored = []  # with a user id, the history the answer used: the event store's, then the sent one
            if user_id and rec.events.url is not None:
                filled = await rec.events.with_histories(asked)
                stored = [e if isinstance(e, str) else e.item_id for e in filled.history[:len(filled.history) - len(history)]]
            shown = [(i, False) for i in stored] + [(i, True) for i in history]  # True: the page's own, removable
            seen = [(i, row, mine) for i, mine in shown[-20:] if i not in answer.get("unknown_ids", [])
                    if (row := await history_row(i)) is not None]
            whys = {i["item_id"]: why(i.get("fields") or {}, [row for _, row, _ in seen]) for i in answer["items"]}
            params = {"user_id": user_id, "k": k, "popularity_weight": f"{popularity_weight:g}", "diversity": f"{diversity:g}",
                      "column": column, "value": value, "max_per": max_per}
            kept = {key: v for key, v in params.items() if v not in ("", "0")}
            hist = ('<ul class="history" aria-label="history">' + "".join(
                f'<li><a href="ui/items/{segment(i)}">{thumb(i, str(row.get("title") or i))}</a>'
                + (f'<a href="ui/user?{urlencode({**kept, "h": joined([x for x in history if x != i])})}" '
                   f'aria-label="remove {escape(str(row.get("title") or i))}">remove</a>' if mine else "")
                + "</li>" for i, row, mine in seen)
                + "</ul>") if seen else "<p>No history yet: add items from any list, or give a user id.</p>"
            controls = (f'<form class="inline" action="ui/user"><input type="hidden" name="h" value="{escape(h or "")}">'
                        f'<label for="user_id">user id</label><input id="user_id" name="user_id" value="{escape(user_id)}">'
                        f'<label for="k">k</label><input id="k" name="k" type="number" min="1" value="{k}">'
                        f'<label for="pw">popularity weight</label><input id="pw" name="popularity_weight" type="number" '
                        f'step="0.05" min="0" value="{popularity_weight:g}">'
                        f'<label for="div">diversity</label><input id="div" name="diversity" type="number" step="0.1" '
                        f'min="0" max="1" value="{diversity:g}">'
                        f'<label for="column">filter column</label><input id="column" name="column" value="{escape(column)}">'
                        f'<label for="value">equals</label><input id="value" name="value" value="{escape(value)}">'
                        f'{max_per_field(max_per, cfg.max_per)}<button type="submit">Update</button></form>')
            note = (f'<p>Fallback: {escape(answer["fallback"])} (no usable history).</p>' if answer.get("fallback") else "")
            return page("A user's list", controls + "<h2>History</h2>" + hist + "<h2>Recommended</h2>" + note
                         + grid(answer["items"], history, "recommended items", whys, score=True, keep=kept), version(),
                         root(request))
        return await guarded(render, request)

    def read_version(current: str) -> tuple:
        """Whether the version has a sequence encoder, its manifest (no checksums: long and of no
        use to a reader here) and its first 200 skipped items (only those read)."""
        files = artifact.VersionFiles(artifact.locate(cfg.artifacts, current, cfg.version_cache_dir))
        manifest = json.loads(files.manifest.read_text())
        manifest.pop("files", None)
        first = next(pq.ParquetFile(files.skipped).iter_batches(200), None) if files.skipped.is_file() else None
        return files.has_sequence, manifest, first.to_pylist() if first is not None else []

    @app.get("/ui/version", response_class=HTMLResponse, include_in_schema=False)
    async def version_page(request: Request):
        async def render():
            current = version()
            if current is None:
                raise Unavailable("no version loaded yet")
            has_sequence, manifest, skipped = await run_in_threadpool(read_version, current)  # the disk: off the loop
            rows = "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in r.values()) + "</tr>" for r in skipped)
            head = "".join(f"<th scope='col'>{escape(c)}</th>" for c in (skipped[0] if skipped else {}))
            report = ('<p><a href="ui/report/report.html">The evaluation report</a></p>' if report_dir else
                      "<p>No evaluation report given (groundrec serve --report DIR).</p>")
            default = str(manifest.get("default_strategy") or artifact.DEFAULT_STRATEGY)
            profiles = (f"<p>Default strategy: <strong>{escape(default)}</strong>; sequence encoder: "
                        f"{'loaded' if has_sequence else 'none in this version'}.</p>")
            body = (profiles + report + f"<h2>Manifest</h2><pre>{escape(json.dumps(manifest, indent=2, default=str))}</pre>"
                    f"<h2>Skipped items ({len(skipped)} shown)</h2>"
                    + (f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>" if skipped else "<p>None.</p>"))
            return page("Version", body, current, root(request))
        return await guarded(render, request)

    @app.get("/ui/report/{name}", include_in_schema=False)
    def report_file(name: str):
        path = (report_dir / name) if report_dir else None
        if path is None or "/" in name or name.startswith(".") or not path.is_file():
            return Response(b'{"detail": "no such report file"}', status_code=404, media_type="application/json")
        return FileResponse(path)

    @app.get("/ui/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(request: Request, error: str = ""):
        return page("Sign in", (f'<p class="error" role="alert">{escape(error)}</p>' if error else "")
                     + '<form method="post" action="ui/login"><label for="key">API key</label> '
                       '<input id="key" name="key" type="password" autocomplete="current-password" required> '
                       '<button type="submit">Sign in</button></form>', root=root(request))

    @app.post("/ui/login", include_in_schema=False)
    async def login(request: Request):
        """The key goes into an HttpOnly cookie (never a URL); the guard checks it like the header.
        A form another site posts is refused (login CSRF: it would sign the browser in with the
        other site's key); the cookie is Secure when the page came over https (a proxy's
        X-Forwarded-Proto too: a client that lies only loses its own cookie)."""
        if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return Response(b'{"detail": "sign in from this server\'s own page"}', status_code=403,
                            media_type="application/json")
        key = (parse_qs((await request.body()).decode("utf-8", "replace")).get("key") or [""])[0]
        prefix = root(request)  # behind a proxy's prefix, the page's paths are under it
        if not key.strip() or not usable_key(key):  # no key holds it, and a cookie cannot carry it
            return RedirectResponse(f"{prefix}/ui/login?error=" + quote("that is not an API key (printable ASCII only)"),
                                    status_code=303)
        https = "https" in (request.url.scheme, request.headers.get("x-forwarded-proto", "").split(",")[0].strip())
        response = RedirectResponse(f"{prefix}/", status_code=303)
        response.set_cookie(KEY_COOKIE, key, httponly=True, samesite="strict", secure=https)
        return response

