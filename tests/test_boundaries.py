"""What each tier may import: the torch-free online tier, the numpy-free HTTP client, an
offline tier that never imports the online one, and a shared package that imports neither."""

import ast
import subprocess
import sys
from pathlib import Path


def test_online_and_shared_import_no_heavy_stack():
    code = ("import sys, groundrec.online.service, groundrec.online.client, groundrec.online.loadtest, "
            "groundrec.online.holder, groundrec.online.testing, groundrec.shared.cli, groundrec.shared.onnx_encoder; "
            "from groundrec.online.config import ServeConfig; import tempfile; "
            "groundrec.online.service.create_app(ServeConfig(artifacts=tempfile.mkdtemp())); "
            "heavy = [m for m in ('torch', 'transformers', 'ray', 'sentence_transformers') if m in sys.modules]; "
            "print(','.join(heavy)); sys.exit(1 if heavy else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, f"online/shared pulled in: {r.stdout} {r.stderr[-500:]}"


def test_the_http_client_imports_neither_numpy_nor_faiss():
    code = "import sys, groundrec.online.client; print(sorted(m for m in ('numpy', 'faiss') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_offline_tier_never_imports_the_online_tier():
    """The tiers meet in the artifact contract and the scoring core (groundrec.shared)."""
    root = Path(__file__).resolve().parents[1] / "offline"
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py") if "groundrec.online" in p.read_text()]
    assert offenders == []


SHARED = Path(__file__).resolve().parents[1] / "shared"


def _shared_modules() -> list[str]:
    return sorted(".".join(("groundrec", "shared", *p.relative_to(SHARED).with_suffix("").parts))
                  .removesuffix(".__init__") for p in SHARED.rglob("*.py"))


def _imported_names(tree: ast.AST, module: str) -> set[str]:
    """Every module an ``import`` or ``from ... import`` names, relative imports resolved."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(module.split(".")[:-node.level] + ([base] if base else []))
            names |= {base} | {f"{base}.{a.name}" for a in node.names}
    return names


def test_shared_imports_neither_tier_in_its_source():
    """Statically, every import statement of every file under shared/ (functions' too)."""
    offenders = []
    for p in SHARED.rglob("*.py"):
        module = ".".join(("groundrec", "shared", *p.relative_to(SHARED).with_suffix("").parts))
        for name in _imported_names(ast.parse(p.read_text()), module):
            if name.split(".")[:2] in (["groundrec", "online"], ["groundrec", "offline"]):
                offenders.append(f"{p.relative_to(SHARED.parent)}: {name}")
    assert offenders == []


def test_the_rule_reads_every_kind_of_import():
    tree = ast.parse("import groundrec.online.x\nfrom groundrec.offline import y\nfrom ..online import z\n"
                     "def f():\n    from groundrec import online\n")
    names = _imported_names(tree, "groundrec.shared.m")
    assert {"groundrec.online.x", "groundrec.offline.y", "groundrec.online.z", "groundrec.online"} <= names


def test_importing_every_shared_module_loads_neither_tier():
    """Dynamically, in a fresh interpreter: import all of groundrec.shared, then look at sys.modules.
    (The CLI mounts the tiers' commands through entry points when it is *run*, not imported:
    shared/cli.py calls ``mount_tiers`` at import, so it is checked apart.)"""
    modules = [m for m in _shared_modules() if m != "groundrec.shared.cli"]
    assert "groundrec.shared.scoring.ranking" in modules and "groundrec.shared.artifact.layout" in modules
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.startswith(('groundrec.online', 'groundrec.offline'))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"
