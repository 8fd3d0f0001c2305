"""The deployment paths that run here: `ray job submit` to a local Ray head, and the Ray
Serve app (deploy/serve.py) called with the Python client, following `versions activate`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml

from groundrec.offline.demo import make_demo_data
from groundrec.offline.job import run_job
from groundrec.online.client import Client, GroundrecError, LocalClient
from groundrec.online.testing import free_port, wait_ready
from groundrec.shared import artifact
from groundrec.offline.config import load_job_config
from helpers import publish_demo

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _env() -> dict:
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
            "RAY_USAGE_STATS_ENABLED": "0"}


def _wait_for(check, timeout=60.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return True
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.25)
    return False


def test_ray_job_submit_runs_the_offline_job_on_a_local_head(tmp_path, tiny_vlm):
    data = make_demo_data(tmp_path / "data", n_items=24, n_users=4)
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({
        "catalog": {"path": str(data["catalog"]), "text_columns": ["title", "description"]},
        "out": str(tmp_path / "artifacts"),
        "vlm": {"model": str(tiny_vlm()), "max_new_tokens": 4, "batch_size": 8},
        "export": {"int8": False},
        "run": {"runner": "ray"},  # joins the cluster the job runs on (RAY_ADDRESS)
    }))
    temp = Path(tempfile.mkdtemp(prefix="grray-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    dashboard = free_port()
    env = _env()
    start = subprocess.run([str(BIN / "ray"), "start", "--head", f"--port={free_port()}", "--node-ip-address=127.0.0.1",
                            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--include-dashboard=true",
                            "--num-cpus=2", f"--temp-dir={temp}", "--disable-usage-stats"],
                           env=env, capture_output=True, text=True, timeout=180)
    try:
        assert start.returncode == 0, start.stderr[-2000:]
        r = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dashboard}",
                            "--working-dir", str(ROOT), "--runtime-env", str(ROOT / "deploy" / "runtime_env.yaml"),
                            "--", "groundrec", "offline", "run", "--config", str(config), "--quiet"],
                           env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert r.returncode == 0 and "succeeded" in r.stdout, (r.stdout + r.stderr)[-4000:]
        current = artifact.current_version(tmp_path / "artifacts")
        assert current is not None
        manifest = yaml.safe_load((tmp_path / "artifacts" / artifact.VERSIONS / current / "manifest.json").read_text())
        assert manifest["counts"]["indexed"] == 24
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory, tiny_vlm):
    published = publish_demo(tmp_path_factory.mktemp("serve"), tiny_vlm())
    overrides = {**published["overrides"], "encoder.template": "{description}"}
    second = run_job(load_job_config(None, overrides), progress=False).version
    return {**published, "first": published["version"], "second": second}


def test_ray_serve_app_answers_like_the_core_and_follows_versions_activate(two_versions, tmp_path):
    import ray
    from ray import serve

    sys.path.insert(0, str(ROOT))
    from deploy.serve import build_app

    artifacts = two_versions["artifacts"]
    os.environ["RAY_AUTH_MODE"] = "disabled"
    temp = Path(tempfile.mkdtemp(prefix="grsrv-", dir="/tmp"))
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(temp), log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app({"artifacts": str(artifacts), "num_replicas": 1, "num_cpus": 0.5,
                             "reload_interval_s": 0.5}), name="groundrec", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, timeout=60)
        client, local = Client(url), LocalClient(artifacts)
        for h in two_versions["histories"][:4]:
            remote, mine = client.recommend(h, k=5), local.recommend(h, k=5)
            assert remote.version == two_versions["second"] == mine.version
            assert [(i.item_id, round(i.score, 5)) for i in remote.items] == \
                   [(i.item_id, round(i.score, 5)) for i in mine.items]
        # Roll back with the CLI: the replica hot-reloads the older version.
        cli = [sys.executable, "-m", "groundrec.shared.cli", "versions"]
        r = subprocess.run([*cli, "activate", two_versions["first"], "--artifacts", str(artifacts)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        h = two_versions["histories"][0]
        assert _wait_for(lambda: client.recommend(h, k=3).version == two_versions["first"])
        # gc keeps the active (older) version even when only one is to be kept, and the newest
        # version that verifies (what a server falls back to); the replica reports what it serves
        def replica_marks() -> set[str]:  # not LocalClient's (this process's) marker
            return {p.read_text().strip() for p in (artifacts / artifact.SERVING).iterdir()
                    if not p.name.startswith(".") and not p.name.endswith(f"-{os.getpid()}")}

        assert _wait_for(lambda: replica_marks() == {two_versions["first"]}, timeout=10)  # written as it swaps
        assert two_versions["first"] in artifact.serving_versions(artifacts)
        r = subprocess.run([*cli, "gc", "--keep", "1", "--artifacts", str(artifacts)], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0
        assert artifact.list_versions(artifacts) == sorted([two_versions["first"], two_versions["second"]])
        assert client.recommend(h, k=3).version == two_versions["first"]
        # A replica that dies is replaced by Ray Serve, and the app answers again.
        def replicas() -> set[str]:
            return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                    if a["namespace"] == "serve" and "groundrec" in a["name"] and "REPLICA" in a["name"].upper()}

        (dead,) = replicas()
        ray.kill(ray.get_actor(dead, namespace="serve"), no_restart=True)
        assert _wait_for(lambda: len(replicas() - {dead}) == 1, 120)
        def answers() -> bool:
            try:
                return client.recommend(h, k=3).version == two_versions["first"]
            except GroundrecError:  # 503 while no replica is up
                return False

        assert _wait_for(answers, 120)
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
