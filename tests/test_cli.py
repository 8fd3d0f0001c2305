"""The commands as the README gives them: every flag of every `groundrec ...` line in the
README's code blocks is one its --help lists (online/cli.py, offline/cli.py, shared/cli.py),
and a user's mistake is one line, exit status 2, no traceback (shared/cli_errors.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from groundrec.shared.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
WORD = re.compile(r"[a-z][a-z0-9-]*")


def _readme_commands() -> list[tuple[list[str], list[str]]]:
    """(command path, flags) of each `groundrec` line in the README's code blocks."""
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", README.read_text(), re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    found = []
    for line in lines:
        for part in re.split(r"[;&|]+|(?<=\s)#", line):  # several commands on a line; comments
            words = part.split()
            if "groundrec" not in words:
                continue
            words = words[words.index("groundrec") + 1:]
            path = []
            for w in words:
                if not WORD.fullmatch(w):
                    break
                path.append(w)
            flags = sorted({m for m in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", " ".join(words))})
            found.append((path, flags))
    return found


def _help(path: list[str]) -> tuple[list[str], str]:
    """The deepest prefix of ``path`` that is a command, and its --help (wide, plain)."""
    runner = CliRunner()
    for n in range(len(path), 0, -1):
        r = runner.invoke(app, [*path[:n], "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250", "NO_COLOR": "1"})
        if r.exit_code == 0:
            return path[:n], r.output
    raise AssertionError(f"`groundrec {' '.join(path)}` is no command")


def test_every_flag_the_readme_gives_is_in_the_commands_help():
    commands = _readme_commands()
    seen = {" ".join(p) for p, _ in commands}
    assert {"offline run", "serve", "eval", "loadtest", "events export"} <= {
        " ".join(p[:2]) if p[0] in ("offline", "events", "versions", "dev") else p[0] for p in map(lambda c: c[0], commands)
    }, seen
    unknown = []
    for path, flags in commands:
        command, text = _help(path)
        unknown += [f"groundrec {' '.join(command)} {f}" for f in flags if f not in text and f != "--help"]
    assert unknown == [], f"flags the README gives that --help does not list: {unknown}"


def test_a_users_mistake_is_one_line_and_exit_status_2(tmp_path):
    runner = CliRunner()
    bad = tmp_path / "serve.yaml"
    bad.write_text("max_k: -1\nnot_a_setting: 3\n")
    r = runner.invoke(app, ["serve", "--artifacts", str(tmp_path), "--config", str(bad)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "invalid configuration" in r.output and "not_a_setting" in r.output and "max_k" in r.output
    r = runner.invoke(app, ["serve", "--artifacts", str(tmp_path), "--interactions", str(tmp_path / "nope.parquet")])
    assert r.exit_code == 2 and "error:" in r.output and "nope.parquet" in r.output and "Traceback" not in r.output
    # keys the server cannot use are refused before it starts (in every worker's factory, uvicorn restarted them for ever)
    for env, says in (({"GROUNDREC_READ_API_KEY": "r"}, "GROUNDREC_API_KEY is not"),
                      ({"GROUNDREC_API_KEY": "cl\u00e9\u20ac"}, "printable ASCII")):
        r = runner.invoke(app, ["serve", "--artifacts", str(tmp_path), "--workers", "2"], env=env)
        assert r.exit_code == 2 and says in r.output and "Traceback" not in r.output, r.output
    bad.write_text("max_k: [1\n")
    (tmp_path / "CURRENT").write_text("../../etc\n")  # a CURRENT someone edited by hand
    for args, says in ((["serve", "--artifacts", str(tmp_path), "--config", str(bad)], "not valid YAML"),
                       (["eval", "--catalog", str(bad), "--out", str(tmp_path), "--set", "k=[1"], "not valid YAML"),
                       (["versions", "list", "--artifacts", str(tmp_path)], "CURRENT")):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and "error:" in r.output and says in r.output and "Traceback" not in r.output, r.output


def test_fail_formats_each_error_and_exits_2():
    import typer
    from pydantic import BaseModel, ValidationError

    from groundrec.shared.cli_errors import USER_ERRORS, fail
    from groundrec.shared.errors import UserError

    class Limits(BaseModel):
        max_k: int

    try:
        Limits(max_k="many")
    except ValidationError as e:
        validation = e
    assert isinstance(validation, USER_ERRORS) and isinstance(UserError("x"), USER_ERRORS)
    for err, expected in ((UserError("the catalog has no id column"), "error: the catalog has no id column"),
                          (validation, "error: invalid configuration:\n  max_k: ")):
        from groundrec.shared import cli_errors

        with cli_errors.console.capture() as captured, pytest.raises(typer.Exit) as exit_:
            fail(err)
        assert exit_.value.exit_code == 2 and captured.get().startswith(expected), captured.get()


def test_every_relative_link_of_the_readme_and_the_docs_resolves():
    root = README.parent
    broken = []
    for doc in [README, *sorted((root / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            path = target.split("#", 1)[0]
            if path and not re.match(r"[a-z]+:", path) and not (doc.parent / path).exists():
                broken.append(f"{doc.relative_to(root)} -> {target}")
    assert broken == []


def test_the_offline_commands_are_mounted_only_where_the_offline_tier_is_installed():
    """The online image has no torch, transformers or Ray: its `groundrec --help` listed the
    offline commands, which then failed with a ModuleNotFoundError traceback."""
    import typer

    from groundrec.offline.cli import register

    names = lambda root: {g.name for g in root.registered_groups} | {c.name or c.callback.__name__  # noqa: E731
                                                                    for c in root.registered_commands}
    with_tier, without = typer.Typer(), typer.Typer()
    register(with_tier)
    register(without, packages=("torch", "groundrec_no_such_package"))
    assert {"offline", "dev"} <= names(with_tier) and names(without) == set()
