"""Where the learned profile encoder's training time goes (issue 34): seconds and page faults a
step on the job's own inputs, per loss (``negatives``) and thread count.

The first run runs the job you name after ``--`` up to the encoder's validation training and
keeps that training's arguments in ``--out`` (``inputs.pkl``); later runs reuse them. Each
variant trains ``--warmup`` steps, then ``--warmup + --steps`` steps from the same seed (a 50-user
early-stopping set, scored once each); the difference is the figure, so setup and scoring
cancel. ``--profile`` adds a third run under torch's profiler, its table of the ops' own CPU
time.

Usage (from the repository root):
  OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_sequence_steps.py --out /tmp/steps \\
      [--steps 20] [--variants 0:1,1024:1,0:2,1024:2] [--profile] -- offline run \\
      --catalog ../shared/data/retail/items.parquet --interactions ../shared/data/retail/interactions.parquet \\
      --text-columns title --template "{title}" --runner local --no-export --activate never \\
      --out /tmp/steps/job --sequence true
A variant is NEGATIVES:THREADS[:PRECISION[:DEVICE]] (negatives 0: the full softmax over every
item; precision float32, the default, or bfloat16: the full softmax's products; device cpu, the
default, or cuda).

``--synthetic ITEMS:USERS:LENGTH`` needs no job (nor ``../shared``): random item inputs and index
rows of the retail job's widths (640 and 384) and random histories of LENGTH items, the
encoder's default settings; for timing a device against the CPU on a machine that has only the
repository, e.g. a GPU machine:
  python benchmarks/bench_sequence_steps.py --out /tmp/steps-syn --synthetic 3658:4334:60 \
      --variants 0:2:float32:cpu,0:2:float32:cuda,0:2:bfloat16:cuda
"""

from __future__ import annotations

import argparse
import pickle
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path


def capture(out: Path, job_args: list[str]) -> None:
    """Run the job with the encoder's first training replaced by a pickle of its arguments."""
    import groundrec.offline.sequence.train as train
    from groundrec.shared.cli import app

    def keep(*args, **kwargs):
        kwargs.pop("log", None)
        (out / "inputs.pkl").write_bytes(pickle.dumps((args, kwargs)))
        raise SystemExit(0)

    real, train.train_sequence_encoder = train.train_sequence_encoder, keep
    sys.argv = ["groundrec", *job_args]
    try:
        app()
    except SystemExit:
        pass
    finally:
        train.train_sequence_encoder = real
    if not (out / "inputs.pkl").exists():
        raise SystemExit("the job never trained the encoder: give it interactions and --sequence true")


def synthetic(shape: str) -> tuple:
    """A training's arguments without a job: ``ITEMS:USERS:LENGTH`` (random, seeded)."""
    import numpy as np

    from groundrec.offline.sequence.model import SequenceConfig

    n_items, n_users, length = (int(x) for x in shape.split(":"))
    rng = np.random.default_rng(0)
    histories = [rng.integers(0, n_items, length) for _ in range(n_users)]
    inputs = rng.normal(size=(n_items, 640)).astype(np.float32)
    targets = rng.normal(size=(n_items, 384)).astype(np.float32) / 20
    valid = ([h[:-1] for h in histories[:50]], [[int(h[-1])] for h in histories[:50]])
    return (histories, inputs, np.ones(n_items, bool), SequenceConfig()), {"targets": targets, "valid": valid}


def timed(args, kwargs, steps: int, negatives: int, threads: int, profile: bool = False, precision: str = "float32",
          device: str = "cpu"):
    import torch

    from groundrec.offline.sequence.train import train_sequence_encoder

    histories, inputs, warm, cfg = args
    cfg = replace(cfg, max_steps=steps, negatives=negatives, threads=threads, precision=precision, device=device)
    valid = tuple(part[:50] for part in kwargs["valid"])
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    if profile:
        from torch.profiler import ProfilerActivity
        with torch.profiler.profile(activities=[ProfilerActivity.CPU]) as prof:
            train_sequence_encoder(histories, inputs, warm, cfg, targets=kwargs["targets"], valid=valid)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    else:
        train_sequence_encoder(histories, inputs, warm, cfg, targets=kwargs["targets"], valid=valid)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter() - start, after.ru_minflt - before.ru_minflt


def parsed(variant: str) -> tuple[int, int, str, str]:
    """NEGATIVES:THREADS[:PRECISION[:DEVICE]] -> (negatives, threads, precision, device)."""
    negatives, threads, *rest = variant.split(":")
    precision, device = (rest + ["float32", "cpu"][len(rest):])[:2]
    return int(negatives), int(threads), precision, device


def main() -> None:
    argv = sys.argv[1:]
    job_args = argv[argv.index("--") + 1:] if "--" in argv else []
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--variants", default="0:1,1024:1,0:2,1024:2")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--synthetic", help="ITEMS:USERS:LENGTH: random inputs instead of a job's (no job run)")
    a = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    a.out.mkdir(parents=True, exist_ok=True)
    if a.synthetic:
        args, kwargs = synthetic(a.synthetic)
    else:
        if not (a.out / "inputs.pkl").exists():
            capture(a.out, job_args)
        args, kwargs = pickle.loads((a.out / "inputs.pkl").read_bytes())
    print(f"items {args[1].shape}, index {kwargs['targets'].shape}, {len(args[0])} histories")
    variants = [parsed(v) for v in a.variants.split(",")]
    for device in sorted({v[3] for v in variants}):
        timed(args, kwargs, 1, 0, 1, device=device)  # one-time costs (first allocations, lazy inits) go here
    for negatives, threads, precision, device in variants:
        w_s, w_f = timed(args, kwargs, a.warmup, negatives, threads, precision=precision, device=device)
        s, f = timed(args, kwargs, a.warmup + a.steps, negatives, threads, precision=precision, device=device)
        print(f"negatives {negatives:>5}, {threads} thread(s), {precision}, {device}: {(s - w_s) / a.steps:.3f} s a "
              f"step, {(f - w_f) / a.steps:,.0f} page faults a step", flush=True)
        if a.profile:
            timed(args, kwargs, a.warmup + a.steps, negatives, threads, profile=True, precision=precision,
                  device=device)


if __name__ == "__main__":
    main()
