"""The offline tier's commands: ``offline run``, ``eval``, ``demo`` and ``dev`` helpers.
Heavy imports (torch, ray) happen only inside a command that needs them."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
import yaml
from rich.console import Console
from rich.table import Table

from groundrec.offline.config import INDEX_KINDS
from groundrec.shared.cli_errors import USER_ERRORS, fail
from groundrec.shared.errors import UserError

offline_app = typer.Typer(help="The offline tier: ground, encode, index, publish.", no_args_is_help=True)
dev_app = typer.Typer(help="Developer helpers.", no_args_is_help=True)


offline_root = typer.Typer()  # top-level commands of this tier: demo, eval


@offline_app.command("run")
def offline_run(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML job config (same schema as JobConfig)."),
    catalog: Optional[Path] = typer.Option(None, help="Catalog table: Parquet, CSV or JSONL."),
    images_root: Optional[str] = typer.Option(None, help="Folder or fsspec URI (s3://bucket/images) that relative image paths start from (default: the catalog's folder)."),
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
    index_kind: Optional[str] = typer.Option(None, help=f"{' | '.join(INDEX_KINDS)}."),
    no_export: bool = typer.Option(False, "--no-export", help="Skip the ONNX export (the online tier needs it)."),
    interactions: Optional[str] = typer.Option(None, help="Interactions (user_id, item_id, timestamp): a table, a "
                                               "folder of Parquet files, or the event store's URL (sqlite:///..., "
                                               "redis://...): publish a hybrid version, content + collaborative."),
    live_items: Optional[str] = typer.Option(None, help="The event store of the items API's changes (puts, patches, "
                                             "deletes), laid over the catalog file: sqlite:///... or redis://...; "
                                             "default: --interactions when that is a store URL; none: the file alone."),
    interactions_item_column: Optional[str] = typer.Option(None, help="Its item id column (default item_id)."),
    interactions_user_column: Optional[str] = typer.Option(None, help="Its user id column (default user_id)."),
    activate: Optional[str] = typer.Option(None, help="Make the new version current: always | gate | never | auto "
                                           "(default: gate when there are interactions and a version is serving, "
                                           "else always). gate: only if not significantly worse than the serving "
                                           "version on the interactions since its training cutoff; refused: exit 3."),
    sequence: Optional[str] = typer.Option(None, help="The learned profile encoder (with --interactions): true | "
                                           "auto (on) | false (the default, for now: docs/hybrid.md). Trained and published only where it beats "
                                           "the hybrid on validation by more than one standard error."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Ground every item image with a VLM, encode, index and publish a new artifact version.
    With --interactions the version is a hybrid: collaborative item vectors learned from the
    interactions, content where items have few or none. Exit status: 0 published (and current
    unless --activate never), 2 the input is wrong, 3 published but the promotion gate kept the
    serving version."""
    overrides = {
        "catalog.path": str(catalog) if catalog else None, "catalog.images_root": str(images_root) if images_root else None,
        "out": str(out) if out else None, "vlm.model": vlm, "encoder.model": encoder,
        "catalog.id_column": id_column, "catalog.image_column": image_column,
        "catalog.text_columns": [c.strip() for c in text_columns.split(",") if c.strip()] if text_columns else None,
        "prompt.style": prompt_style, "encoder.template": template, "run.runner": runner,
        "run.ray_address": ray_address, "vlm.batch_size": vlm_batch_size, "vlm.concurrency": vlm_concurrency,
        "vlm.max_new_tokens": max_new_tokens, "encoder.batch_size": encode_batch_size, "index.kind": index_kind,
        "export.enabled": False if no_export else None,
        "interactions.path": str(interactions) if interactions else None,
        "catalog.live_items": live_items, "interactions.item_column": interactions_item_column,
        "interactions.user_column": interactions_user_column,
        "publish.activate": activate, "sequence.enabled": sequence,
    }
    from groundrec.offline.config import load_job_config

    try:
        cfg = load_job_config(config, overrides)
        cfg.require_paths()
        from groundrec.offline.job import run_job

        summary = run_job(cfg, progress=not quiet)
    except USER_ERRORS as e:
        fail(e)
    print_summary(summary)
    if summary.gate is not None and summary.gate.mode == "gate" and not summary.gate.activated:
        from groundrec.offline.gate import EXIT_REFUSED

        raise typer.Exit(EXIT_REFUSED)


