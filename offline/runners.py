"""Where batch mappers run: a Ray Data pipeline (local or cluster) or in-process.

Both runners take an Arrow table and a mapper class and yield the mapper's output
batches (dict of column -> numpy array), so every stage gives the same result either way;
and both run one function as a task (``run_task``: a Ray task with the CPUs and GPUs it asks
for, or a call in this process), as the learn stage trains its encoder.
"""

from __future__ import annotations

import atexit
import inspect
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa

from groundrec.shared.errors import UserError

Batch = dict[str, np.ndarray]
BATCHES_PER_BLOCK = 4


def to_numpy_batch(table: pa.Table) -> Batch:
    return {name: np.array(table.column(name).to_pylist(), dtype=object) if pa.types.is_string(table.column(name).type)
            or pa.types.is_large_string(table.column(name).type) else table.column(name).to_numpy(zero_copy_only=False)
            for name in table.column_names}


class LocalRunner:
    """Runs mappers in this process, one instance per stage, batch by batch."""

    name = "local"

    def gpus(self) -> float:
        try:
            import torch

            return float(torch.cuda.device_count())
        except ImportError:
            return 0.0

    def run_task(self, fn, args: tuple, kwargs: dict, num_cpus: float = 1, num_gpus: float = 0):
        """``fn(*args, **kwargs)`` here, in this process."""
        return fn(*args, **kwargs)

    def map(self, table: pa.Table, mapper: type, kwargs: dict, batch_size: int, concurrency: int = 1,
            num_gpus: float = 0) -> Iterator[Batch]:
        if table.num_rows == 0:
            return
        fn = mapper(**kwargs)
        for start in range(0, table.num_rows, batch_size):
            yield fn(to_numpy_batch(table.slice(start, batch_size)))


