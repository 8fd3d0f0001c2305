"""The ``groundrec`` command: the root app, the ``versions`` commands (the artifact contract
both tiers share), and each tier's commands, mounted from the ``groundrec.commands`` entry
points (``groundrec.offline.cli``, ``groundrec.online.cli``). This module imports neither
tier; a tier whose dependencies are not installed simply adds no commands."""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from pathlib import Path

import typer
from groundrec.shared import artifact
from groundrec.shared.cli_errors import USER_ERRORS, fail
from groundrec.shared.errors import UserError

app = typer.Typer(help="groundrec: VLM-grounded multimodal recommender.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
versions_app = typer.Typer(help="Published artifact versions.", no_args_is_help=True)
app.add_typer(versions_app, name="versions")
ROOT_HELP = "Artifacts directory (a local folder: the one the offline job writes to)."


def _local(artifacts: str) -> Path:
    """The versions commands write and delete where the job publishes: a local folder. An
    object-store root (read by the service) is refused, naming what to do instead."""
    if artifact.is_uri(artifacts):
        fail(UserError(f"--artifacts {artifacts}: the versions commands work on the local folder the "
                                "offline job writes to; run them there (then sync it), or for a rollback copy a "
                                f"version id into {artifacts.rstrip('/')}/{artifact.CURRENT}"))
    return Path(artifacts)

@versions_app.command("gc")
def versions_gc(keep: int = typer.Option(..., min=1, help="How many versions to keep. Always kept: the active one, the versions a server falls back to, the newest that verifies and any a running server reports serving."),
                artifacts: str = typer.Option(..., help=ROOT_HELP)):
    """Delete the oldest published versions beyond --keep; never the one CURRENT names."""
    for v in artifact.gc(_local(artifacts), keep):
        typer.echo(f"deleted {v}")


@versions_app.command("list")
def versions_list(artifacts: str = typer.Option(..., help=ROOT_HELP)):
    """List published versions; * marks the one CURRENT points to."""
    artifacts = _local(artifacts)
    try:
        current = artifact.current_version(artifacts)
    except USER_ERRORS as e:
        fail(e)
    for v in artifact.list_versions(artifacts):
        typer.echo(("* " if v == current else "  ") + v)


@versions_app.command("activate")
def versions_activate(version: str, artifacts: str = typer.Option(..., help=ROOT_HELP)):
    """Point CURRENT at an earlier (or later) published version: a rollback, or the manual
    override of the promotion gate (recorded in activations.jsonl as a bypass)."""
    artifacts = _local(artifacts)
    try:
        if version in artifact.list_versions(artifacts):  # a damaged copy is refused, naming its files
            try:
                artifact.verify(artifact.version_path(artifacts, version))
            except ValueError as e:
                raise UserError(f"version {version} does not verify, not activated: {e}") from None
        with artifact.current_lock(artifacts):  # the activation and its record together
            artifact.activate(artifacts, version)
            refused = artifact.gate_refused(artifacts, version)
            artifact.record_activation(artifacts, version, "versions activate", gate_bypassed=refused is not None,
                                       note=f"the gate had refused it: {refused}" if refused else "")
    except USER_ERRORS as e:
        fail(e)
    typer.echo(f"CURRENT -> {version}" + (f" (the promotion gate had refused it: {refused}; recorded as a bypass)"
                                          if refused else ""))


def mount_tiers(root: typer.Typer) -> None:
    """Let each installed tier add its commands (entry point group ``groundrec.commands``)."""
    for ep in sorted(entry_points(group="groundrec.commands"), key=lambda e: e.name):
        ep.load()(root)


mount_tiers(app)


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="groundrec")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
