"""Torch-free text encoder: ``tokenizers`` + onnxruntime over an exported encoder directory.

The directory (written by ``groundrec.offline.export``) holds ``encoder.json``,
``tokenizer.json`` and one ONNX file per variant (fp32, int8). The model itself does
pooling and L2 normalisation, so ``encode`` returns unit vectors ready for inner product.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from groundrec.shared.artifact import ENCODER_CONFIG
from groundrec.shared.errors import UserError


# Texts per onnxruntime run: on a CPU the cost per text grows with the batch (activations out
# of cache), so batches stay small; sorting by length keeps their padding small too.
BATCH = 4


def encoder_variants(directory: str | Path) -> set[str]:
    """The variants an exported encoder directory holds (fp32, and int8 where the job kept it)."""
    try:
        return set(json.loads((Path(directory) / ENCODER_CONFIG).read_text())["files"])
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"text encoder at {directory}: cannot read {ENCODER_CONFIG} ({e})") from None


class OnnxTextEncoder:
    def __init__(self, directory: str | Path, variant: str = "fp32", threads: int | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.directory = Path(directory)
        self.meta = json.loads((self.directory / ENCODER_CONFIG).read_text())
        files = self.meta["files"]
        if variant not in files:
            raise UserError(f"encoder variant {variant!r} not exported here; available: {sorted(files)}")
        self.tokenizer = Tokenizer.from_file(str(self.directory / self.meta["tokenizer"]))
        self.tokenizer.enable_truncation(max_length=int(self.meta["max_seq_length"]),  # the side PyTorch cuts
                                         direction=self.meta.get("truncation_side", "right"))
        self.tokenizer.no_padding()  # encode pads each batch itself
        self.pad_id = int(self.meta["pad_id"])
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.directory / files[variant]), opts,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.dim = int(self.meta["dim"])

    def encode(self, texts: list[str], batch_size: int = BATCH) -> np.ndarray:
        """Unit vectors for ``texts``, in order. The texts are tokenized together, then run in
        batches of ``batch_size`` texts of similar length (sorted by token count), each padded to
        its own longest: no text pays for a longer one's padding. Small batches are the cheaper
        ones on CPU (ms per text by batch size: docs/benchmarks.md, "Issue 33")."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(list(texts))
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            chunk = [encodings[n] for n in rows]
            width = max(len(e.ids) for e in chunk)
            feed = {name: np.full((len(chunk), width), fill, dtype=np.int64)
                    for name, fill in (("input_ids", self.pad_id), ("attention_mask", 0), ("token_type_ids", 0))}
            for n, e in enumerate(chunk):
                feed["input_ids"][n, :len(e.ids)] = e.ids
                feed["attention_mask"][n, :len(e.ids)] = e.attention_mask
                feed["token_type_ids"][n, :len(e.ids)] = e.type_ids
            out[rows] = self.session.run(None, {k: feed[k] for k in self.inputs})[0]
        return out
