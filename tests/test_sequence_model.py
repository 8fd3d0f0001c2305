"""The profile encoder's model (offline/sequence/model.py): shapes, the padding rule, causality,
cold items, empty histories."""

import numpy as np
import pytest

import torch  # noqa: E402  (installed by make install: a missing one fails, never skips)

from groundrec.offline.sequence.model import SequenceConfig, SequenceModel, start_at_principal  # noqa: E402
from groundrec.shared.sequence_encoder import pad_histories  # noqa: E402


def _model(n=30, d_in=8, out_dim=12, warm=None, **cfg):
    torch.manual_seed(0)
    vectors = np.random.default_rng(0).normal(size=(n, d_in)).astype(np.float32)
    warm = np.ones(n, bool) if warm is None else warm
    return SequenceModel(vectors, warm, out_dim, SequenceConfig(max_len=6, dim=16, **cfg)).eval()


def test_padding_keeps_the_latest_known_items_right_aligned():
    padded = pad_histories([[], [3], [1, 2, 3, 4, 5, 6, 7, 8], [-1, 2, 99, 4]], 4, n_items=10)
    assert padded.tolist() == [[-1, -1, -1, -1], [-1, -1, -1, 3], [5, 6, 7, 8], [-1, -1, 2, 4]]


def test_queries_have_the_index_width_and_an_empty_history_is_a_zero_row():
    model = _model()
    q = model.encode([[], [1], list(range(20)), [-1, 5]])
    assert q.shape == (4, 12) and q.dtype == np.float32
    assert not q[0].any() and q[1].any() and q[2].any()
    assert np.allclose(q[3], model.encode([[5]])[0], atol=1e-5)  # an unknown item is dropped, not an input


def test_an_over_long_history_is_read_as_its_latest_max_len_items():
    model = _model()
    long = list(range(25))
    assert np.allclose(model.encode([long])[0], model.encode([long[-6:]])[0], atol=1e-5)


def test_the_output_at_a_position_depends_on_nothing_after_it():
    model = _model()
    items = torch.as_tensor(pad_histories([[1, 2, 3, 4, 5, 6], [1, 2, 3, 9, 8, 7]], 6, 30))
    with torch.no_grad():
        h = model.hidden(items)
    assert torch.allclose(h[0, :3], h[1, :3], atol=1e-6) and not torch.allclose(h[0, 3:], h[1, 3:])


def test_a_batch_cut_to_its_last_slots_gives_the_kept_slots_the_same_outputs():
    """Training cuts a batch's leading empty slots (left-padded histories): nothing changes."""
    model = _model()
    items = torch.as_tensor(pad_histories([[1, 2], [3, 4, 5], [6]], 6, 30))
    with torch.no_grad():
        full, cut = model.hidden(items), model.hidden(items[:, 3:])
    assert cut.shape == (3, 3, 16) and torch.allclose(full[:, 3:], cut, atol=1e-6)


def test_a_cold_item_has_no_id_part_but_still_an_input_from_its_vectors():
    warm = np.ones(30, bool)
    warm[7] = False
    model = _model(warm=warm)
    with torch.no_grad():
        table = model.item_table()
        projected = model.project(model.inputs)
    assert table.shape == (31, 16) and not table[-1].any()
    assert torch.allclose(table[7], projected[7]) and not torch.allclose(table[6], projected[6])


def test_dropout_keeps_about_one_minus_p_scaled_up_and_is_the_identity_in_eval_mode():
    from groundrec.offline.sequence.model import Dropout

    drop, x = Dropout(0.25), torch.ones(200, 500)
    torch.manual_seed(0)
    y = drop.train()(x)
    kept = y != 0
    assert abs(float(kept.float().mean()) - 0.75) < 0.01 and torch.allclose(y[kept], torch.full_like(y[kept], 4 / 3))
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # seeded
    assert drop.eval()(x) is x and Dropout(0.0).train()(x) is x and not Dropout(1.0).train()(x).any()
    model = _model(dropout=0.5)
    assert model.encoder.blocks[0].ff[2].__class__ is Dropout and model.encoder.drop.__class__ is Dropout


