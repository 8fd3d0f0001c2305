"""The ``groundrec`` command. Offline commands import the heavy stack only when they run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from groundrec.shared import versions
from groundrec.shared.config import load_config

app = typer.Typer(help="groundrec: VLM-grounded multimodal recommender.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
offline_app = typer.Typer(help="The offline tier: ground, encode, index, publish.", no_args_is_help=True)
dev_app = typer.Typer(help="Developer helpers.", no_args_is_help=True)
versions_app = typer.Typer(help="Published artifact versions.", no_args_is_help=True)
app.add_typer(offline_app, name="offline")
app.add_typer(dev_app, name="dev")
app.add_typer(versions_app, name="versions")

console = Console(stderr=True)
USER_ERRORS = (ValueError, FileNotFoundError, RuntimeError, ValidationError)


def _fail(err: Exception) -> None:
    if isinstance(err, ValidationError):
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        message = "invalid configuration:\n" + "\n".join(lines)
    else:
        message = str(err)
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@offline_app.command("run")
def offline_run(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML job config (same schema as JobConfig)."),
    catalog: Optional[Path] = typer.Option(None, help="Catalog table: Parquet, CSV or JSONL."),
    images_root: Optional[Path] = typer.Option(None, help="Folder that relative image paths start from (default: the catalog's folder)."),
    out: Optional[Path] = typer.Option(None, help="Artifacts directory: versions/, CURRENT, cache/."),
    vlm: Optional[str] = typer.Option(None, help="VLM: hub id or local directory (default HuggingFaceTB/SmolVLM-256M-Instruct)."),
    encoder: Optional[str] = typer.Option(None, help="sentence-transformers model: name or local directory."),
    id_column: Optional[str] = typer.Option(None, help="Item id column (default item_id)."),
    image_column: Optional[str] = typer.Option(None, help="Image column (default image)."),
    text_columns: Optional[str] = typer.Option(None, help="Comma-separated catalog text columns (default title,description)."),
    prompt_style: Optional[str] = typer.Option(None, help="free | structured."),
    template: Optional[str] = typer.Option(None, help="Text to embed, e.g. '{title}. {vlm_text}'."),
    runner: Optional[str] = typer.Option(None, help="ray (default) | local (in-process, no Ray)."),
    ray_address: Optional[str] = typer.Option(None, help="Join a Ray cluster ('auto', ray://...); default: start Ray in-process."),
    vlm_batch_size: Optional[int] = typer.Option(None, help="Images per VLM batch."),
    vlm_concurrency: Optional[int] = typer.Option(None, help="VLM actors (hf) or parallel requests (openai)."),
    max_new_tokens: Optional[int] = typer.Option(None, help="VLM answer length limit."),
    encode_batch_size: Optional[int] = typer.Option(None, help="Texts per encoder batch."),
    index_kind: Optional[str] = typer.Option(None, help="auto | flat | ivf."),
    no_export: bool = typer.Option(False, "--no-export", help="Skip the ONNX export (the online tier needs it)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Ground every item image with a VLM, encode, index and publish a new artifact version."""
    overrides = {
        "catalog.path": str(catalog) if catalog else None, "catalog.images_root": str(images_root) if images_root else None,
        "out": str(out) if out else None, "vlm.model": vlm, "encoder.model": encoder,
        "catalog.id_column": id_column, "catalog.image_column": image_column,
        "catalog.text_columns": [c.strip() for c in text_columns.split(",") if c.strip()] if text_columns else None,
        "prompt.style": prompt_style, "encoder.template": template, "run.runner": runner,
        "run.ray_address": ray_address, "vlm.batch_size": vlm_batch_size, "vlm.concurrency": vlm_concurrency,
        "vlm.max_new_tokens": max_new_tokens, "encoder.batch_size": encode_batch_size, "index.kind": index_kind,
        "export.enabled": False if no_export else None,
    }
    try:
        cfg = load_config(config, overrides)
        cfg.require_paths()
        from groundrec.offline.job import run_job

        summary = run_job(cfg, progress=not quiet)
    except USER_ERRORS as e:
        _fail(e)
    print_summary(summary)


