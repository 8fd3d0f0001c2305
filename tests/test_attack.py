"""The attack script (benchmarks/attack.py) against a real `groundrec serve` on loopback:
hand-made hostile requests, raw-socket slow and oversized bodies, a bounded schemathesis run.
Every case must get an acceptable answer and the server must survive with no 5xx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import publish_demo

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_vlm):
    return publish_demo(tmp_path_factory.mktemp("attack"), tiny_vlm())


def test_the_attack_finds_no_5xx_and_the_server_survives(published, tmp_path):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("body_timeout_s: 1\nmax_body_bytes: 100000\n")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "attack.py"), "--artifacts",
                        str(published["artifacts"]), "--serve-config", str(cfg), "--examples", "5",
                        "--max-time", "20", "--log", str(tmp_path / "serve.log")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = [ln for ln in r.stdout.splitlines() if ln.startswith("| ") and not ln.startswith("| attack")]
    assert len(table) >= 30 and all(ln.endswith("| yes |") for ln in table)
    assert "schemathesis over OpenAPI" in r.stdout and "body stops half-way" in r.stdout
