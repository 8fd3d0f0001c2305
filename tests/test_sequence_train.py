"""Training the profile encoder (offline/sequence/train.py): windows, a planted sequential
pattern learned far above chance, determinism, errors."""

import numpy as np
import pytest

import torch  # noqa: E402  (installed by make install: a missing one fails, never skips)

from groundrec.offline.sequence.model import SequenceConfig, start_at_principal  # noqa: E402
from groundrec.offline.sequence.train import (carried_over, recall_at, train_sequence_encoder,  # noqa: E402
                                              training_windows)
from groundrec.shared.errors import UserError  # noqa: E402

N = 60
FAST = dict(dim=32, max_len=10, epochs=25, valid_users=100, batch_size=32, lr=5e-3, patience=4, dropout=0.1,
            k=3, threads=1)


def _planted(n_users=400, seed=0):
    """Item i is always followed by item i + 1 (mod N); random unit vectors say nothing of it."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(N, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    histories = [(rng.integers(0, N) + np.arange(rng.integers(3, 12))) % N for _ in range(n_users)]
    return histories, vectors


def test_windows_cover_every_position_from_the_end_and_skip_repeats():
    x, y = training_windows([np.array([1, 2, 1, 3, 4, 5, 6])], max_len=3)
    assert x.tolist() == [[3, 4, 5], [1, 2, 1]]  # all 6 next-item pairs, once each
    assert y.tolist() == [[4, 5, 6], [2, -1, 3]]  # 1 after 2 is a repeat: no loss there
    x, y = training_windows([np.array([1, 2, 1])], max_len=3, skip_repeats=False)
    assert y.tolist() == [[-1, 2, 1]]
    assert training_windows([np.array([5]), np.array([], np.int64)], 4)[0].shape == (0, 4)


def test_the_encoder_learns_that_item_i_is_followed_by_item_i_plus_1():
    histories, vectors = _planted()
    trained = train_sequence_encoder(histories, vectors, cfg=SequenceConfig(**FAST))
    chance = FAST["k"] / N
    assert trained.score > 0.9 > 10 * chance, trained.epochs
    test = [(s + np.arange(5)) % N for s in range(N)]  # every start, never held out as such
    q = trained.model.encode(test)
    nxt = [{int((s + 5) % N)} for s in range(N)]
    assert recall_at(q, vectors, test, nxt, 1).mean() > 0.5  # the very next item on top, mostly (chance: 1/55)
    report = trained.report()
    assert report["best_epoch"] >= 1 and report["parameters"] > 0 and report["valid_users"] == 100
    assert report["scale"] > 0 and report["scale"] != SequenceConfig().scale  # the multiplier learned, recorded


def test_training_is_seeded_and_deterministic():
    histories, vectors = _planted(150)
    cfg = SequenceConfig(**{**FAST, "epochs": 2, "patience": 5})
    a = train_sequence_encoder(histories, vectors, cfg=cfg)
    b = train_sequence_encoder(histories, vectors, cfg=cfg)
    assert [e["loss"] for e in a.epochs] == [e["loss"] for e in b.epochs]
    assert np.array_equal(a.model.encode(histories[:20]), b.model.encode(histories[:20]))


def test_the_budget_is_work_not_seconds_and_says_what_ended_it():
    histories, vectors = _planted(150)
    cfg = SequenceConfig(**{**FAST, "epochs": 3, "patience": 5})
    capped = train_sequence_encoder(histories, vectors, cfg=SequenceConfig(**{**FAST, "max_steps": 3}))
    assert capped.steps == 3 and capped.stopped == "max_steps" and len(capped.epochs) == 1
    full = train_sequence_encoder(histories, vectors, cfg=cfg)
    assert full.stopped == "epochs" and len(full.epochs) == 3 and full.steps == 3 * full.epochs[0]["steps"]
    assert full.report()["steps"] == full.steps and not hasattr(cfg, "max_seconds")


def test_weights_carried_over_to_another_basis_rank_every_item_as_before():
    """A refit's vectors as another basis of the same items (inputs and index vectors through
    invertible maps): the carried weights give the same per-user ranking of every item, and a
    training started from them scores them first, as epoch 0."""
    histories, vectors = _planted(200)
    targets = np.random.default_rng(1).normal(size=(N, 12)).astype(np.float32)
    trained = train_sequence_encoder(histories, vectors, cfg=SequenceConfig(**{**FAST, "epochs": 3}), targets=targets)
    rng = np.random.default_rng(2)
    inputs2 = (vectors @ rng.normal(size=(16, 16))).astype(np.float32)
    targets2 = (targets @ rng.normal(size=(12, 20))).astype(np.float32)  # wider, same information
    start = carried_over(trained.model, targets, inputs2, targets2)
    cfg = SequenceConfig(**{**FAST, "epochs": 0})
    again = train_sequence_encoder(histories, inputs2, None, cfg, targets=targets2, start=start)
    test = histories[:40]
    before, after = trained.model.encode(test) @ targets.T, again.model.encode(test) @ targets2.T
    unit = lambda s: s / np.linalg.norm(s, axis=1, keepdims=True)  # noqa: E731  (each query's scale is free)
    assert np.allclose(unit(before), unit(after), atol=1e-3)
    assert [e["epoch"] for e in again.epochs] == [0] and again.epochs[0]["loss"] is None and again.best_epoch == 0
    more = train_sequence_encoder(histories, inputs2, None, SequenceConfig(**{**FAST, "epochs": 2, "patience": 2}),
                                  targets=targets2, start=start)
    assert [e["epoch"] for e in more.epochs] == [0, 1, 2]
    assert more.epochs[0]["valid_recall@3"] == pytest.approx(again.score, abs=1e-5)
    assert more.score >= again.score


def test_a_given_validation_set_and_other_index_vectors():
    histories, vectors = _planted(200)
    targets = np.random.default_rng(1).normal(size=(N, 24)).astype(np.float32)
    valid = ([h[:-1] for h in histories[:50]], [[int(h[-1])] for h in histories[:50]])
    trained = train_sequence_encoder(histories[50:], vectors, None, SequenceConfig(**{**FAST, "epochs": 2}),
                                     targets=targets, valid=valid)
    assert len(trained.valid_recall) == 50 and trained.model.encode([[1, 2]]).shape == (1, 24)


def test_unusable_inputs_are_refused_with_a_message():
    _, vectors = _planted(10)
    with pytest.raises(UserError, match="at least two items"):
        train_sequence_encoder([np.array([1]), np.array([2])], vectors, cfg=SequenceConfig(**FAST))
    with pytest.raises(UserError, match="index vectors"):
        train_sequence_encoder([np.array([1, 2])], vectors, targets=vectors[:5], cfg=SequenceConfig(**FAST))


def test_sampled_negatives_learn_the_pattern_too_and_stay_seeded():
    """A softmax over 20 of the 60 items drawn each step (shared by the batch) still learns
    which item comes next; the same seed gives the same training."""
    histories, vectors = _planted()
    cfg = SequenceConfig(**{**FAST, "negatives": 20})
    trained = train_sequence_encoder(histories, vectors, cfg=cfg)
    assert trained.score > 0.9, trained.epochs
    again = train_sequence_encoder(histories, vectors, cfg=SequenceConfig(**{**cfg.to_dict(), "epochs": 2}))
    twice = train_sequence_encoder(histories, vectors, cfg=SequenceConfig(**{**cfg.to_dict(), "epochs": 2}))
    losses = [e["loss"] for e in again.epochs]
    assert losses == [e["loss"] for e in twice.epochs] == [e["loss"] for e in trained.epochs[:2]]
    full = train_sequence_encoder(histories, vectors, cfg=SequenceConfig(**{**FAST, "epochs": 2}))
    assert [e["loss"] for e in full.epochs] != losses  # another loss, not the full one


def test_a_horizon_targets_the_next_new_items_past_the_window():
    x, y = training_windows([np.array([1, 2, 1, 3, 4, 5, 6])], max_len=3, horizon=2)
    assert x.tolist() == [[3, 4, 5], [1, 2, 1]]
    assert y.tolist() == [[[4, 5], [5, 6], [6, -1]],
                          [[2, 3], [3, 4], [3, 4]]]  # after 2 comes 1 (a repeat): the new ones after it
    x, y = training_windows([np.array([1, 2, 1])], max_len=3, skip_repeats=False, horizon=3)
    assert y.tolist() == [[[-1, -1, -1], [2, 1, -1], [1, -1, -1]]]
    assert training_windows([np.array([5])], 4, horizon=3)[1].shape == (0, 4, 3)


def test_a_horizon_loss_learns_the_items_that_follow():
    """Item i is followed by i + 1, i + 2, ...: trained on the next three new items, the
    encoder ranks those three on top (recall@3 of the next three far above chance)."""
    histories, vectors = _planted()
    cfg = SequenceConfig(**{**FAST, "horizon": 3})
    trained = train_sequence_encoder(histories, vectors, cfg=cfg)
    assert trained.positions == sum(len(h) - 1 for h in histories) - len(trained.valid_recall), trained.positions
    test = [(s + np.arange(5)) % N for s in range(N)]
    following = [{int((s + 5 + j) % N) for j in range(3)} for s in range(N)]
    assert recall_at(trained.model.encode(test), vectors, test, following, 3).mean() > 0.4  # chance: 3/55 (one query, 16-dim vectors)


def test_the_softmax_can_leave_out_the_items_nobody_interacted_with():
    """``cold_negatives: false``: the loss's softmax holds the warm items (and every target)
    alone, targets renumbered to them; with every item warm it is the same training."""
    from groundrec.offline.sequence.train import _warm_softmax

    index = torch.arange(12.0).reshape(6, 2)
    kept, y = _warm_softmax(index, torch.tensor([[0, -1, 3], [5, 2, -1]]), np.array([1, 0, 1, 0, 0, 1], bool))
    assert kept.tolist() == [[0, 1], [4, 5], [6, 7], [10, 11]]  # 3 is cold but a target: kept
    assert y.tolist() == [[0, -1, 2], [3, 1, -1]]
    histories, vectors = _planted(150)
    cfg = {**FAST, "epochs": 2, "patience": 5}
    every = train_sequence_encoder(histories, vectors, cfg=SequenceConfig(**cfg))
    same = train_sequence_encoder(histories, vectors, cfg=SequenceConfig(**cfg, cold_negatives=False))
    assert [e["loss"] for e in same.epochs] == [e["loss"] for e in every.epochs]
    few = [h[h < 40] for h in histories]  # items 40-59: nobody interacted with them
    with_cold = train_sequence_encoder(few, vectors, cfg=SequenceConfig(**cfg))
    warm_only = train_sequence_encoder(few, vectors, cfg=SequenceConfig(**cfg, cold_negatives=False))
    assert warm_only.epochs[0]["loss"] < with_cold.epochs[0]["loss"]  # fewer items in each denominator


def test_the_softmax_precision_is_bfloat16_only_where_the_cpu_has_it_and_both_learn():
    from groundrec.offline.sequence_config import resolved_precision

    assert resolved_precision("auto", frozenset({"avx2", "avx512_bf16"})) == "bfloat16"
    assert resolved_precision("auto", frozenset({"amx_bf16"})) == "bfloat16"
    assert resolved_precision("auto", frozenset({"avx2", "avx512f"})) == "float32"
    assert resolved_precision("float32", frozenset({"avx512_bf16"})) == "float32"
    assert resolved_precision("bfloat16", frozenset()) == "bfloat16"
    assert SequenceConfig(precision="auto").precision == resolved_precision("auto")  # decided once, on construction
    histories, vectors = _planted()
    runs = {p: train_sequence_encoder(histories, vectors, cfg=SequenceConfig(**FAST, precision=p))
            for p in ("float32", "bfloat16")}
    for precision, trained in runs.items():
        assert trained.report()["config"]["precision"] == precision  # what the manifest records
        assert trained.score > 0.9, (precision, trained.epochs)
    assert runs["float32"].epochs[0]["loss"] != runs["bfloat16"].epochs[0]["loss"]  # the products differ


def test_the_temperature_moves_at_its_own_rate():
    """``scale_lr``: the softmax multiplier, one scalar, has its own AdamW rate, so it travels
    from its start much further in the same steps than at the model's rate (0: the model's)."""
    histories, vectors = _planted(150)
    moved = {}
    for scale_lr in (0.0, 0.05):
        cfg = SequenceConfig(**{**FAST, "epochs": 3, "patience": 5, "scale_lr": scale_lr})
        trained = train_sequence_encoder(histories, vectors, cfg=cfg)
        moved[scale_lr] = abs(np.log(trained.report()["scale"] / cfg.scale))
    assert moved[0.05] > 3 * moved[0.0] > 0


def test_the_principal_start_is_where_training_starts_and_it_learns_the_pattern():
    histories, vectors = _planted()
    still = SequenceConfig(**{**FAST, "out_init": "principal", "max_steps": 1, "lr": 1e-12, "scale_lr": 1e-12})
    out = train_sequence_encoder(histories, vectors, cfg=still).model.encoder.out
    expected = torch.nn.Linear(FAST["dim"], vectors.shape[1])
    start_at_principal(expected, torch.as_tensor(vectors))  # the 16 index directions; the other 16 columns random
    assert torch.allclose(out.weight[:, :16], expected.weight[:, :16], atol=1e-6) and not out.bias.abs().max() > 1e-6
    trained = train_sequence_encoder(histories, vectors, cfg=SequenceConfig(**{**FAST, "out_init": "principal"}))
    assert trained.score > 0.9, trained.epochs


def test_the_training_runs_on_the_device_the_config_names_and_hands_the_model_back_on_the_cpu(monkeypatch):
    from groundrec.offline.sequence.train import resolved_device

    here = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolved_device("auto") == here and resolved_device("cpu") == "cpu"
    histories, vectors = _planted(150)
    trained = train_sequence_encoder(histories, vectors, cfg=SequenceConfig(**{**FAST, "epochs": 1}))
    assert trained.report()["device"] == here and trained.report()["config"]["device"] == "auto"
    assert {p.device.type for p in trained.model.parameters()} == {"cpu"}  # what export and carry-over read
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolved_device("auto") == "cpu"
    with pytest.raises(UserError, match="sequence.device is 'cuda' but torch sees no CUDA device"):
        train_sequence_encoder(histories, vectors, cfg=SequenceConfig(**{**FAST, "device": "cuda"}))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolved_device("auto") == "cuda" and resolved_device("cuda:1") == "cuda:1"
