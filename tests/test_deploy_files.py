"""Deployment files: every YAML parses and validates, Dockerfiles and schedules reference files
that exist and commands/options the CLI has. (No Docker engine or Kubernetes here.)"""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import typer.main
import yaml

from groundrec.shared.cli import app
from groundrec.offline.config import JobConfig
from groundrec.online.config import ServeConfig

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.31"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def assert_cli_accepts(argv: list[str]) -> None:
    """``argv`` (after "groundrec") names an existing command and only options it has."""
    cmd = typer.main.get_command(app)
    words = list(argv)
    while words and hasattr(cmd, "commands") and words[0] in cmd.commands:
        cmd = cmd.commands[words.pop(0)]
    assert not hasattr(cmd, "commands"), f"no such command: groundrec {' '.join(argv)}"
    known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
    used = {w.split("=")[0] for w in words if w.startswith("-")}
    assert used <= known, f"groundrec {cmd.name}: unknown option(s) {used - known}"


def _groundrec_calls(text: str) -> list[list[str]]:
    """Every `groundrec ...` invocation in a shell line / command string."""
    calls = []
    for segment in re.split(r"&&|\|\||;|>>|\n", text):
        words = shlex.split(segment, comments=True) if segment.strip() else []
        for n, w in enumerate(words):
            if w == "groundrec" or w.endswith("bin/groundrec"):
                calls.append(words[n + 1:])
                break
    return calls


def test_cli_check_itself_catches_unknown_commands_and_options():
    assert_cli_accepts(["offline", "run", "--config", "x.yaml", "--quiet"])
    with pytest.raises(AssertionError, match="unknown option"):
        assert_cli_accepts(["offline", "run", "--nonsense"])
    with pytest.raises(AssertionError, match="no such command"):
        assert_cli_accepts(["offline"])


def test_every_yaml_file_parses():
    for f in sorted(DEPLOY.rglob("*.yaml")):
        assert _docs(f), f"{f} is empty"


def test_standard_kubernetes_manifests_validate_against_the_schemas():
    checked = 0
    for f in sorted((DEPLOY / "kuberay").glob("*.yaml")):
        for doc in _docs(f):
            if doc["apiVersion"].startswith("ray.io/"):
                continue
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            checked += 1
    assert checked >= 2  # the ConfigMap and the submit CronJob
    bad = _docs(DEPLOY / "kuberay" / "cronjob-submit.yaml")[0]
    bad["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = 7
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def _rayjob_spec_ok(spec: dict) -> None:
    assert spec["entrypoint"].startswith("groundrec offline run")
    assert_cli_accepts(shlex.split(spec["entrypoint"])[1:])
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["backoffLimit"] == 0  # exit 3 (the gate) or 2 (input) fails again on a rerun: no retry
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] and head["resources"]["limits"]["memory"]
    for group in spec["rayClusterSpec"]["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        if group["minReplicas"] < group["maxReplicas"]:  # a range means nothing without the autoscaler
            assert spec["rayClusterSpec"].get("enableInTreeAutoscaling") is True
        assert group["template"]["spec"]["containers"][0]["image"]
    assert yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]


def test_kuberay_rayjob_and_raycronjob_structure_and_job_config():
    rayjob, configmap = _docs(DEPLOY / "kuberay" / "rayjob.yaml")
    assert (rayjob["apiVersion"], rayjob["kind"]) == ("ray.io/v1", "RayJob")
    _rayjob_spec_ok(rayjob["spec"])
    # the job's config is the same typed config the CLI uses, and it is valid
    job = JobConfig.model_validate(yaml.safe_load(configmap["data"]["job.yaml"]))
    assert job.run.runner == "ray" and str(job.out).startswith("/mnt/shared")
    assert job.interactions.path.startswith("redis://")  # the replicas' shared event store
    assert rayjob["spec"]["entrypoint"].endswith("/etc/groundrec/job.yaml")
    (cron,) = _docs(DEPLOY / "kuberay" / "raycronjob.yaml")
    assert (cron["apiVersion"], cron["kind"]) == ("ray.io/v1", "RayCronJob")
    assert len(cron["spec"]["schedule"].split()) == 5
    # RayCronJobSpec (KubeRay 1.6-1.7) has jobTemplate, schedule, suspend (timeZone from 1.7): a field it lacks
    # fails kubectl's strict validation, every night
    assert set(cron["spec"]) <= {"jobTemplate", "schedule", "suspend"}
    _rayjob_spec_ok(cron["spec"]["jobTemplate"])
    submit = _docs(DEPLOY / "kuberay" / "cronjob-submit.yaml")[0]
    command = submit["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["ray", "job", "submit"]
    assert_cli_accepts(command[command.index("--") + 2:])


def test_runtime_env_is_a_valid_ray_runtime_env():
    from ray.runtime_env import RuntimeEnv

    data = yaml.safe_load((DEPLOY / "runtime_env.yaml").read_text())
    env = RuntimeEnv(**data)
    assert ".venv" in env["excludes"] and "pip" not in data  # the image carries the dependencies
    assert env["env_vars"] == {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}  # strings, as Ray needs them
    assert all(isinstance(v, str) for v in data["env_vars"].values())


def test_serve_config_builds_the_same_online_app():
    import importlib

    (app_cfg,) = yaml.safe_load((DEPLOY / "serve.yaml").read_text())["applications"]
    module, attr = app_cfg["import_path"].split(":")
    builder = getattr(importlib.import_module(module), attr)
    args = dict(app_cfg["args"])
    autoscaling = args.pop("autoscaling_config")
    assert autoscaling["min_replicas"] <= autoscaling["max_replicas"]
    args.pop("num_cpus")
    cfg = ServeConfig.model_validate(args)
    # the replicas write where the nightly job reads (no store at all with 'auto' beside a URI)
    job = yaml.safe_load(_docs(DEPLOY / "kuberay" / "rayjob.yaml")[1]["data"]["job.yaml"])
    assert cfg.events_url() == job["interactions"]["path"]
    application = builder(app_cfg["args"])
    assert type(application).__name__ == "Application"
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(yaml.safe_load((DEPLOY / "serve.yaml").read_text()))  # what `serve deploy` checks
    # ... and the Ray nodes' image can import the app: its file copied under /app, /app on PYTHONPATH
    image = (DEPLOY / "offline.Dockerfile").read_text()
    source = module.replace(".", "/") + ".py"
    assert f"COPY {source} ./{source}" in image and re.search(r"^ENV .*PYTHONPATH=/app\b", image, re.M)
    with pytest.raises(ValueError, match="encoder_variant"):
        builder({"artifacts": "/x", "encoder_variant": "fp64"})


@pytest.mark.parametrize("name", ["offline.Dockerfile", "online.Dockerfile"])
def test_dockerfiles_copy_files_that_exist_and_run_cli_commands(name, tmp_path):
    text = (DEPLOY / name).read_text()
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        *sources, _dest = line.split()
        for s in sources:
            assert (ROOT / s).exists(), f"{name}: COPY {s} does not exist"
            if (ROOT / s).is_dir():
                shutil.copytree(ROOT / s, tmp_path / s, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                (tmp_path / s).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / s, tmp_path / s)
    # What the image copies is enough to build the package (a file the build needs left out failed every image).
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "wheel"), str(tmp_path)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    assert list((tmp_path / "wheel").glob("groundrec-*.whl"))
    assert re.search(r"^USER groundrec$", text, re.M)  # not root
    assert 'ENTRYPOINT ["groundrec"]' in text
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M).group(1)
    assert_cli_accepts(yaml.safe_load(cmd))
    if name == "online.Dockerfile":
        assert "/readyz" in re.search(r"HEALTHCHECK[\s\S]+?\n\S", text).group(0)
        assert re.search(r"pip install \.\s*$", text, re.M)  # no extras: no torch, no ray
    else:
        assert "ARG BASE_IMAGE" in text and ".[offline,serve]" in text


