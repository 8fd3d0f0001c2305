"""How every command reports a user error: one line naming the problem, exit status 2."""

from __future__ import annotations

import typer
from pydantic import ValidationError
from rich.console import Console

console = Console(stderr=True)
USER_ERRORS = (ValueError, FileNotFoundError, RuntimeError, ValidationError)


def fail(err: Exception) -> None:
    if isinstance(err, ValidationError):
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        message = "invalid configuration:\n" + "\n".join(lines)
    else:
        message = str(err)
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)
