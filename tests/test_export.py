"""The ONNX export of the text encoder, checked against PyTorch (offline/export.py)."""

import json

import numpy as np
import pytest

from groundrec.offline.encode import load_sentence_transformer
from groundrec.offline.export import ExportError, export_encoder
from groundrec.offline.config import ExportConfig
from groundrec.shared.onnx_encoder import OnnxTextEncoder

TEXTS = ["Black strap top in jersey", "Blue slim-fit denim jeans with five pockets", "a", "Kleid aus Viskose"]


@pytest.fixture(scope="module")
def minilm():
    return load_sentence_transformer("all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def exported(minilm, tmp_path_factory):
    out = tmp_path_factory.mktemp("encoder")
    report = export_encoder(minilm, out, ExportConfig(), TEXTS)
    return out, report


def test_onnx_matches_pytorch(minilm, exported):
    out, report = exported
    assert report["fp32"]["max_abs_diff"] <= 1e-4
    texts = TEXTS + ["another sentence, never seen by the export check " * 3]
    ref = minilm.encode(texts, normalize_embeddings=True)
    got = OnnxTextEncoder(out).encode(texts, batch_size=2)  # padding inside a batch
    assert np.max(np.abs(got - ref)) < 1e-4


def test_texts_batched_by_length_come_back_in_order_as_if_encoded_alone(exported):
    """encode sorts by token count and pads each batch itself: every vector equals the text's
    own, alone, whatever the batch size and the order of lengths."""
    out, _ = exported
    enc = OnnxTextEncoder(out)
    texts = ["a much longer text about a striped cotton shirt with buttons " * 2, "a", "Kleid", "jeans in blue denim",
             "a", "x " * 40]
    alone = np.stack([enc.encode([t])[0] for t in texts])
    for batch_size in (1, 2, 4, 64):
        assert np.max(np.abs(enc.encode(texts, batch_size=batch_size) - alone)) < 1e-5
    assert enc.encode([]).shape == (0, enc.dim)


def test_int8_variant_is_close_and_reported(exported):
    out, report = exported
    assert report["int8"]["mean_cosine"] >= 0.95 and "dropped" not in report["int8"]
    a = OnnxTextEncoder(out, "int8").encode(TEXTS)
    b = OnnxTextEncoder(out, "fp32").encode(TEXTS)
    assert np.all(np.sum(a * b, axis=1) > 0.9)
    assert (out / "model.int8.onnx").stat().st_size < (out / "model.onnx").stat().st_size / 2


def test_an_int8_variant_with_one_text_far_off_is_dropped_though_its_mean_passes(minilm, exported, tmp_path):
    """The gate read the mean cosine alone: a few texts far from fp32 passed behind it."""
    _, report = exported
    worst, mean = report["int8"]["min_cosine"], report["int8"]["mean_cosine"]
    assert worst < mean
    bar = (worst + mean) / 2  # the mean clears it, the worst text does not
    dropped = export_encoder(minilm, tmp_path, ExportConfig(int8_min_cosine=bar), TEXTS)
    assert "a check text's cosine to fp32" in dropped["int8"]["dropped"] and not (tmp_path / "model.int8.onnx").exists()
    assert "int8" not in json.loads((tmp_path / "encoder.json").read_text())["files"]


def test_tokenizer_json_pads_to_longest(exported):
    from tokenizers import Tokenizer

    meta = json.loads((exported[0] / "encoder.json").read_text())
    tok = Tokenizer.from_file(str(exported[0] / "tokenizer.json"))
    assert tok.padding is None and tok.truncation["max_length"] == meta["max_seq_length"]


def test_export_fails_above_tolerance(minilm, tmp_path):
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_encoder(minilm, tmp_path, ExportConfig(tolerance=1e-12, int8=False), TEXTS)


def test_unknown_variant_is_refused(exported):
    with pytest.raises(ValueError, match="not exported"):
        OnnxTextEncoder(exported[0], "fp16")


def test_a_tokenizer_that_cuts_from_the_left_is_exported_so_and_checked_on_an_over_long_text(tmp_path):
    """The export always cut an over-long text on the right, whatever side the tokenizer cuts
    (sentence-transformers follows ``truncation_side``), and its check held no text long enough
    to see it: the index and the online encoder then disagreed on every long text."""
    model = load_sentence_transformer("all-MiniLM-L6-v2")
    model.tokenizer.truncation_side = "left"
    report = export_encoder(model, tmp_path, ExportConfig(int8=False), TEXTS)
    assert report["fp32"]["n_texts"] == 4 + 1 + len(TEXTS)  # the built-in texts, an over-long one, the sample's
    long_text = "tail words matter here " * 10 + " ".join(f"w{n}" for n in range(400))
    reference = model.encode([long_text], normalize_embeddings=True)
    assert np.max(np.abs(OnnxTextEncoder(tmp_path).encode([long_text]) - reference)) < 1e-4
