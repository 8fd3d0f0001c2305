"""The profile encoder's ONNX export (offline/sequence/export.py): a real parity check of
onnxruntime against PyTorch on 1,000 histories with empty, length-1 and over-long ones, the
directory it writes, and a refusal past the tolerance."""

import json

import numpy as np
import pytest

import torch  # noqa: E402  (installed by make install: a missing one fails, never skips)
import onnxruntime  # noqa: E402,F401

from groundrec.offline.sequence import export as export_mod  # noqa: E402
from groundrec.offline.sequence.export import (SequenceExportError, check_histories,  # noqa: E402
                                               export_sequence_encoder)
from groundrec.offline.sequence.model import SequenceConfig, SequenceModel  # noqa: E402
from groundrec.shared.sequence_encoder import SequenceEncoder  # noqa: E402


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    warm = rng.random(40) < 0.8
    m = SequenceModel(rng.normal(size=(40, 10)).astype(np.float32), warm, 14,
                      SequenceConfig(max_len=8, dim=16, blocks=2, heads=2))
    with torch.no_grad():  # trained-looking weights: not the small initial ones
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return m.eval()


def test_the_check_set_holds_every_edge_case():
    hs = check_histories(40, 8, sample=[[1, 2, 3]] * 5)
    lengths = [len(h) for h in hs]
    assert len(hs) == 1000 and 0 in lengths and 1 in lengths and max(lengths) > 8
    assert [1, 2, 3] in [h.tolist() for h in hs]
    assert any(((h < 0) | (h >= 40)).any() for h in hs)  # unknown items too


def test_export_matches_pytorch_on_1000_histories(model, tmp_path):
    sample = [np.random.default_rng(s).integers(0, 40, s % 30) for s in range(200)]
    report = export_sequence_encoder(model, tmp_path / "enc", sample)
    assert report["max_abs_diff"] <= 1e-4 and report["n_histories"] == 1000
    assert report["empty"] >= 1 and report["length_1"] >= 1 and report["over_long"] >= 1
    meta = json.loads((tmp_path / "enc" / "sequence.json").read_text())
    assert meta["max_len"] == 8 and meta["out_dim"] == 14 and meta["n_items"] == 40 and meta["parity"] == report
    # independently of the export's own check: the runner against the model, case by case
    enc = SequenceEncoder(tmp_path / "enc", threads=1)
    cases = [[], [3], list(range(40)) * 2, [-1, 5, 100, 6], [7, 7, 7]]
    got, want = enc.encode(cases), model.encode(cases)
    assert np.abs(got - want).max() <= 1e-4 and not got[0].any() and got[1].any()
    assert np.allclose(got[2], enc.encode([list(range(40))[-8:]])[0], atol=1e-5)  # over-long: the latest 8


def test_a_graph_onnxruntime_cannot_load_is_a_user_error_naming_it(model, tmp_path):
    """onnxruntime's own errors (a damaged file, a newer opset) are no subclass of ours: the
    gate, which keeps a candidate when the serving version cannot be scored, crashed the job."""
    from groundrec.shared.errors import UserError

    export_sequence_encoder(model, tmp_path / "enc", [np.arange(5)])
    (tmp_path / "enc" / "sequence.onnx").write_bytes(b"not a graph")
    with pytest.raises(UserError, match="onnxruntime .* cannot load it"):
        SequenceEncoder(tmp_path / "enc", threads=1)


def test_histories_go_in_groups_by_length_with_the_same_queries_as_at_full_length(model, tmp_path):
    """The graph's slots axis is dynamic: each group of histories (by length) is fed only the
    last slots it fills, and the queries are those of the whole ``max_len`` (an export from
    before the dynamic axis, without ``meta["slots"]``, is fed every slot as it was)."""
    export_sequence_encoder(model, tmp_path / "enc")
    enc = SequenceEncoder(tmp_path / "enc", threads=1)
    assert enc.meta["slots"] == "dynamic"
    histories = [list(range(n)) for n in range(0, 12)] + [[5], [9, 2, 2]]
    fed = []
    run = enc.session.run
    enc.session = type("Spy", (), {"run": lambda self, o, feed: fed.append(feed["valid"].shape) or run(o, feed)})()
    grouped = enc.encode(histories)
    assert sorted({shape[1] for shape in fed}) == [1, 2, 4, 8] and sum(shape[0] for shape in fed) == 13
    enc.meta = {k: v for k, v in enc.meta.items() if k != "slots"}
    calls = len(fed)
    whole = enc.encode(histories)
    assert fed[calls:] == [(13, 8)]  # every history in one call, fed every slot
    assert np.abs(grouped - whole).max() <= 1e-5 and np.abs(grouped - model.encode(histories)).max() <= 1e-4


def test_a_drifting_export_is_refused(model, tmp_path, monkeypatch):
    class Drifting(SequenceEncoder):
        def encode(self, histories, batch_size=256):
            return super().encode(histories, batch_size) + np.float32(1e-3)

    monkeypatch.setattr(export_mod, "SequenceEncoder", Drifting)
    with pytest.raises(SequenceExportError, match="differs from PyTorch"):
        export_sequence_encoder(model, tmp_path / "bad")
