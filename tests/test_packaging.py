"""The wheel holds every module: built from the tracked files, installed without -e into a
fresh virtual environment, every groundrec module imports and `groundrec --help` runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TIERS = ("offline", "online", "shared")


def _tracked_tree(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest


def _source_modules() -> set[str]:
    mods = set()
    for tier in TIERS:
        for p in (REPO / tier).rglob("*.py"):
            parts = p.relative_to(REPO).with_suffix("").parts
            mods.add(".".join(("groundrec",) + (parts[:-1] if parts[-1] == "__init__" else parts)))
    return mods


@pytest.mark.slow
def test_wheel_installs_every_module_without_editable(tmp_path):
    src = _tracked_tree(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src),
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("groundrec-*.whl")
    in_wheel = {n[:-3].replace("/", ".").removesuffix(".__init__") for n in zipfile.ZipFile(wheel).namelist()
                if n.endswith(".py")}
    assert _source_modules() <= in_wheel, f"missing from the wheel: {sorted(_source_modules() - in_wheel)}"

    # A fresh venv sees this environment's third-party packages (no download) but not the
    # editable groundrec: a plain .pth line adds the directory without running its .pth hooks.
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True)
    check = ("import importlib, groundrec.shared, sys; "
             "assert 'site-packages' in groundrec.shared.__path__[0], groundrec.shared.__path__; "
             f"[importlib.import_module(m) for m in {sorted(_source_modules())!r}]")
    r = subprocess.run([str(py), "-c", check], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([str(env_dir / "bin" / "groundrec"), "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    for command in ("offline", "serve", "eval", "versions", "loadtest"):
        assert command in r.stdout
