"""The online tier's commands: ``serve``, ``loadtest``, ``events export|prune`` and ``online report``.
Torch-free."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from groundrec.shared.cli_errors import USER_ERRORS, fail
from groundrec.shared.errors import UserError

online_root = typer.Typer()


@online_root.command()
def serve(
    artifacts: str = typer.Option(..., help="Artifacts directory (the offline job's --out), or an fsspec URI (s3://...)."),
    host: Optional[str] = typer.Option(None, help="Interface to bind (default 127.0.0.1, loopback)."),
    port: Optional[int] = typer.Option(None, help="TCP port (default 8000)."),
    workers: Optional[int] = typer.Option(None, help="Server processes (default 1); each loads the version and hot-reloads on its own."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with ServeConfig fields (limits, reload...)."),
    interactions: Optional[Path] = typer.Option(None, help="Interactions table: item popularity for the prior and fallback."),
    interactions_item_column: Optional[str] = typer.Option(None, help="Item id column of --interactions (default item_id)."),
    encoder_variant: Optional[str] = typer.Option(None, help="fp32 | int8 ONNX encoder for text queries and live items' texts."),
    compute: Optional[str] = typer.Option(None, help="Where retrieval runs: process (default; a child process per "
                                          "server holds the version) | thread (in the server process)."),
    report: Optional[Path] = typer.Option(None, help="An evaluation report folder (groundrec eval --out) for the "
                                          "web page's version view."),
    events: Optional[str] = typer.Option(None, help="The event store: sqlite:///path/events.db, redis://host:port/0, "
                                         "or none (default: auto, ARTIFACTS/events/events.db for a local folder)."),
):
    """Serve recommendations over HTTP from the CURRENT version, reloading when it changes."""
    try:
        import yaml

        from groundrec.online.config import ServeConfig

        try:
            data = (yaml.safe_load(config.read_text()) if config else None) or {}
        except yaml.YAMLError as e:
            raise UserError(f"config file {config} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise UserError(f"config file {config} must hold a mapping at the top level")
        data["artifacts"] = str(artifacts)
        # Flags override the YAML only when given: a YAML's host/port/workers stand otherwise.
        data.update({k: v for k, v in (("host", host), ("port", port), ("workers", workers)) if v is not None})
        if interactions:
            data["interactions"] = str(interactions)
        if interactions_item_column:
            data["interactions_item_column"] = interactions_item_column
        if encoder_variant:
            data["encoder_variant"] = encoder_variant
        if compute:
            data["compute"] = compute
        if events:
            data["events"] = events
        if report:
            data["report"] = str(report)
        cfg = ServeConfig.model_validate(data)
        from groundrec.online.guard import api_keys

        api_keys(cfg)  # refused here in one line, not in every worker's factory
        if cfg.interactions is not None:  # named at once, not as a traceback from the server
            from groundrec.online.holder import load_popularity

            load_popularity(cfg)
        from groundrec.online.service import serve as run_server
    except USER_ERRORS as e:
        fail(e)
    run_server(cfg)


@online_root.command()
def loadtest(
    url: str = typer.Option("http://127.0.0.1:8000", help="A running service; loopback addresses only."),
    rate: float = typer.Option(50.0, help="Requests started per second (open loop)."),
    duration: float = typer.Option(10.0, help="Seconds to send for."),
    concurrency: int = typer.Option(64, help="Most requests in flight; beyond it requests are dropped and counted."),
    histories: Path = typer.Option(..., help="Interactions table (user_id, item_id, timestamp) or JSONL of {\"history\": [...]}."),
    search_share: float = typer.Option(0.2, min=0, max=1, help="Share of /search requests; the rest are /recommend."),
    k: int = typer.Option(10, help="Results per request."),
    max_requests: int = typer.Option(1_000_000, help="Hard cap on requests sent."),
    events_per_recommend: float = typer.Option(0.0, min=0, help="Above 0: a shop's traffic instead of histories in "
                                               "requests: single events (POST /events) and recommendations by "
                                               "user_id, this many events per recommendation (e.g. 5)."),
    json_out: Optional[Path] = typer.Option(None, help="Also write the figures as JSON here."),
    api_key_env: str = typer.Option("GROUNDREC_API_KEY", help="Environment variable holding the API key to send "
                                    "(X-API-Key), for a server run with keys; unset: none sent."),
    seed: int = typer.Option(0, help="Seed of the requests' draws (histories, texts, users)."),
    history_len: int = typer.Option(50, min=1, help="The latest items of each history a /recommend sends (the "
                                    "server takes up to its max_history, 500 by default)."),
):
    """Open-loop load test: throughput, errors by status, latency p50/p90/p99/max (each request
    timed from when it was due at the rate)."""
    import asyncio
    import os

    from groundrec.online.loadtest import format_report, load_histories, run_load

    try:
        hist = load_histories(histories, max_len=history_len)
        report = asyncio.run(run_load(url, rate, duration, concurrency, hist, search_share, k,
                                      max_requests=max_requests, events_per_recommend=events_per_recommend,
                                      seed=seed, api_key=os.environ.get(api_key_env) or None))
    except USER_ERRORS as e:
        fail(e)
    typer.echo(format_report(report))
    if json_out:
        json_out.write_text(report.to_json())




events_app = typer.Typer(help="The event log: export it as interactions for the nightly job.")


def _since(text: Optional[str], option: str = "--since") -> Optional[float]:
    """Seconds since the epoch, from a number or an ISO date/time (UTC when it has no zone); a
    number past tomorrow is refused (milliseconds: ``prune --before`` would erase every event)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is not None:
        import time

        if not value < time.time() + 86_400:
            raise typer.BadParameter(f"{option} {text!r} is past tomorrow: give seconds since the epoch (not "
                                     f"milliseconds) or an ISO date such as 2026-11-30")
        return value
    from datetime import datetime, timezone

    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{option} {text!r}: give seconds since the epoch or an ISO date such as 2026-11-30")
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


