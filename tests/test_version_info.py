"""shared/version_info.py: the code version a manifest records is the installed package's
version plus this checkout's commit."""

from __future__ import annotations

import subprocess
from importlib.metadata import version
from pathlib import Path

from groundrec.shared.version_info import code_version

REPO = Path(__file__).resolve().parents[1]


def test_code_version_is_the_package_version_and_the_commit():
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    expected = f"{version('groundrec')}+{commit}" if commit else version("groundrec")
    assert code_version() == expected
    assert code_version() is code_version()  # read once per process


def test_outside_a_checkout_it_is_the_package_version_alone(tmp_path):
    """An installed copy (no git around the module) records the package version only."""
    import shutil
    import sys

    pkg = tmp_path / "groundrec" / "shared"
    pkg.mkdir(parents=True)
    (tmp_path / "groundrec" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    shutil.copy(REPO / "shared" / "version_info.py", pkg / "version_info.py")
    code = "from groundrec.shared.version_info import code_version; print(code_version())"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path), "GIT_CEILING_DIRECTORIES": str(tmp_path.parent)})
    assert out.stdout.strip() == version("groundrec")