def print_summary(s) -> None:
    out = Console()
    t = Table(title=f"published version {s.version}", show_header=False, title_justify="left")
    t.add_row("location", str(s.version_dir))
    t.add_row("runner", s.runner)
    t.add_row("items read", str(s.items_read))
    t.add_row("grounded", f"{s.grounded_new} new, {s.grounded_cached} from cache")
    if s.parse_failures:
        t.add_row("structured parse failures", f"{s.parse_failures} (raw text kept)")
    skipped = sum(s.skipped.values())
    t.add_row("skipped", f"{skipped}" + (": " + "; ".join(f"{k} ({v})" for k, v in s.skipped.items()) if skipped else ""))
    t.add_row("encoded", f"{s.encoded} items; {s.encoded_new} texts encoded, the rest reused from the cache")
    idx = s.index
    t.add_row("index", f"{idx['factory']} ({idx['kind']}), recall@{idx['k']} {idx['recall_at_k']:.3f}"
              + (f", nprobe {idx['nprobe']}" if idx.get("nprobe") else "")
              + (f", efSearch {idx['ef_search']}" if idx.get("ef_search") else ""))
    if s.export:
        line = f"fp32 max|Δ| {s.export['fp32']['max_abs_diff']:.1e}"
        if "int8" in s.export:
            line += f", int8 cos {s.export['int8']['mean_cosine']:.3f}" + (" (dropped)" if "dropped" in s.export["int8"] else "")
        t.add_row("ONNX encoder", line)
    t.add_row("time per stage", ", ".join(f"{k} {v:.1f}s" for k, v in s.timings_s.items()))
    out.print(t)
    for ex in s.skipped_examples:
        out.print(f"  skipped {ex['item_id']} ({ex['stage']}): {ex['reason']}", highlight=False)


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-artifacts"), help="Where the demo catalog and artifacts go."),
    vlm: Optional[str] = typer.Option(None, help="VLM: hub id or local directory."),
    n_items: int = typer.Option(120, min=8, help="Demo catalog size."),
    runner: str = typer.Option("ray", help="ray | local."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Generate a demo catalog (drawn products, synthetic users), run the offline job, show recommendations."""
    try:
        from groundrec.offline.demo import run_demo

        run_demo(out, vlm=vlm, n_items=n_items, runner=runner, progress=not quiet, console=Console())
    except USER_ERRORS as e:
        _fail(e)


@versions_app.command("gc")
def versions_gc(keep: int = typer.Option(..., min=1, help="How many versions to keep (the active one always stays)."),
                artifacts: Path = typer.Option(..., help="Artifacts directory.")):
    """Delete the oldest published versions beyond --keep; never the one CURRENT names."""
    for v in versions.gc(artifacts, keep):
        typer.echo(f"deleted {v}")


@app.command()
def serve(
    artifacts: str = typer.Option(..., help="Artifacts directory (the offline job's --out), or an fsspec URI (s3://...)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; loopback by default."),
    port: int = typer.Option(8000, help="TCP port."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with ServeConfig fields (limits, reload...)."),
    interactions: Optional[Path] = typer.Option(None, help="Interactions table: item popularity for the prior and fallback."),
    encoder_variant: Optional[str] = typer.Option(None, help="fp32 | int8 ONNX encoder for text queries."),
):
    """Serve recommendations over HTTP from the CURRENT version, reloading when it changes."""
    try:
        import yaml

        from groundrec.shared.config import ServeConfig

        data = yaml.safe_load(config.read_text()) if config else {}
        data.update({"artifacts": str(artifacts), "host": host, "port": port})
        if interactions:
            data["interactions"] = str(interactions)
        if encoder_variant:
            data["encoder_variant"] = encoder_variant
        cfg = ServeConfig.model_validate(data)
        from groundrec.online.service import serve as run_server
    except USER_ERRORS as e:
        _fail(e)
    run_server(cfg)


@app.command()
def loadtest(
    url: str = typer.Option("http://127.0.0.1:8000", help="A running service; loopback addresses only."),
    rate: float = typer.Option(50.0, help="Requests started per second (open loop)."),
    duration: float = typer.Option(10.0, help="Seconds to send for."),
    concurrency: int = typer.Option(64, help="Most requests in flight; beyond it requests are dropped and counted."),
    histories: Path = typer.Option(..., help="Interactions table (user_id, item_id, timestamp) or JSONL of {\"history\": [...]}."),
    search_share: float = typer.Option(0.2, min=0, max=1, help="Share of /search requests; the rest are /recommend."),
    k: int = typer.Option(10, help="Results per request."),
    max_requests: int = typer.Option(1_000_000, help="Hard cap on requests sent."),
    json_out: Optional[Path] = typer.Option(None, help="Also write the figures as JSON here."),
):
    """Open-loop load test: throughput, errors by status, latency p50/p90/p99/max."""
    import asyncio

    from groundrec.online.loadtest import format_report, load_histories, run_load

    try:
        hist = load_histories(histories)
        report = asyncio.run(run_load(url, rate, duration, concurrency, hist, search_share, k,
                                      max_requests=max_requests))
    except USER_ERRORS as e:
        _fail(e)
    typer.echo(format_report(report))
    if json_out:
        json_out.write_text(report.to_json())


@dev_app.command("make-tiny-vlm")
def make_tiny_vlm(
    out: Path = typer.Argument(..., help="Directory to write the model and processor to."),
    arch: str = typer.Option("smolvlm", help="smolvlm | qwen2_vl | llava | blip."),
):
    """Build a tiny random-weight VLM (real architecture, gibberish answers) for smoke tests without a network."""
    try:
        from groundrec.offline.tiny_vlm import build_tiny_vlm

        path = build_tiny_vlm(arch, out)
    except USER_ERRORS as e:
        _fail(e)
    typer.echo(f"tiny {arch} VLM written to {path}")


@dev_app.command("make-tiny-vision")
def make_tiny_vision(
    out: Path = typer.Argument(..., help="Directory to write the model and image processor to."),
    arch: str = typer.Option("vit", help="vit | clip."),
):
    """Build a tiny random-weight image encoder for `groundrec eval --set vision_model=DIR` smoke tests."""
    try:
        from groundrec.offline.tiny_vlm import build_tiny_vision

        path = build_tiny_vision(out, arch)
    except USER_ERRORS as e:
        _fail(e)
    typer.echo(f"tiny {arch} image encoder written to {path}")


@app.command("eval")
def eval_command(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML evaluation config (schema: EvalConfig)."),
    catalog: Optional[Path] = typer.Option(None, help="Catalog table: Parquet, CSV or JSONL."),
    interactions: Optional[Path] = typer.Option(None, help="Interactions table: user, item, timestamp columns."),
    images_root: Optional[Path] = typer.Option(None, help="Folder that relative image paths start from."),
    out: Optional[Path] = typer.Option(None, help="Report directory: report.md, report.html, results.json, *.png."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override any config field: --set vlm.model=DIR (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Compare item representations and recommenders on a catalog with real interactions: baselines,
    VLM4Rec on each representation, groundrec's tuned profiles; CIs and significance in the report."""
    from groundrec.shared.config import EvalConfig

    overrides: dict = {"catalog.path": str(catalog) if catalog else None,
                       "interactions.path": str(interactions) if interactions else None,
                       "catalog.images_root": str(images_root) if images_root else None,
                       "out": str(out) if out else None}
    try:
        for item in set_ or []:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--set expects key=value, got {item!r}")
            overrides[key.strip()] = yaml.safe_load(value)
        cfg = load_config(config, overrides, EvalConfig)
        from groundrec.offline.evaluation.run import Evaluation

        result = Evaluation(cfg, progress=not quiet).run()
    except USER_ERRORS as e:
        _fail(e)
    typer.echo(f"best on {result['protocol']['primary_metric']}: {result['best']}")
    typer.echo(f"report: {Path(cfg.out) / 'report.md'} (also report.html, results.json, PNG plots)")


@versions_app.command("list")
def versions_list(artifacts: Path = typer.Option(..., help="Artifacts directory.")):
    """List published versions; * marks the one CURRENT points to."""
    current = versions.current_version(artifacts)
    for v in versions.list_versions(artifacts):
        typer.echo(("* " if v == current else "  ") + v)


@versions_app.command("activate")
def versions_activate(version: str, artifacts: Path = typer.Option(..., help="Artifacts directory.")):
    """Point CURRENT at an earlier (or later) published version: a rollback."""
    try:
        versions.activate(artifacts, version)
    except USER_ERRORS as e:
        _fail(e)
    typer.echo(f"CURRENT -> {version}")


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="groundrec")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
