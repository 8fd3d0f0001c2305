"""The torch-free sequence encoder runner (shared/sequence_encoder.py): on a hand-made ONNX graph
(no torch needed), the padding rule, empty and over-long histories, batching, bad directories;
and that importing it loads no torch."""

import json
import subprocess
import sys

import numpy as np
import pytest

import onnx  # noqa: E402
import onnxruntime  # noqa: E402,F401

from onnx import TensorProto, helper  # noqa: E402

from groundrec.shared.errors import UserError  # noqa: E402
from groundrec.shared.sequence_encoder import SequenceEncoder, pad_histories  # noqa: E402

N, L, D, OUT = 12, 4, 3, 5


def _write(tmp_path, weight: np.ndarray):
    """A graph: query = (sum over slots of embedded * valid) @ weight: a bag of the history's
    latest L known items, enough to check the runner's gathering and padding."""
    graph = helper.make_graph(
        [helper.make_node("Unsqueeze", ["valid", "axis2"], ["v3"]),
         helper.make_node("Mul", ["embedded", "v3"], ["masked"]),
         helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
         helper.make_node("MatMul", ["summed", "w"], ["query"])],
        "bag",
        [helper.make_tensor_value_info("embedded", TensorProto.FLOAT, ["batch", L, D]),
         helper.make_tensor_value_info("valid", TensorProto.FLOAT, ["batch", L])],
        [helper.make_tensor_value_info("query", TensorProto.FLOAT, ["batch", OUT])],
        [helper.make_tensor("w", TensorProto.FLOAT, weight.shape, weight.ravel()),
         helper.make_tensor("axis2", TensorProto.INT64, [1], [2]), helper.make_tensor("axis1", TensorProto.INT64, [1], [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "sequence.onnx"))
    table = np.vstack([np.random.default_rng(0).normal(size=(N, D)), np.zeros((1, D))]).astype(np.float32)
    np.save(tmp_path / "sequence_items.npy", table)
    (tmp_path / "sequence.json").write_text(json.dumps({"max_len": L, "dim": D, "out_dim": OUT, "n_items": N,
                                                        "items": "sequence_items.npy",
                                                        "files": {"fp32": "sequence.onnx"}}))
    return table


def test_encode_gathers_the_latest_known_items_and_zero_rows_for_empty(tmp_path):
    weight = np.random.default_rng(1).normal(size=(D, OUT)).astype(np.float32)
    table = _write(tmp_path, weight)
    enc = SequenceEncoder(tmp_path, threads=1)
    histories = [[], [2], list(range(N)), [-1, 3, N + 4, 5], [-1]] * 60  # 300: more than one batch of 256
    q = enc.encode(histories)
    assert q.shape == (300, OUT) and q.dtype == np.float32
    want = np.stack([table[h[h >= 0]].sum(0) @ weight for h in pad_histories(histories, L, N)])
    assert np.allclose(q, want, atol=1e-5)
    assert not q[0].any() and not q[4].any()  # empty, and only unknown items: zero rows
    assert np.allclose(q[2], table[N - L:N].sum(0) @ weight, atol=1e-5)  # over-long: its latest L
    assert np.allclose(q[3], (table[3] + table[5]) @ weight, atol=1e-5)  # unknown items dropped
    assert enc.encode([]).shape == (0, OUT)


def test_a_broken_directory_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        SequenceEncoder(tmp_path)
    _write(tmp_path, np.ones((D, OUT), np.float32))
    np.save(tmp_path / "sequence_items.npy", np.zeros((3, D), np.float32))
    with pytest.raises(UserError, match="item table"):
        SequenceEncoder(tmp_path)


def test_the_runner_imports_no_torch():
    code = "import sys, groundrec.shared.sequence_encoder; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