def print_summary(s) -> None:
    out = Console()
    t = Table(title=f"published version {s.version}", show_header=False, title_justify="left")
    t.add_row("location", str(s.version_dir))
    t.add_row("runner", s.runner)
    t.add_row("items read", str(s.items_read))
    if s.live_items is not None:
        t.add_row("live items", f"{s.live_items['items']} item(s) from {s.live_items['changes']} change(s), "
                  f"through seq {s.live_items['through']}")
    for note in s.notes:
        t.add_row("note", note)
    t.add_row("grounded", f"{s.grounded_new} new, {s.grounded_cached} from cache")
    if s.parse_failures:
        t.add_row("structured parse failures", f"{s.parse_failures} (raw text kept)")
    problems = sum(s.skipped.values())
    t.add_row("not grounded", f"{s.ungrounded} (published from their catalog text)"
              + (": " + "; ".join(f"{k} ({v})" for k, v in s.skipped.items()) if problems else ""))
    t.add_row("dropped", f"{s.dropped} (nothing to embed)")
    t.add_row("encoded", f"{s.encoded} items, {s.distinct_texts} distinct texts: {s.encoded_new} encoded now, "
              f"{s.distinct_texts - s.encoded_new} from the cache")
    if s.learned is not None:
        r, c, w = s.learned, s.learned.choice, s.learned.window
        if r.hybrid:
            width = f"index {s.index['dim']} wide" + (f" (projected from {r.projected_from})" if r.projection else "")
            t.add_row("collaborative", f"{r.model_name}, rank {r.rank}, reg {c.reg:g}, weight {c.weight:g}; "
                      f"{w.interactions} interactions of {w.users} users; "
                      f"{r.head_items} items fitted, {r.items_from_content} from their content; {width}")
        else:
            t.add_row("collaborative", f"not published: on {w.interactions} interactions of "
                      f"{w.users} users no weight beat content alone by more than one standard error "
                      "on validation; the version is content only")
        if r.validation_users:
            items = f" ({r.validation_items} items)" if r.validation_items > r.validation_users else ""
            published = "hybrid" if r.hybrid else "published"
            recent = f" (with its recent-popularity prior, weight {c.recent_weight:g})" if c.recent_weight else ""
            t.add_row("validation", f"{r.metric} on {r.validation_users} users{items}: content {r.content_score:.4f}, "
                      f"{published} {c.score:.4f}{recent}" + "".join(f"; {warning}" for warning in r.warnings))
    if s.sequence:
        t.add_row("sequence encoder", s.sequence)
    idx = s.index
    t.add_row("index", f"{idx['factory']} ({idx['kind']}), recall@{idx['k']} {idx['recall_at_k']:.3f}"
              + (f", nprobe {idx['nprobe']}" if idx.get("nprobe") else "")
              + (f", efSearch {idx['ef_search']}" if idx.get("ef_search") else ""))
    if s.export:
        line = f"fp32 max|Δ| {s.export['fp32']['max_abs_diff']:.1e}"
        if "int8" in s.export:
            line += f", int8 cos {s.export['int8']['mean_cosine']:.3f}" + (" (dropped)" if "dropped" in s.export["int8"] else "")
        t.add_row("ONNX encoder", line)
    if s.log_dir:
        t.add_row("Ray logs", str(s.log_dir))
    if s.gate is not None:
        g = s.gate
        went = "current" if g.activated else f"published, NOT current (still serving {g.serving_version})"
        t.add_row("activation", f"{g.mode}: {went}: {g.reason}" + (
            f"; {g.metric}, {g.users} users from {g.window_from}" if g.users else ""))
    t.add_row("time per stage", ", ".join(f"{k} {v:.1f}s" for k, v in s.timings_s.items()))
    out.print(t)
    for ex in s.skipped_examples:
        out.print(f"  {'dropped' if ex['stage'] == 'embed' else 'not grounded'} {ex['item_id']} ({ex['stage']}): "
                  f"{ex['reason']}", highlight=False)


