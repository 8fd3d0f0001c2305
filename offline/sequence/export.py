"""Export of the profile encoder to ONNX, checked against PyTorch (as ``offline.export`` does
for the text encoder: metadata json beside the .onnx, the TorchScript exporter, a parity
check that refuses to publish a drifting graph).

The directory (read by ``groundrec.shared.sequence_encoder.SequenceEncoder``):
``sequence.onnx`` (embedded histories ``[batch, slots, dim]`` and their valid slots
``[batch, slots]`` -> queries ``[batch, out_dim]``; the batch and the slots, up to ``max_len``,
dynamic: a batch of short histories is fed only its last slots), ``sequence_items.npy``
(the item table the runner gathers from), ``sequence_project.npz`` (``W``, ``b``: a new item's
row from its vectors) and ``sequence.json``.

The parity check runs the runner (numpy gather + onnxruntime) and the PyTorch model on
1,000 histories: real ones when given, random ones otherwise, always with empty, length-1,
over-long (longer than ``max_len``) and unknown-item histories among them.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from groundrec.offline.sequence.model import SequenceModel
from groundrec.shared.errors import UserError
from groundrec.shared.sequence_encoder import (PAD, SEQUENCE_CONFIG, SEQUENCE_ITEMS, SEQUENCE_ONNX, SEQUENCE_PROJECT,
                                               SequenceEncoder)

TOLERANCE = 1e-4
CHECK_HISTORIES = 1000


class SequenceExportError(UserError, RuntimeError):
    """The exported encoder does not reproduce PyTorch within tolerance."""


def check_histories(n_items: int, max_len: int, sample: list | None = None, n: int = CHECK_HISTORIES,
                    seed: int = 0) -> list[np.ndarray]:
    """``n`` histories to check on: the edge cases first (empty, length 1, exactly ``max_len``,
    over-long, only unknown items, unknown items among known ones), then ``sample``'s (or random
    ones of every length up to twice ``max_len``)."""
    rng = np.random.default_rng(seed)
    item = lambda size: rng.integers(0, n_items, size)  # noqa: E731
    edge = [np.zeros(0, np.int64), item(1), item(1), item(max_len), item(max_len + 1), item(3 * max_len + 7),
            np.array([PAD, n_items + 3]), np.concatenate([item(2), [PAD, n_items], item(max_len)])]
    rest = [np.asarray(h, np.int64) for h in (sample or []) if len(h)][: n - len(edge)]
    while len(edge) + len(rest) < n:
        rest.append(item(int(rng.integers(0, 2 * max_len + 1))))
    return edge + rest


def export_sequence_encoder(model: SequenceModel, out_dir: str | Path, sample_histories: list | None = None,
                            tolerance: float = TOLERANCE, threads: int = 1) -> dict:
    """Write the encoder's directory and check it against PyTorch; return the parity report
    (what a manifest records). Raises ``SequenceExportError`` past ``tolerance``."""
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    cfg, encoder = model.cfg, model.encoder
    with torch.no_grad():
        table = model.item_table().numpy()
    np.save(out_dir / SEQUENCE_ITEMS, table)
    np.savez(out_dir / SEQUENCE_PROJECT, W=model.project.weight.detach().numpy(),
             b=model.project.bias.detach().numpy())
    example = (torch.randn(2, cfg.max_len, cfg.dim), torch.ones(2, cfg.max_len))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation chatter
        torch.onnx.export(encoder, example, str(out_dir / SEQUENCE_ONNX), dynamo=False, opset_version=17,
                          input_names=["embedded", "valid"], output_names=["query"],
                          dynamic_axes={"embedded": {0: "batch", 1: "slots"}, "valid": {0: "batch", 1: "slots"},
                                        "query": {0: "batch"}})
    meta = {"kind": "sequence", "max_len": cfg.max_len, "dim": cfg.dim, "out_dim": encoder.out.out_features,
            "n_items": model.n_items, "item_inputs_dim": int(model.inputs.shape[1]), "pad": PAD,
            "empty_history": "zero row", "slots": "dynamic", "files": {"fp32": SEQUENCE_ONNX}, "items": SEQUENCE_ITEMS,
            "project": SEQUENCE_PROJECT, "inputs": ["embedded", "valid"], "output": "query", "config": cfg.to_dict()}
    (out_dir / SEQUENCE_CONFIG).write_text(json.dumps(meta, indent=2))
    report = parity(model, out_dir, sample_histories, tolerance, threads)
    meta["parity"] = report
    (out_dir / SEQUENCE_CONFIG).write_text(json.dumps(meta, indent=2))
    return report


def parity(model: SequenceModel, out_dir: str | Path, sample_histories: list | None = None,
           tolerance: float = TOLERANCE, threads: int = 1) -> dict:
    """The runner against the PyTorch model on ``check_histories``: max abs diff, cosine."""
    histories = check_histories(model.n_items, model.cfg.max_len, sample_histories)
    reference = model.encode(histories)
    exported = SequenceEncoder(out_dir, threads=threads).encode(histories)
    diff = np.abs(exported - reference)
    lengths = np.array([len(h) for h in histories])
    norms = np.linalg.norm(exported, axis=1) * np.linalg.norm(reference, axis=1)
    cos = np.sum(exported * reference, axis=1)[norms > 0] / norms[norms > 0]
    report = {"max_abs_diff": float(diff.max()), "min_cosine": float(cos.min()) if len(cos) else 1.0,
              "n_histories": len(histories), "empty": int((lengths == 0).sum()), "length_1": int((lengths == 1).sum()),
              "over_long": int((lengths > model.cfg.max_len).sum()), "tolerance": tolerance}
    if not report["max_abs_diff"] <= tolerance:  # also NaN
        worst = int(np.nanargmax(diff.max(axis=1))) if np.isfinite(diff).any() else 0
        raise SequenceExportError(
            f"ONNX sequence encoder differs from PyTorch by {report['max_abs_diff']:.2e} > tolerance {tolerance:.0e} "
            f"(worst: history {worst} of length {lengths[worst]}); not publishing it")
    return report