def test_the_wanted_slots_alone_are_the_same_outputs_as_every_slot_then_picked():
    """Training asks for the slots with a next item to predict: the last block's feed-forward
    runs on those alone, and their outputs are the ones of the whole pass."""
    model = _model(blocks=2)
    items = torch.as_tensor(pad_histories([[1, 2, 3, 4, 5, 6], [7, 8], [9, 10, 11]], 6, 30))
    rows = torch.zeros(3, 6, dtype=torch.bool)
    rows[0, 1:4] = rows[1, 5] = rows[2, 3:] = True
    with torch.no_grad():
        full, some = model.hidden(items), model.hidden(items, rows=rows)
    assert some.shape == (int(rows.sum()), 16) and torch.allclose(full[rows], some, atol=1e-6)


def test_the_query_from_its_slot_alone_is_the_query_from_every_slot():
    """Serving's forward runs the last block on the query's slot alone (``last_only``): the same
    queries as the whole pass, short, padded, empty and over-long histories alike."""
    model = _model(blocks=2, heads=2)
    histories = [[1, 2, 3, 4, 5, 6, 7, 8], [7, 8], [], [9], [3, 30, 4]]
    items = torch.as_tensor(pad_histories(histories, 6, 30))
    with torch.no_grad():
        alone = model(items)
        model.encoder.last_only = False
        every = model(items)
        picked = model.encoder.out(model.hidden(items)[:, -1])
    assert torch.allclose(alone, every, atol=1e-6) and not alone[2].any() and alone[0].abs().sum() > 0
    assert torch.allclose(every[0], picked[0] / picked[0].norm(), atol=1e-6)


def test_the_principal_start_gives_every_item_its_best_rank_dim_key():
    """``start_at_principal``: the items' keys ``index @ W`` keep as much of the index rows as
    any ``dim`` directions can (the leading singular values' share of the energy), where a
    random start keeps less; the weights' spread is torch's default start's, the bias zero."""
    rng = np.random.default_rng(0)
    index = torch.as_tensor((rng.normal(size=(300, 8)) @ rng.normal(size=(8, 40)) * 3
                             + rng.normal(size=(300, 40))).astype(np.float32))
    random_out, principal_out = torch.nn.Linear(6, 40), torch.nn.Linear(6, 40)
    start_at_principal(principal_out, index)

    def kept(out):  # the share of the rows' energy in the span of the output layer's columns
        basis, _ = torch.linalg.qr(out.weight.detach().double())
        return float((index.double() @ basis).square().sum() / index.double().square().sum())

    s = torch.linalg.svdvals(index.double()).square()
    assert kept(principal_out) == pytest.approx(float(s[:6].sum() / s.sum()), rel=1e-3)
    assert kept(random_out) < kept(principal_out) - 0.2
    assert float(principal_out.weight.detach().std()) == pytest.approx(float(random_out.weight.detach().std()), rel=0.15)
    assert not principal_out.bias.any()
    narrow = torch.nn.Linear(6, 3)  # an index narrower than the width: its 3 directions, the rest as they were
    before = narrow.weight.detach().clone()
    start_at_principal(narrow, index[:, :3])
    assert torch.equal(narrow.weight[:, 3:], before[:, 3:]) and not torch.equal(narrow.weight[:, :3], before[:, :3])



def test_encoding_runs_at_the_configured_thread_count_whatever_the_caller_set():
    """The job's validation and the export's reference encode after the training restored
    torch's count: they ran at the machine's default, not ``threads``."""
    model = _model(threads=2)
    seen = []
    model.encoder.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.encode([[1, 2], [3]])
        assert seen and set(seen) == {2} and torch.get_num_threads() == 1  # restored after
    finally:
        torch.set_num_threads(before)
