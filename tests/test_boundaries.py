"""What each tier may import: the torch-free online tier, the numpy-free HTTP client, and
an offline tier that never imports the online one."""

import subprocess
import sys
from pathlib import Path


def test_online_and_shared_import_no_heavy_stack():
    code = ("import sys, groundrec.online.service, groundrec.online.client, groundrec.online.loadtest, "
            "groundrec.online.holder, groundrec.shared.cli, groundrec.shared.onnx_encoder; "
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
