"""Export stage: the sentence-transformers encoder as ONNX (transformer + pooling + L2 norm),
its tokenizer as ``tokenizer.json``, checked against PyTorch; optionally an int8 variant."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from groundrec.offline.config import ExportConfig
from groundrec.shared.artifact import ENCODER_CONFIG, ENCODER_ONNX, ENCODER_TOKENIZER
from groundrec.shared.errors import UserError
from groundrec.shared.onnx_encoder import OnnxTextEncoder

CHECK_TEXTS = [
    "Red cotton t-shirt with short sleeves.",
    "a",
    "Slim-fit jeans in washed stretch denim with a zip fly, five pockets and tapered legs. " * 6,
    "Kleid aus Viskose, gemustert — für den Sommer! 100 % 🌞",
]


class ExportError(UserError, RuntimeError):
    """The exported encoder does not reproduce PyTorch within tolerance."""


def _pooling_mode(model) -> str:
    pooling = model[1]
    mode = getattr(pooling, "pooling_mode", None)
    if mode is None:
        mode = "cls" if getattr(pooling, "pooling_mode_cls_token", False) else "mean"
    if mode not in ("mean", "cls"):
        raise ExportError(f"pooling mode {mode!r} is not supported by the ONNX export (mean or cls)")
    return mode


def _wrapper(model):
    import torch

    transformer = model[0].auto_model
    mode = _pooling_mode(model)

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                      token_type_ids=token_type_ids).last_hidden_state
            if mode == "cls":
                emb = hidden[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(emb, p=2, dim=1)

    return Encoder().eval(), mode


def _compare(a: np.ndarray, b: np.ndarray) -> dict:
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"max_abs_diff": float(np.max(np.abs(a - b))), "min_cosine": float(cos.min()),
            "mean_cosine": float(cos.mean()), "n_texts": int(len(a))}


def export_encoder(model, out_dir: Path, cfg: ExportConfig, sample_texts: list[str]) -> dict:
    """Write the encoder directory; return the report that goes into the manifest."""
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wrapper, mode = _wrapper(model)
    max_len = int(model.max_seq_length)

    tok = model.tokenizer.backend_tokenizer
    tok = type(tok).from_str(tok.to_str())
    tok.no_padding()
    side = getattr(model.tokenizer, "truncation_side", "right")  # where sentence-transformers cuts an over-long text
    tok.enable_truncation(max_length=max_len, direction=side)
    tok.save(str(out_dir / ENCODER_TOKENIZER))
    pad_token = model.tokenizer.pad_token or "[PAD]"
    meta = {"max_seq_length": max_len, "dim": int(model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else model.get_sentence_embedding_dimension()),
            "pooling": mode, "normalized": True, "tokenizer": ENCODER_TOKENIZER, "truncation_side": side,
            "pad_token": pad_token, "pad_id": int(model.tokenizer.pad_token_id or 0), "files": {"fp32": ENCODER_ONNX["fp32"]}}
    (out_dir / ENCODER_CONFIG).write_text(json.dumps(meta, indent=2))

    enc = model.tokenizer(["an example", "a longer example sentence"], padding=True, return_tensors="pt")
    args = (enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids", torch.zeros_like(enc["input_ids"])))
    dyn = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
           "token_type_ids": {0: "batch", 1: "seq"}, "embedding": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about Python branches in the HF model
        torch.onnx.export(wrapper.cpu(), args, str(out_dir / ENCODER_ONNX["fp32"]), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["embedding"], dynamic_axes=dyn)

    # a text past the limit whose halves differ (which side is cut shows); not for a long-context
    # encoder, whose check would then pad a batch to its whole length
    over_long = [" ".join(["red cotton shirt"] * max_len + ["steel engine part"] * max_len)] if max_len <= 1024 else []
    texts = list(CHECK_TEXTS) + over_long + [t for t in sample_texts if t][:60]
    reference = model.encode(texts, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
    fp32 = OnnxTextEncoder(out_dir, "fp32").encode(texts)
    report = {"fp32": _compare(fp32, reference), "tolerance": cfg.tolerance, "pooling": mode}
    if report["fp32"]["max_abs_diff"] > cfg.tolerance:
        raise ExportError(
            f"ONNX encoder differs from PyTorch by {report['fp32']['max_abs_diff']:.2e} > tolerance "
            f"{cfg.tolerance:.0e}; not publishing. Raise export.tolerance only if you accept that drift"
        )
    if cfg.int8:
        report["int8"] = _quantize(out_dir, meta, texts, fp32, cfg)
    return report


def _quantize(out_dir: Path, meta: dict, texts: list[str], fp32: np.ndarray, cfg: ExportConfig) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out_dir / "model.pre.onnx"
    quant_pre_process(str(out_dir / ENCODER_ONNX["fp32"]), str(pre), skip_symbolic_shape=True)
    quantize_dynamic(str(pre), str(out_dir / ENCODER_ONNX["int8"]), per_channel=True, weight_type=QuantType.QInt8)
    pre.unlink()
    meta["files"]["int8"] = ENCODER_ONNX["int8"]
    (out_dir / ENCODER_CONFIG).write_text(json.dumps(meta, indent=2))
    result = _compare(OnnxTextEncoder(out_dir, "int8").encode(texts), fp32)
    if result["min_cosine"] < cfg.int8_min_cosine:  # every text, not the mean: a few far-off ones hid behind it
        (out_dir / ENCODER_ONNX["int8"]).unlink()
        del meta["files"]["int8"]
        (out_dir / ENCODER_CONFIG).write_text(json.dumps(meta, indent=2))
        result["dropped"] = (f"a check text's cosine to fp32 is {result['min_cosine']:.4f} < {cfg.int8_min_cosine} "
                             f"(mean {result['mean_cosine']:.4f})")
    return result
