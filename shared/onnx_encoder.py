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
        self.tokenizer.enable_truncation(max_length=int(self.meta["max_seq_length"]))
        self.tokenizer.enable_padding(pad_id=int(self.meta["pad_id"]), pad_token=self.meta["pad_token"])
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.directory / files[variant]), opts,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.dim = int(self.meta["dim"])

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            chunk = self.tokenizer.encode_batch(list(texts[start:start + batch_size]))
            feed = {
                "input_ids": np.array([e.ids for e in chunk], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in chunk], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in chunk], dtype=np.int64),
            }
            out[start:start + len(chunk)] = self.session.run(None, {k: feed[k] for k in self.inputs})[0]
        return out
