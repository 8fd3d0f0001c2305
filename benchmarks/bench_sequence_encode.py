"""What one ``strategy: sequence`` query costs in the encoder (issue 34's serving goal): the
exported ONNX profile encoder run as the compute process runs it (``SequenceEncoder.encode``,
the numpy gather and onnxruntime, one thread), on batches of histories, with its last block
computing every slot (``Encoder.last_only = False``, the export before 2026-12-04) and only the
query's slot (``last_only = True``, the default), and the latter fed every slot (an export
from before 2026-12-05, whose slots axis was fixed) against fed in groups by history length
(``slot_groups``, the default). Both exports are one random-weight model of the job's default
shape (or ``--dim``/``--blocks``/``--max-len``), checked against PyTorch and against each other;
the arms are timed in alternating rounds. Histories are ``--history`` items long, or with
``--interactions`` as long as that file's users' histories (``--batch`` of them a call, in the
file's order; the items random).

Usage (from the repository root):
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sequence_encode.py [--items 3658] [--batch 16]
      [--history 60 | --interactions ../shared/data/retail/interactions.parquet] [--rounds 7] [--calls 200]
      [--out /tmp/bench_sequence_encode]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=3658, help="catalog size (retail's by default)")
    p.add_argument("--inputs", type=int, default=384 + 2 * 128, help="item input width (content + query + item)")
    p.add_argument("--out-dim", type=int, default=384, help="the index's width")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--batch", type=int, default=16, help="histories per encode call (a compute batch)")
    p.add_argument("--history", type=int, default=60, help="items per history")
    p.add_argument("--interactions", help="histories as long as this file's users' (default: all --history long)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=200, help="encode calls per arm and round")
    p.add_argument("--out", default="/tmp/bench_sequence_encode")
    args = p.parse_args()

    import torch

    from groundrec.offline.sequence.export import export_sequence_encoder
    from groundrec.offline.sequence.model import SequenceConfig, SequenceModel
    from groundrec.shared.sequence_encoder import SequenceEncoder

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    cfg = SequenceConfig(dim=args.dim, blocks=args.blocks, max_len=args.max_len, seed=0)
    torch.manual_seed(0)
    model = SequenceModel(rng.normal(size=(args.items, args.inputs)).astype(np.float32),
                          np.ones(args.items, bool), args.out_dim, cfg)
    arms = {}
    for name, last_only in (("every slot", False), ("the query's slot, fed by length", True)):
        model.encoder.last_only = last_only
        out = Path(args.out) / name.replace(" ", "_").replace("'", "")
        parity = export_sequence_encoder(model, out, threads=1)
        arms[name] = SequenceEncoder(out, threads=1)
        print(f"{name}: exported, parity with PyTorch max abs diff {parity['max_abs_diff']:.1e}", flush=True)
    every = arms["the query's slot, fed every slot"] = SequenceEncoder(out, threads=1)
    every.meta.pop("slots")  # as an export with a fixed slots axis is fed
    if args.interactions:
        from groundrec.online.loadtest import load_histories

        lengths = [len(h) for h in load_histories(args.interactions) if len(h)]
    else:
        lengths = [args.history] * args.batch
    histories = [rng.integers(0, args.items, n) for n in lengths]
    calls = [histories[s:s + args.batch] for s in range(0, len(histories), args.batch)]
    calls = (calls * (args.calls // len(calls) + 1))[:args.calls]
    a, *rest = (arm.encode(histories) for arm in arms.values())
    print(f"the exports' queries differ by at most {max(np.abs(a - b).max() for b in rest):.1e}")
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.rounds):
        for name, arm in arms.items():
            started = time.perf_counter()
            for batch in calls:
                arm.encode(batch)
            times[name].append((time.perf_counter() - started) / args.calls)
    shape = f"of {args.history} items" if not args.interactions else f"as long as {args.interactions}'s users'"
    print(f"\nencode of {args.batch} histories {shape} (max_len {args.max_len}, dim {args.dim}, "
          f"{args.blocks} blocks), one thread, {args.rounds} alternating rounds of {args.calls} calls:")
    medians = {name: float(np.median(t)) for name, t in times.items()}
    for name, t in times.items():
        print(f"  {name:<34} median {medians[name] * 1e3:.3f} ms a call ({medians[name] / args.batch * 1e3:.4f} ms "
              f"a history, {medians[name] / medians['every slot']:.1%} of every slot's); rounds "
              f"{min(t) * 1e3:.3f}-{max(t) * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