class RayRunner:
    """A Ray Data pipeline per stage: from_arrow -> map_batches(actor pool) -> streamed back."""

    name = "ray"

    def __init__(self, cpus_total: float, log_dir: Path | None = None, restart_actors: bool = True,
                 cpus_node: float | None = None):
        self.cpus_total = cpus_total
        self.cpus_node = cpus_node or cpus_total  # the most CPUs one node has: no actor or task can hold more
        self.log_dir = log_dir  # Ray's session logs, when Ray was started here
        self.restart_actors = restart_actors

    def gpus(self) -> float:
        import ray

        return float(ray.cluster_resources().get("GPU", 0))

    def run_task(self, fn, args: tuple, kwargs: dict, num_cpus: float = 1, num_gpus: float = 0):
        """``fn(*args, **kwargs)`` as one Ray task holding ``num_cpus`` (at most one node's)
        and ``num_gpus``, not retried; our own errors come back as themselves."""
        import ray

        task = ray.remote(fn).options(num_cpus=min(float(num_cpus), self.cpus_node), num_gpus=num_gpus,
                                      max_retries=0)
        try:
            return ray.get(task.remote(*args, **kwargs))
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, UserError):
                raise e.cause from None
            raise

    def map(self, table: pa.Table, mapper: type, kwargs: dict, batch_size: int, concurrency: int = 1,
            num_gpus: float = 0) -> Iterator[Batch]:
        import ray

        if table.num_rows == 0:
            return
        # Blocks of a few batches: results stream back (and get written) block by block,
        # so small blocks bound what a crash can lose; enough blocks keep every actor busy.
        step = max(1, min(batch_size * BATCHES_PER_BLOCK, -(-table.num_rows // concurrency)))
        ds = ray.data.from_arrow([table.slice(i, step) for i in range(0, table.num_rows, step)])
        remote = {"num_gpus": num_gpus} if num_gpus else {}
        # Torch in an actor uses as many threads as the actor has CPUs: give each its share.
        remote["num_cpus"] = actor_cpus(self.cpus_total, self.cpus_node, concurrency) if not num_gpus else 1
        with warnings.catch_warnings():
            if not self.restart_actors and _takes_remote_args(ds.map_batches):
                # Ray Data restarts a dead actor (max_restarts=-1) and passes its constructor
                # arguments through the object store, so Ray's core worker prints an error for
                # every actor it starts (ray-project/ray#53727). On one machine a restart buys
                # nothing (what killed the actor kills it again; a rerun resumes from the cache):
                # none, and no such line. max_restarts has no named parameter: it goes through
                # ray_remote_args, deprecated since Ray 2.60 (and not passed once Ray drops them).
                remote["max_restarts"] = 0
                warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated", DeprecationWarning)
            ds = ds.map_batches(mapper, fn_constructor_kwargs=kwargs, batch_size=batch_size, batch_format="numpy",
                                compute=ray.data.ActorPoolStrategy(size=concurrency), **remote)
        yield from ds.iter_batches(batch_size=None, batch_format="numpy")


def actor_cpus(cpus_total: float, cpus_node: float, concurrency: int) -> float:
    """CPUs each of ``concurrency`` CPU actors holds: its share of the cluster's, at most what
    one node has (a share of several nodes' CPUs fits on none of them, and Ray waits for ever),
    at least 1."""
    return max(1.0, min(cpus_total // concurrency, cpus_node))


def _takes_remote_args(map_batches) -> bool:
    """Whether ``map_batches`` still takes Ray remote options as extra keyword arguments."""
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(map_batches).parameters.values())


def _ray_temp_dir(work_dir: Path) -> tuple[str, bool]:
    """Ray's temp folder and whether it is a throwaway one: ``work_dir/ray``, or where that path
    is too long for Ray's Unix sockets (107 bytes), a short folder under /tmp."""
    candidate = Path(work_dir) / "ray"
    if len(str(candidate.resolve())) <= 40:
        candidate.mkdir(parents=True, exist_ok=True)
        return str(candidate.resolve()), False
    return tempfile.mkdtemp(prefix="grray-", dir="/tmp"), True


KEPT_RAY_LOGS = 5  # Ray sessions (their logs) a work dir keeps, in ray/ or, from a throwaway /tmp folder, in ray-logs/


def _prune(folder: Path, pattern: str) -> None:
    """Of the folders ``pattern`` matches in ``folder``, the newest ``KEPT_RAY_LOGS`` kept."""
    for old in sorted(folder.glob(pattern), key=lambda d: d.stat().st_mtime)[:-KEPT_RAY_LOGS]:
        shutil.rmtree(old, ignore_errors=True)


def _keep_logs(temp_dir: str, work_dir: Path) -> Path | None:
    """The session's logs of a throwaway Ray folder copied to ``work_dir/ray-logs/<session>``
    (the newest ``KEPT_RAY_LOGS`` kept), and the folder removed when this process exits: a
    nightly job leaves no folder behind in /tmp. (Not at once: Ray keeps loggers pointing into
    it, and a later Ray session in the same process could still write there.) The copy's path
    (None: no logs)."""
    logs = Path(temp_dir) / "session_latest" / "logs"
    try:
        if logs.is_dir():
            keep = Path(work_dir) / "ray-logs"
            dest = keep / logs.parent.resolve().name
            shutil.copytree(logs, dest, dirs_exist_ok=True, ignore_dangling_symlinks=True,
                            ignore=shutil.ignore_patterns("*.sock", "*.pid"))
            _prune(keep, "*")
            return dest
        return None
    except OSError:
        return None
    finally:
        atexit.register(shutil.rmtree, temp_dir, True)


def _release_session_logs() -> None:
    """Ray Data's log handlers in this process keep the file of the session they first wrote
    in: closed when a session ends (they open the next session's when next used), so a later
    session in this process neither writes into the old one's logs nor fails on its removed
    folder."""
    try:
        from ray.data._internal.logging import SessionFileHandler
    except ImportError:  # another Ray: nothing of the kind to release
        return
    for name in [n for n in list(logging.root.manager.loggerDict) if n == "ray" or n.startswith("ray.")]:
        for handler in list(logging.getLogger(name).handlers):
            if isinstance(handler, SessionFileHandler):
                handler.close()


def _console_quiet() -> None:
    """Ray Data's INFO lines interleave with our progress bars: keep them in Ray's log files
    (the session's logs/ folder) and show only errors on the console."""
    for name in ("ray", "ray.data"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.ERROR)


@contextmanager
def open_runner(kind: str, address: str | None, work_dir: Path, num_cpus: int | None = None):
    """Yield a runner; for Ray, start it in-process (or join ``address``) and always shut it down."""
    if kind == "local":
        yield LocalRunner()
        return
    import ray

    started_here, log_dir, throwaway = False, None, None
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            # A private in-process cluster: no token file in ~/.ray (set RAY_AUTH_MODE to override).
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            temp_dir, throwaway = _ray_temp_dir(work_dir)
            try:
                # num_cpus None: Ray's own count, which reads a container's CPU quota (os.cpu_count() does not)
                ray.init(num_cpus=num_cpus, include_dashboard=False, _temp_dir=temp_dir,
                         logging_level=logging.WARNING, log_to_driver=False, configure_logging=True)
            except BaseException:
                ray.shutdown()
                if throwaway:
                    _keep_logs(temp_dir, work_dir)
                raise
            session = (Path(temp_dir) / "session_latest").resolve().name
            # Where the logs are once the job is over (a throwaway folder's are copied there).
            log_dir = Path(work_dir) / "ray-logs" / session if throwaway else Path(temp_dir) / session / "logs"
        started_here = True
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    _console_quiet()
    try:
        # On a cluster (joined: no log_dir here) a node may go away, and its actors are restarted
        # elsewhere (Ray Data's default); Ray started in this process is one machine.
        node = max((float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=1.0)
        yield RayRunner(float(ray.cluster_resources().get("CPU", 1)), log_dir, restart_actors=log_dir is None,
                        cpus_node=node)
    finally:
        if started_here:
            ray.shutdown()
            _release_session_logs()
            if throwaway:
                _keep_logs(temp_dir, work_dir)
            elif throwaway is False:  # <work_dir>/ray: one session folder a run, the newest kept
                _prune(Path(temp_dir), "session_2*")
