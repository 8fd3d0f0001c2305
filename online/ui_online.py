"""The web page's "online" view, ``/ui/online``: the online report (``groundrec online report``,
``groundrec.online.report``) run over the server's own event store for the last ``days`` days
(default 7), in FastAPI's thread pool, never on the event loop. It shows what the report's
files show: per version and per arm impressions, clicks, conversions and the rates with their
intervals, the A/B tests between arms, the interleaving results, the days, the notes, and the
plots inline (data: URIs) when matplotlib is installed. The report is computed on each visit
(its files go to a temporary folder, removed after): on a large store it takes as long as the
command does, so one is computed at a time (``REPORTING``): a visit meanwhile gets a 503 (else
a read key's visits in parallel took every thread of the pool the other routes share). The
report is imported on the first visit, not with the server."""

from __future__ import annotations

import base64
import json
import tempfile
import threading
import time
from html import escape
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from groundrec.online.errors import Disabled, Unavailable
from groundrec.online.ui_html import root
from groundrec.shared.events import StoreUnavailable


REPORTING = threading.Lock()  # held while a report is computed (one at a time in this process)


def online_report(events_url: str, days: float, flush=None) -> tuple[dict, dict[str, str]]:
    """The report's results (as in ``results.json``) over the last ``days`` days of the store
    at ``events_url``, and its plots as data: URIs by file name. ``flush`` (the impression
    log's) first writes the lists answered so far. ``Unavailable`` while another is computed."""
    if not REPORTING.acquire(blocking=False):
        raise Unavailable("another visit's online report is being computed; try again when it is done")
    try:
        return _report(events_url, days, flush)
    finally:
        REPORTING.release()


def _report(events_url: str, days: float, flush=None) -> tuple[dict, dict[str, str]]:
    from groundrec.online.report.run import ReportConfig, run  # numpy and the statistics: on first visit

    if flush is not None:
        flush()
    with tempfile.TemporaryDirectory(prefix="groundrec-online-") as tmp:
        out = Path(tmp)
        try:
            run(ReportConfig(events=events_url, out=out, since=time.time() - days * 86_400))
        except (ValidationError, StoreUnavailable) as e:
            raise Unavailable(f"the online report cannot read the event store: {e}") from None
        results = json.loads((out / "results.json").read_text())
        plots = {name: "data:image/png;base64," + base64.b64encode((out / name).read_bytes()).decode()
                 for name in results["plots"]}
    return results, plots


def render(results: dict, plots: dict[str, str], days: float) -> str:
    """The page's body: a form for the period, then the report's sections and plots."""
    from groundrec.online.report import report as report_files
    form = ('<form class="inline" action="ui/online"><label for="days">days</label>'
            f'<input id="days" name="days" type="number" min="0.01" step="any" value="{days:g}">'
            '<button type="submit">Update</button></form>')
    body = [form, f'<p id="period">The lists shown and the events of the last {days:g} days, attributed as '
                  '<code>groundrec online report</code> does.</p>']
    for title, paragraphs, table in report_files._sections(results):
        body.append(f"<h2>{escape(title)}</h2>")
        body += [f"<p>{escape(p)}</p>" for p in paragraphs]
        if table:
            header, rows = table
            body.append(f'<table aria-label="{escape(title)}"><thead><tr>'
                        + "".join(f'<th scope="col">{escape(h)}</th>' for h in header) + "</tr></thead><tbody>"
                        + "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
                        + "</tbody></table>")
    if plots:
        body.append("<h2>Plots</h2>")
        body += [f'<p><img class="plot" src="{uri}" alt="{escape(name)}" style="max-width:100%"></p>'
                 for name, uri in plots.items()]
    return "".join(body)


def mount_online(app: FastAPI, rec, page, guarded, version) -> None:
    """``/ui/online`` on ``app``; ``page``, ``guarded`` and ``version`` are the web page's own
    (``groundrec.online.ui``): its layout, its error pages and the serving version."""

    @app.get("/ui/online", response_class=HTMLResponse, include_in_schema=False)
    async def online_page(request: Request, days: float = Query(7.0, gt=0, le=3660,
                                                                description="the period, in days back from now")):
        async def content():
            url = rec.events.url
            if url is None:
                raise Disabled(f"no online report without an event store: {rec.events.reason}")
            flush = rec.impressions.flush if rec.impressions is not None else None
            results, plots = await run_in_threadpool(online_report, url, days, flush)
            return page(f"Online: the last {days:g} day{'' if days == 1 else 's'}", render(results, plots, days), version(),
                        root(request))
        return await guarded(content, request)
