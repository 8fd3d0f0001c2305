import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from groundrec.offline.runners import BATCHES_PER_BLOCK, LocalRunner, open_runner
from groundrec.shared.errors import UserError


class Double:
    def __init__(self, factor: int = 2):
        self.factor = factor

    def __call__(self, batch):
        return {"row": batch["row"], "value": batch["row"] * self.factor, "n": np.full(len(batch["row"]), len(batch["row"]))}


def test_local_runner_calls_mapper_per_batch():
    out = list(LocalRunner().map(pa.table({"row": np.arange(10)}), Double, {"factor": 3}, batch_size=4))
    assert [len(b["row"]) for b in out] == [4, 4, 2]
    assert np.concatenate([b["value"] for b in out]).tolist() == [3 * i for i in range(10)]
    assert list(LocalRunner().map(pa.table({"row": np.arange(0)}), Double, {}, batch_size=4)) == []


def where_and_what(x: int, fail: bool = False) -> tuple[int, int]:
    if fail:
        raise UserError(f"cannot use {x}")
    return os.getpid(), 2 * x


def test_local_runner_runs_a_task_in_this_process():
    assert LocalRunner().run_task(where_and_what, (3,), {}) == (os.getpid(), 6)


def test_ray_runner_streams_small_blocks_runs_tasks_and_shuts_down(tmp_path):
    import ray

    table = pa.table({"row": np.arange(100)})
    work = tmp_path / "a-work-dir-too-long-for-ray-sockets"
    before = set(Path("/tmp").glob("grray-*"))
    with open_runner("ray", None, work) as runner:
        (temp,) = set(Path("/tmp").glob("grray-*")) - before  # a throwaway folder: the work dir is too long for sockets
        out = list(runner.map(table, Double, {}, batch_size=5))
        pid, doubled = runner.run_task(where_and_what, (21,), {}, num_cpus=64)  # more CPUs than there are: capped
        assert doubled == 42 and pid != os.getpid()  # a Ray worker's result
        with pytest.raises(UserError, match="^cannot use 5$"):  # our error as itself, not Ray's wrapper
            runner.run_task(where_and_what, (5,), {"fail": True})
    assert not ray.is_initialized()
    # The session's logs are kept in the work dir, where the job says (the throwaway folder goes
    # when the process exits: test_a_throwaway_ray_folder_is_gone_when_the_process_ends).
    assert runner.log_dir.parent == work / "ray-logs" and runner.log_dir.is_dir() and any(runner.log_dir.iterdir())
    assert temp.exists()
    # a second session in this process: Ray Data's loggers open its logs, not the removed folder's
    with open_runner("ray", None, work) as again:
        assert sorted(np.concatenate([b["row"] for b in again.map(table, Double, {}, batch_size=50)]).tolist()) == list(
            range(100))
    rows = np.concatenate([b["row"] for b in out])
    assert sorted(rows.tolist()) == list(range(100))
    assert np.array_equal(np.concatenate([b["value"] for b in out]), rows * 2)
    # Results come back block by block, a few batches each: the job writes the cache per block.
    assert max(len(b["row"]) for b in out) <= 5 * BATCHES_PER_BLOCK and len(out) >= 100 // (5 * BATCHES_PER_BLOCK)
    assert max(np.max(b["n"]) for b in out) <= 5


def test_a_cpu_actor_holds_its_share_of_the_cluster_but_never_more_than_a_node_has():
    from groundrec.offline.runners import actor_cpus

    assert actor_cpus(12, 12, 1) == 12  # one node: the whole of it
    assert actor_cpus(12, 8, 1) == 8  # a head of 4 and a worker of 8: 12 fits on neither node
    assert actor_cpus(12, 8, 4) == 3 and actor_cpus(2, 2, 4) == 1  # shares, at least one CPU


def test_ray_sessions_in_a_work_dir_keep_the_newest(tmp_path):
    from groundrec.offline.runners import KEPT_RAY_LOGS, _prune

    for n in range(KEPT_RAY_LOGS + 3):
        d = tmp_path / f"session_2026-12-0{n}_00-00-00"
        d.mkdir()
        os.utime(d, (1_000_000 + n, 1_000_000 + n))
    (tmp_path / "sockets").mkdir()  # not a session: left alone
    _prune(tmp_path, "session_2*")
    assert sorted(d.name for d in tmp_path.iterdir()) == [
        f"session_2026-12-0{n}_00-00-00" for n in range(3, KEPT_RAY_LOGS + 3)] + ["sockets"]


def test_a_throwaway_ray_folder_is_gone_when_the_process_ends(tmp_path):
    """A job's /tmp/grray-* folder was left behind, one a run."""
    import subprocess
    import sys

    code = ("from pathlib import Path; from groundrec.offline.runners import open_runner\n"
            f"before = set(Path('/tmp').glob('grray-*'))\n"
            f"with open_runner('ray', None, Path({str(tmp_path / 'a-work-dir-too-long-for-ray-sockets')!r})): pass\n"
            "print(*(set(Path('/tmp').glob('grray-*')) - before))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    (made,) = done.stdout.split()
    assert made.startswith("/tmp/grray-") and not Path(made).exists()
    assert any((tmp_path / "a-work-dir-too-long-for-ray-sockets" / "ray-logs").iterdir())
