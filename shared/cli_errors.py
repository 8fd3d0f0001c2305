"""How every command reports a user error: one line naming the problem, exit status 2.
Anything else is a bug and is not caught: Python prints its traceback."""

from __future__ import annotations

import typer
from pydantic import ValidationError
from rich.console import Console

from groundrec.shared.errors import UserError

console = Console(stderr=True)
USER_ERRORS = (UserError, FileNotFoundError, ValidationError)


def fail(err: Exception) -> None:
    if isinstance(err, ValidationError):
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        message = "invalid configuration:\n" + "\n".join(lines)
    else:
        message = str(err)
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)
