"""Two layout rules, checked over every module of offline/, online/ and shared/ so they keep
holding: each module has its test file or is named in a test, and no module is over
MAX_LINES lines.

A module ``<tier>/<package...>/<name>.py`` has its test file when tests/ holds
``test_<name>.py``, ``test_<name>_*.py`` or ``test_<folder>_<name>.py`` (``<folder>``: the tier
or package it sits in, e.g. test_online_retrieve.py), or, inside a subpackage, the package's
own ``test_<package>.py`` / ``test_<package>_*.py`` (test_artifact.py for shared/artifact/).
It is named in a test when a test file or conftest.py spells its dotted name
(``groundrec.online.filters``), imports it from its package (``from groundrec.online import
filters``) or gives its path (``online/filters.py``)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
TIERS = ("offline", "online", "shared")
MAX_LINES = 300

# Known offenders, to be emptied: each entry is a module over MAX_LINES lines today.
OVER_LENGTH: set[str] = set()
# Modules whose tests are being written by the engineer who owns them (issue 31); remove an
# entry once its test lands.
TEST_PENDING: set[str] = set()  # modules whose tests are still to be written


def _modules() -> list[Path]:
    return sorted(p for tier in TIERS for p in (REPO / tier).rglob("*.py") if p.name != "__init__.py")


def _test_texts() -> dict[str, str]:
    files = [*TESTS.glob("test_*.py"), TESTS / "conftest.py"]
    return {p.name: p.read_text() for p in files if p.is_file() and p.name != Path(__file__).name}  # not these rules


def covered(module: Path, test_names: set[str], texts: str) -> bool:
    """Whether ``module`` (a path under the repository) has its test file or is named in a test."""
    rel = module.relative_to(REPO)
    name, folders = rel.stem, rel.parts[:-1]
    stems = {n[len("test_"):-len(".py")] for n in test_names}
    if name in stems or any(s.startswith(name + "_") for s in stems) or f"{folders[-1]}_{name}" in stems:
        return True
    if len(folders) > 1:  # a subpackage tested through its package's API
        package = folders[-1]
        if package in stems or any(s.startswith(package + "_") for s in stems):
            return True
    dotted = ".".join(("groundrec", *folders, name))
    parent = ".".join(("groundrec", *folders))
    patterns = [re.escape(dotted) + r"(?![\w])",
                r"from\s+" + re.escape(parent) + r"\s+import\s+(?:\([^)]*|[^\n]*)\b" + re.escape(name) + r"\b",
                r"(?<![\w/])" + re.escape(rel.as_posix()) + r"(?![\w])"]
    return any(re.search(p, texts) for p in patterns)


def test_the_rule_reads_file_names_imports_and_paths():
    """The rule itself, on made-up names: what counts as a test file or a mention, and what not."""
    mod = REPO / "online" / "widgets.py"
    sub = REPO / "shared" / "things" / "store.py"
    assert covered(mod, {"test_widgets.py"}, "")
    assert covered(mod, {"test_widgets_under_load.py"}, "")
    assert covered(mod, {"test_online_widgets.py"}, "")
    assert covered(mod, set(), "from groundrec.online.widgets import make")
    assert covered(mod, set(), "from groundrec.online import config, widgets\n")
    assert covered(mod, set(), "see online/widgets.py")
    assert covered(sub, {"test_things.py"}, "") and covered(sub, {"test_things_store.py"}, "")
    assert not covered(mod, {"test_widget.py", "test_my_widgets.py", "test_things.py"}, "")
    assert not covered(mod, set(), "import groundrec.online.widgetsmith; from groundrec.online import widgetsmith")
    assert not covered(mod, set(), "offline/widgets.py and groundrec.offline.widgets")
    assert not covered(REPO / "online" / "store.py", {"test_things.py"}, "")  # a package's test covers only it


def test_every_module_has_its_test_file_or_is_named_in_a_test():
    texts = _test_texts()
    names, joined = set(texts), "\n".join(texts.values())
    modules = {m.relative_to(REPO).as_posix(): m for m in _modules()}
    missing = sorted(rel for rel, m in modules.items() if not covered(m, names, joined) and rel not in TEST_PENDING)
    assert missing == [], f"no test file names these modules (add tests/test_<name>.py): {missing}"
    assert TEST_PENDING <= set(modules), f"pending entries for modules that are gone: {TEST_PENDING - set(modules)}"
    done = sorted(rel for rel in TEST_PENDING if covered(modules[rel], names, joined))
    assert done == [], f"these have their tests now: take them off TEST_PENDING: {done}"


def test_no_module_is_over_the_line_limit():
    lengths = {m.relative_to(REPO).as_posix(): len(m.read_text().splitlines()) for m in _modules()}
    over = sorted(f"{rel} ({n} lines)" for rel, n in lengths.items() if n > MAX_LINES and rel not in OVER_LENGTH)
    assert over == [], f"modules over {MAX_LINES} lines (split them along their parts): {over}"
    assert OVER_LENGTH <= set(lengths), f"allow-listed modules that are gone: {OVER_LENGTH - set(lengths)}"
    fixed = sorted(rel for rel in OVER_LENGTH if lengths[rel] <= MAX_LINES)
    if fixed:  # a warning, not a failure: the split may be mid-way in a working tree others share
        warnings.warn(f"within {MAX_LINES} lines now, take them off OVER_LENGTH: {fixed}", stacklevel=1)


def test_the_readme_stays_short():
    """The README says what groundrec is, the two set-up commands and one short section per way
    of using it; details belong in docs/ (issue 31's limit, kept for the work that follows)."""
    n = len((REPO / "README.md").read_text().splitlines())
    assert n <= 250, f"README.md has {n} lines, more than 250: move the detail into docs/ and link to it"