@events_app.command("export")
def events_export(
    events: str = typer.Option(..., help="The event store: sqlite:///path/events.db or redis://host:port/0."),
    out: Path = typer.Option(..., help="Folder for the Parquet files, one day=YYYY-MM-DD folder per day (UTC)."),
    since: Optional[str] = typer.Option(None, help="Only events at or after this (ISO date/time, or epoch seconds)."),
):
    """Write the events as interactions (user_id, item_id, timestamp, type, weight, event_id) that
    `groundrec offline run --interactions OUT` and `groundrec eval` read. A day written again holds
    what the archive and the store hold of it, less erased users: re-running an export is safe, and
    an archive never loses what a prune or a restored store no longer holds."""
    import json

    from groundrec.shared.events import StoreUnavailable, open_existing
    from groundrec.shared.events.export import export

    try:
        store = open_existing(events)
        try:
            report = export(store, out, _since(since))
        finally:
            store.close()
    except (*USER_ERRORS, StoreUnavailable) as e:
        fail(e)
    typer.echo(json.dumps(report))


@events_app.command("prune")
def events_prune(
    events: str = typer.Option(..., help="The event store: sqlite:///path/events.db or redis://host:port/0."),
    keep_days: Optional[float] = typer.Option(None, min=0, help="Erase events older than this many days."),
    before: Optional[str] = typer.Option(None, help="Erase events before this (ISO date/time, or epoch seconds)."),
    impressions_keep_days: Optional[float] = typer.Option(None, min=0, help="Erase impressions (the lists shown) "
                                                          "older than this many days; alone or with the events' "
                                                          "cut-off."),
):
    """Retention: erase old events and impressions from the store (export the events first if you
    keep an archive)."""
    import json
    import time

    from groundrec.shared.events import StoreUnavailable, open_existing

    if keep_days is not None and before is not None:
        fail(ValueError("give one of --keep-days and --before, not both"))
    if keep_days is None and before is None and impressions_keep_days is None:
        fail(ValueError("give --keep-days or --before (events), and/or --impressions-keep-days (impressions)"))
    now = time.time()
    cutoff = now - keep_days * 86_400 if keep_days is not None else _since(before, "--before")
    shown_cutoff = None if impressions_keep_days is None else now - impressions_keep_days * 86_400
    try:
        store = open_existing(events)
        try:
            erased = store.prune(cutoff) if cutoff is not None else 0
            shown_erased = store.prune_impressions(shown_cutoff) if shown_cutoff is not None else None
            left = store.count()
        finally:
            store.close()
    except (*USER_ERRORS, StoreUnavailable) as e:
        fail(e)
    report = {"erased": erased, "left": left, "before": cutoff}
    if shown_cutoff is not None:
        report.update(impressions_erased=shown_erased, impressions_before=shown_cutoff)
    typer.echo(json.dumps(report))


