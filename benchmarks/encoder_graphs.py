"""Encoder graphs for issue 33's comparison (``bench_items.py --parts 0 --encoders``): is a fused
graph a faster text encoder on CPU?

The sentence-transformer is exported by the job's own ``export_encoder`` (fp32 checked against
PyTorch, int8 beside it), with the transformer's attention as ``eager`` (matmul, softmax: the
pattern onnxruntime's fusions know) where the job exports ``sdpa`` (the model's default:
scaled_dot_product_attention, traced with a Where/IsNaN chain per layer that no fusion
matches). That graph is then fused by ``onnxruntime.transformers.optimizer.optimize_model``
(model_type bert: Attention, EmbedLayerNormalization, SkipLayerNormalization, BiasGelu), checked
against PyTorch on H&M texts like the export, and its int8 quantized from the fused graph (the
export's settings; symbolic shape inference, which knows the fused ops). Writes two encoder
directories ``OnnxTextEncoder`` loads, OUT/eager and OUT/fused, and prints the fused operators
and each graph's distance to PyTorch.

    python benchmarks/encoder_graphs.py --artifacts DIR --out OUT [--catalog FILE] [--texts 128]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_items import Texts  # noqa: E402
from common import HM  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", required=True, help="a published H&M version (CURRENT): its template, its "
                    "encoder's name")
    ap.add_argument("--out", required=True)
    ap.add_argument("--catalog", default=str(HM / "items.parquet"))
    ap.add_argument("--texts", type=int, default=128, help="H&M texts the fused graph is checked on")
    args = ap.parse_args()

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from onnxruntime.transformers.optimizer import optimize_model

    from groundrec.offline.config import ExportConfig
    from groundrec.offline.encode import load_sentence_transformer
    from groundrec.offline.export import _compare, export_encoder
    from groundrec.online.version import load_version
    from groundrec.shared import artifact
    from groundrec.shared.onnx_encoder import OnnxTextEncoder
    from groundrec.shared.text import render

    path = artifact.locate(args.artifacts, artifact.current_version(args.artifacts))
    manifest = load_version(path).manifest
    texts = [render(manifest.text_template, row) for row in Texts(Path(args.catalog)).take(args.texts)]
    enc = manifest.models["encoder"]
    model = load_sentence_transformer(enc["name"], enc.get("max_seq_length"))
    transformer = model[0].auto_model
    transformer.set_attn_implementation("eager")
    out = Path(args.out)
    eager, fused = out / "eager", out / "fused"
    report = export_encoder(model, eager, ExportConfig(), texts)
    print(f"eager export (the job's export_encoder): fp32 max abs diff to PyTorch "
          f"{report['fp32']['max_abs_diff']:.2e}, int8 mean cosine to fp32 {report['int8']['mean_cosine']:.4f}",
          flush=True)

    shutil.rmtree(fused, ignore_errors=True)
    fused.mkdir(parents=True)
    meta = json.loads((eager / artifact.ENCODER_CONFIG).read_text())
    shutil.copy(eager / meta["tokenizer"], fused / meta["tokenizer"])
    conf = transformer.config
    own = artifact.VersionFiles(path).encoder_dir / meta["files"]["fp32"]
    partly = optimize_model(str(own), model_type="bert", num_heads=conf.num_attention_heads,
                            hidden_size=conf.hidden_size, opt_level=1)
    print(f"the version's own graph ({len(onnx.load(str(own)).graph.node)} nodes) fused: "
          f"{ {op: n for op, n in partly.get_fused_operator_statistics().items() if n} }", flush=True)
    graph = optimize_model(str(eager / meta["files"]["fp32"]), model_type="bert", num_heads=conf.num_attention_heads,
                           hidden_size=conf.hidden_size, opt_level=1)
    graph.save_model_to_file(str(fused / meta["files"]["fp32"]))
    stats = {op: n for op, n in graph.get_fused_operator_statistics().items() if n}
    pre = fused / "model.pre.onnx"
    quant_pre_process(str(fused / meta["files"]["fp32"]), str(pre), skip_symbolic_shape=False)
    quantize_dynamic(str(pre), str(fused / meta["files"]["int8"]), per_channel=True, weight_type=QuantType.QInt8)
    pre.unlink()
    (fused / artifact.ENCODER_CONFIG).write_text(json.dumps({**meta, "fused": stats}, indent=2))

    reference = model.encode(texts, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
    got = {v: OnnxTextEncoder(fused, v).encode(texts) for v in ("fp32", "int8")}
    fp32, int8 = _compare(got["fp32"], reference), _compare(got["int8"], got["fp32"])
    print(f"eager graph ({len(onnx.load(str(eager / meta['files']['fp32'])).graph.node)} nodes) fused "
          f"({'fully' if graph.is_fully_optimized() else 'partly'}, {len(graph.model.graph.node)} nodes): {stats}; on "
          f"{len(texts)} H&M texts fp32 "
          f"max abs diff to PyTorch {fp32['max_abs_diff']:.2e} (tolerance {ExportConfig().tolerance:.0e}), int8 mean "
          f"cosine to fp32 {int8['mean_cosine']:.4f} (min {int8['min_cosine']:.4f})", flush=True)
    if fp32["max_abs_diff"] > ExportConfig().tolerance:
        raise SystemExit("the fused graph differs from PyTorch beyond the export's tolerance")
    print(f"wrote {eager} and {fused}")


if __name__ == "__main__":
    main()
