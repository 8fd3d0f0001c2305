"""Small helpers shared by tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import io
import logging
import time
from contextlib import contextmanager

from groundrec.online.testing import running  # noqa: F401  (re-exported: tests import it from here)


def jpeg_bytes(colour=(200, 30, 40), size=(64, 96)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG")
    return buf.getvalue()


def publish_demo(root, vlm_dir, n_items: int = 40, n_users: int = 8) -> dict:
    """Demo data under ``root`` and one version published from it by the real offline job
    (in-process runner, tiny VLM). Returns the job overrides (to publish more), the
    artifacts folder, the interactions file and each user's history."""
    import pyarrow.parquet as pq

    from groundrec.offline.demo import make_demo_data
    from groundrec.offline.job import run_job
    from groundrec.offline.config import load_job_config

    paths = make_demo_data(root / "data", n_items=n_items, n_users=n_users)
    overrides = {"catalog.path": str(paths["catalog"]), "out": str(root / "artifacts"), "vlm.model": str(vlm_dir),
                 "vlm.max_new_tokens": 4, "run.runner": "local", "export.int8": False,
                 "catalog.text_columns": ["title", "description", "category", "colour"]}
    version = run_job(load_job_config(None, overrides), progress=False).version
    histories: dict[str, list[str]] = {}
    for r in pq.read_table(paths["interactions"]).to_pylist():
        histories.setdefault(r["user_id"], []).append(r["item_id"])
    return {"root": root, "artifacts": root / "artifacts", "overrides": overrides, "version": version,
            "histories": list(histories.values()), "interactions": paths["interactions"]}


class RedisServer:
    """A redis-server process for tests: started on a free port, stoppable and restartable
    on the same port and data directory (what a restart must not lose)."""

    def __init__(self, directory):
        from groundrec.online.testing import free_port

        self.dir = directory
        self.port = free_port()
        self.proc = None

    @staticmethod
    def binary():
        import shutil

        return shutil.which("redis-server")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import subprocess
        import time

        import redis

        self.proc = subprocess.Popen([self.binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "always",
                                      "--save", "", "--protected-mode", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}")
                time.sleep(0.05)

    def stop(self, hard: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            (self.proc.kill if hard else self.proc.terminate)()
            self.proc.wait(10)
        self.proc = None

    def flush(self) -> None:
        import redis

        redis.Redis(port=self.port).flushall()


def wait_for_standby(serving, timeout_s: float = 60.0) -> None:
    """Until a ``compute.RemoteServing``'s standby compute process (loaded in the background) is up."""
    deadline = time.monotonic() + timeout_s
    while serving.standby is None or not serving.standby.alive:
        assert time.monotonic() < deadline, "no standby compute process was started"
        time.sleep(0.05)


@contextmanager
def logged(name: str, level: int = logging.WARNING):
    """The records ``name``'s logger emits at ``level`` or above meanwhile (a list), read by a
    handler on the logger itself: another library's logging setup may have disabled it, or the
    records may not reach the root logger pytest's caplog reads."""
    logger, records = logging.getLogger(name), []
    handler = logging.Handler(level)
    handler.emit = records.append
    was, logger.disabled = logger.disabled, False
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.disabled = was