def test_compose_runs_the_job_once_then_serves_its_artifacts():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    off, on = compose["services"]["offline"], compose["services"]["online"]
    for service in (off, on):
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        assert_cli_accepts(service["command"])
    assert off["restart"] == "no"
    assert on["depends_on"]["offline"]["condition"] == "service_completed_successfully"
    assert any(v.startswith("artifacts:/artifacts") for v in off["volumes"])
    assert "artifacts:/artifacts:ro" in on["volumes"] and "artifacts" in compose["volumes"]
    # read-only artifacts: the event store is given a writable volume of its own
    events = ServeConfig.model_validate({"artifacts": "/artifacts", "events": on["command"][on["command"].index("--events") + 1]})
    assert events.events_url().startswith("sqlite:////events/") and "events:/events" in on["volumes"]
    assert "events" in compose["volumes"]


def test_single_machine_schedules_call_real_commands():
    calls = []
    for f in ("groundrec.cron", "systemd/groundrec-offline.service"):
        lines = [line.split("=", 1)[1] if line.startswith("Exec") else line
                 for line in (DEPLOY / f).read_text().splitlines() if not line.startswith("#")]
        found = _groundrec_calls("\n".join(line for line in lines if "bin/groundrec " in line))
        assert found, f
        calls += found
    for c in calls:
        assert_cli_accepts(c)
    assert any(c[:2] == ["versions", "gc"] for c in calls) and any(c[:2] == ["offline", "run"] for c in calls)
    # the nightly job learns from the event log the server writes: exported, then read as interactions
    exports = [c for c in calls if c[:2] == ["events", "export"]]
    runs = [c for c in calls if c[:2] == ["offline", "run"]]
    assert len(exports) == 2 and all(c[c.index("--out") + 1] == r[r.index("--interactions") + 1]
                                     for c, r in zip(exports, runs))
    # an export is no store: the live items are read from the store the export reads, or never absorbed
    assert all(r[r.index("--live-items") + 1] == c[c.index("--events") + 1] for c, r in zip(exports, runs))
    # versions are collected after every run, a failed or gated one too (ExecStartPost runs after success only)
    assert "ExecStopPost=/srv/groundrec/.venv/bin/groundrec versions gc" in (DEPLOY / "systemd" / "groundrec-offline.service").read_text()
    timer = (DEPLOY / "systemd" / "groundrec-offline.timer").read_text()
    assert "OnCalendar=" in timer and "Persistent=true" in timer


def test_the_hm_serve_config_is_a_serve_config_with_one_item_per_title():
    """deploy/hm.serve.yaml as `groundrec serve --config` reads it (the CLI adds --artifacts),
    with the max_per default the H&M lists need, on the title column the H&M job publishes."""
    data = yaml.safe_load((DEPLOY / "hm.serve.yaml").read_text())
    cfg = ServeConfig.model_validate({**data, "artifacts": "artifacts/hm"})
    assert cfg.max_per == {"title": 1}
    job = yaml.safe_load((DEPLOY / "hm.job.yaml").read_text())
    assert "title" in job["catalog"]["text_columns"]  # the column max_per names is in the published items
    assert str(cfg.interactions) == job["interactions"]["path"]
    assert cfg.encoder_variant == "int8" and JobConfig.model_fields["export"].default_factory().int8
    with pytest.raises(ValueError, match="max_per"):
        ServeConfig.model_validate({**data, "artifacts": "a", "max_per": {"title": 0}})