@events_app.command("backup")
def events_backup(
    events: str = typer.Option(..., help="The SQLite event store: sqlite:///path/events.db."),
    out: Path = typer.Option(..., help="The backup file to write (a SQLite database; refused if it exists)."),
):
    """A consistent copy of a SQLite store while servers write to it: one read snapshot copied in
    one step (the sqlite3 shell's .backup restarts whenever a write lands and may never finish
    under load). Redis: BGSAVE, or copy the AOF directory."""
    import json
    import sqlite3
    import time

    from groundrec.shared.events import StoreUnavailable
    from groundrec.shared.events.sqlite import path_of

    if not events.lower().startswith("sqlite:"):
        fail(ValueError(f"--events {events!r}: backup copies a SQLite store; for Redis use BGSAVE "
                        "(redis-cli BGSAVE, then copy dump.rdb) or copy its AOF directory"))
    if out.exists():
        fail(ValueError(f"--out {out}: exists; give a new file (a backup is never written over)"))
    started = time.perf_counter()
    try:
        from groundrec.shared.events import open_existing

        open_existing(events).close()  # refuses a path with no store, migrates an old one
        source = sqlite3.connect(path_of(events))
        out.parent.mkdir(parents=True, exist_ok=True)
        target = sqlite3.connect(out)
        try:
            source.backup(target)  # every page at once, under one snapshot
        finally:
            target.close()
            source.close()
    except (*USER_ERRORS, StoreUnavailable, sqlite3.Error) as e:
        out.unlink(missing_ok=True)
        fail(e)
    typer.echo(json.dumps({"out": str(out), "bytes": out.stat().st_size,
                           "seconds": round(time.perf_counter() - started, 3)}))


online_app = typer.Typer(help="Online results: what the lists shown earned, per version and per arm.")


@online_app.command("report")
def online_report(
    events: str = typer.Option(..., help="The event store: sqlite:///path/events.db or redis://host:port/0."),
    out: Path = typer.Option(..., help="Folder for report.md, report.html, results.json and the plots."),
    since: Optional[str] = typer.Option(None, help="Only lists shown and events at or after this (ISO date/time, "
                                        "UTC without a zone, or epoch seconds); default: the whole log."),
    window_s: float = typer.Option(1800.0, help="An event without a recommendation id is credited to the latest "
                                   "list that showed its item to its user at most this many seconds before."),
    id_window_s: float = typer.Option(7 * 86_400.0, help="An event's recommendation id is looked up among the "
                                      "lists shown at most this many seconds before it."),
    purchase_type: Optional[list[str]] = typer.Option(None, help="Event type that counts as a conversion "
                                                      "(repeatable; default: purchase)."),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples over users for the intervals."),
    seed: int = typer.Option(0, help="Seed of the bootstrap and the randomisation tests."),
    workers: Optional[int] = typer.Option(None, help="Processes reading parts of the time range in parallel "
                                          "(the same results for any number; default: min(2, CPUs))."),
):
    """Attribute events to the lists shown (by recommendation id, else by the window) and report
    impressions, click-through, conversion, engaged position and coverage per version, arm and
    day with 95% intervals, the A/B tests between arms and the interleaving results."""
    import os

    from groundrec.shared.events import StoreUnavailable

    try:
        from groundrec.online.report.run import ReportConfig, run

        data = {"events": events, "out": out, "since": _since(since), "window_s": window_s,
                "id_window_s": id_window_s, "bootstrap": bootstrap, "seed": seed,
                "workers": workers if workers is not None else min(2, os.cpu_count() or 1)}
        if purchase_type:
            data["purchase_types"] = purchase_type
        results = run(ReportConfig.model_validate(data))
    except (*USER_ERRORS, StoreUnavailable) as e:
        fail(e)
    a = results["attribution"]
    typer.echo(f"{a['impressions']} impressions, {a['events']} events ({a['by_id']} by id, {a['by_window']} by "
               f"window, {a['unverified']} unverified); wrote {', '.join(results['files'])} in {out}")


def register(root: typer.Typer) -> None:
    """Entry point ``groundrec.commands:online``: mount this tier's commands on the root app."""
    root.add_typer(events_app, name="events")
    root.add_typer(online_app, name="online")
    root.registered_commands.extend(online_root.registered_commands)