@offline_root.command()
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
        fail(e)


@dev_app.command("make-tiny-vlm")
def make_tiny_vlm(
    out: Path = typer.Argument(..., help="Directory to write the model and processor to."),
    arch: str = typer.Option("smolvlm", help="smolvlm | qwen2_vl | llava | blip."),
):
    """Build a tiny random-weight VLM (real architecture, gibberish answers) for smoke tests without a network."""
    try:
        from groundrec.offline.dev.tiny_models import build_tiny_vlm

        path = build_tiny_vlm(arch, out)
    except USER_ERRORS as e:
        fail(e)
    typer.echo(f"tiny {arch} VLM written to {path}")


@dev_app.command("make-tiny-vision")
def make_tiny_vision(
    out: Path = typer.Argument(..., help="Directory to write the model and image processor to."),
    arch: str = typer.Option("vit", help="vit | clip."),
):
    """Build a tiny random-weight image encoder for `groundrec eval --set vision_model=DIR` smoke tests."""
    try:
        from groundrec.offline.dev.tiny_models import build_tiny_vision

        path = build_tiny_vision(out, arch)
    except USER_ERRORS as e:
        fail(e)
    typer.echo(f"tiny {arch} image encoder written to {path}")


@offline_root.command("eval")
def eval_command(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML evaluation config (schema: EvalConfig)."),
    catalog: Optional[Path] = typer.Option(None, help="Catalog table: Parquet, CSV or JSONL."),
    interactions: Optional[Path] = typer.Option(None, help="Interactions table: user, item, timestamp columns."),
    images_root: Optional[str] = typer.Option(None, help="Folder or fsspec URI that relative image paths start from."),
    out: Optional[Path] = typer.Option(None, help="Report directory: report.md, report.html, results.json, *.png."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override any config field: --set vlm.model=DIR (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Compare item representations and recommenders on a catalog with real interactions: baselines,
    VLM4Rec on each representation, groundrec's tuned profiles; CIs and significance in the report."""
    from groundrec.offline.evaluation.config import EvalConfig
    from groundrec.shared.config import load_config

    overrides: dict = {"catalog.path": str(catalog) if catalog else None,
                       "interactions.path": str(interactions) if interactions else None,
                       "catalog.images_root": str(images_root) if images_root else None,
                       "out": str(out) if out else None}
    try:
        for item in set_ or []:
            key, sep, value = item.partition("=")
            if not sep:
                raise UserError(f"--set expects key=value, got {item!r}")
            try:
                overrides[key.strip()] = yaml.safe_load(value)
            except yaml.YAMLError as e:
                raise UserError(f"--set {item!r}: the value is not valid YAML: {e}") from None
        cfg = load_config(config, overrides, EvalConfig)
        from groundrec.offline.evaluation.run import run_evaluation

        result = run_evaluation(cfg, progress=not quiet)
    except USER_ERRORS as e:
        fail(e)
    typer.echo(f"best on {result['protocol']['primary_metric']}: {result['best']}")
    typer.echo(f"report: {Path(cfg.out) / 'report.md'} (also report.html, results.json, PNG plots)")




OFFLINE_PACKAGES = ("torch", "transformers", "sentence_transformers", "ray", "faiss")


def installed(packages=OFFLINE_PACKAGES) -> bool:
    """Whether the offline tier's dependencies are installed (``pip install groundrec[offline]``)."""
    from importlib.util import find_spec

    return all(find_spec(p) is not None for p in packages)


def register(root: typer.Typer, packages=OFFLINE_PACKAGES) -> None:
    """Entry point ``groundrec.commands:offline``: mount this tier's commands on the root app,
    only where its dependencies are installed (the online image has none of them: its commands
    failed with a ModuleNotFoundError traceback)."""
    if not installed(packages):
        return
    root.add_typer(offline_app, name="offline")
    root.add_typer(dev_app, name="dev")
    root.registered_commands.extend(offline_root.registered_commands)
