"""What one ``strategy: sequence`` query costs in the encoder (issue 34's serving goal): the
exported ONNX profile encoder run as the compute process runs it (``SequenceEncoder.encode``,
the numpy gather and onnxruntime, one thread), on batches of histories, with its last block
computing every slot (``Encoder.last_only = False``, the export before 2026-12-04) and only the
query's slot (``last_only = True``, the default). Both exports are one random-weight model of
the job's default shape (or ``--dim``/``--blocks``/``--max-len``), checked against PyTorch and
against each other; the arms are timed in alternating rounds.

Usage (from the repository root):
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sequence_encode.py [--items 3658] [--batch 16]
      [--history 60] [--rounds 7] [--calls 200] [--out /tmp/bench_sequence_encode]
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
    for name, last_only in (("every slot", False), ("the query's slot", True)):
        model.encoder.last_only = last_only
        out = Path(args.out) / name.replace(" ", "_").replace("'", "")
        parity = export_sequence_encoder(model, out, threads=1)
        arms[name] = SequenceEncoder(out, threads=1)
        print(f"{name}: exported, parity with PyTorch max abs diff {parity['max_abs_diff']:.1e}", flush=True)
    histories = [rng.integers(0, args.items, args.history) for _ in range(args.batch)]
    a, b = (arm.encode(histories) for arm in arms.values())
    print(f"the two exports' queries differ by at most {np.abs(a - b).max():.1e}")
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.rounds):
        for name, arm in arms.items():
            started = time.perf_counter()
            for _ in range(args.calls):
                arm.encode(histories)
            times[name].append((time.perf_counter() - started) / args.calls)
    print(f"\nencode of {args.batch} histories of {args.history} items (max_len {args.max_len}, dim {args.dim}, "
          f"{args.blocks} blocks), one thread, {args.rounds} alternating rounds of {args.calls} calls:")
    medians = {name: float(np.median(t)) for name, t in times.items()}
    for name, t in times.items():
        print(f"  {name:<18} median {medians[name] * 1e3:.3f} ms a call ({medians[name] / args.batch * 1e3:.4f} ms a "
              f"history); rounds {min(t) * 1e3:.3f}-{max(t) * 1e3:.3f} ms")
    first, second = medians.values()
    print(f"  the query's slot alone: {second / first:.1%} of every slot's time")


if __name__ == "__main__":
    main()
