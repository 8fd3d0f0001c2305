"""The encoder's training loss (offline/sequence/loss.py): cross-entropy under a softmax of
``scale x unit query . index vector`` over every item, the scale folded into one product with
the same value and gradients; the sampled softmax is that softmax over the drawn items, each
row's target always in and never twice."""

import pytest

import torch  # noqa: E402  (installed by make install: a missing one fails, never skips)
F = torch.nn.functional

from groundrec.offline.sequence import loss  # noqa: E402


def _inputs(rows=37, n=100, d=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    queries = torch.randn(rows, d, dtype=torch.float64, generator=g, requires_grad=True)
    items = torch.randn(n, d, dtype=torch.float64, generator=g, requires_grad=True)
    return queries, items, torch.randint(0, n, (rows,), generator=g)


def test_the_folded_scale_is_the_scaled_unit_query_against_every_index_vector():
    torch.manual_seed(0)
    h = torch.randn(37, 8, dtype=torch.float64, requires_grad=True)
    out = torch.nn.Linear(8, 12).double()
    log_scale = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    index = torch.randn(50, 12, dtype=torch.float64)
    targets = torch.randint(0, 50, (37,))
    got = loss.next_item_loss(h, out, log_scale, index, targets)
    query = out(h)
    want = F.cross_entropy(log_scale.exp() * (query / query.norm(dim=1, keepdim=True)) @ index.T, targets)
    assert got.item() == pytest.approx(want.item(), abs=1e-12)
    wrt = (h, log_scale, out.weight, out.bias)
    for a, b in zip(torch.autograd.grad(got, wrt), torch.autograd.grad(want, wrt)):
        assert torch.allclose(a, b, atol=1e-12)
    # Negatives of at least the item count: the full softmax, the same figure.
    assert loss.next_item_loss(h, out, log_scale, index, targets, 50).item() == pytest.approx(got.item(), abs=1e-12)


def test_sampled_negatives_are_a_softmax_over_the_drawn_items_with_each_target_once():
    queries, items, targets = _inputs()
    full = F.cross_entropy(queries @ items.T, targets)
    # Every item drawn: each target masked among the negatives and added once, the full softmax.
    every = loss.sampled_softmax_cross_entropy(queries, items, targets, len(items))
    assert every.item() == pytest.approx(full.item(), abs=1e-12)
    torch.manual_seed(3)
    some = loss.sampled_softmax_cross_entropy(queries, items, targets, 20)
    torch.manual_seed(3)
    drawn = torch.randperm(len(items))[:20]
    logits = queries @ items.T
    want = [torch.logsumexp(logits[i, sorted({int(targets[i])} | set(drawn.tolist()))], 0) - logits[i, targets[i]]
            for i in range(len(targets))]
    assert some.item() == pytest.approx(torch.stack(want).mean().item(), abs=1e-12)
    assert some.item() < full.item()  # fewer terms in each denominator
    torch.manual_seed(3)
    assert loss.sampled_softmax_cross_entropy(queries, items, targets, 20).item() == some.item()  # seeded


def test_a_horizon_of_targets_is_the_mean_of_their_cross_entropies_under_one_softmax():
    queries, items, _ = _inputs()
    g = torch.Generator().manual_seed(5)
    horizon = torch.randint(0, len(items), (len(queries), 3), generator=g)
    horizon[::4, 1:] = -1  # some positions with one target only
    horizon[1::4, 2] = -1
    h = torch.randn(len(queries), 6, dtype=torch.float64, generator=g)
    out = torch.nn.Linear(6, items.shape[1]).double()
    log_scale = torch.tensor(0.7, dtype=torch.float64)
    got = loss.next_item_loss(h, out, log_scale, items.detach(), horizon)
    q = out(h)
    logits = log_scale.exp() * (q / q.norm(dim=1, keepdim=True)) @ items.detach().T
    want = torch.stack([torch.stack([F.cross_entropy(logits[i:i + 1], t[None]) for t in row if t >= 0]).mean()
                        for i, row in enumerate(horizon)]).mean()
    assert got.item() == pytest.approx(want.item(), abs=1e-10)
    # One column: the next-item loss itself, full and sampled.
    one = horizon[:, 0]
    assert loss.next_item_loss(h, out, log_scale, items.detach(), one[:, None]).item() == pytest.approx(
        loss.next_item_loss(h, out, log_scale, items.detach(), one).item(), abs=1e-10)
    torch.manual_seed(3)
    a = loss.sampled_softmax_cross_entropy(queries, items, one, 20)
    torch.manual_seed(3)
    assert loss.sampled_softmax_cross_entropy(queries, items, one[:, None], 20).item() == pytest.approx(a.item(), abs=1e-12)


def test_sampled_negatives_with_a_horizon_leave_every_target_of_a_row_out_of_the_negatives():
    queries, items, _ = _inputs()
    horizon = torch.stack([torch.arange(len(queries)) % 50, torch.arange(len(queries)) % 50 + 50], 1)
    horizon[::3, 1] = -1
    torch.manual_seed(4)
    got = loss.sampled_softmax_cross_entropy(queries, items, horizon, 30)
    torch.manual_seed(4)
    drawn = torch.randperm(len(items))[:30].tolist()
    logits = queries @ items.T
    rows = []
    for i, row in enumerate(horizon.tolist()):
        mine = [t for t in row if t >= 0]
        rest = [j for j in drawn if j not in mine]
        rows.append(torch.stack([torch.logsumexp(logits[i, [t] + rest], 0) - logits[i, t] for t in mine]).mean())
    assert got.item() == pytest.approx(torch.stack(rows).mean().item(), abs=1e-10)


@pytest.mark.parametrize("block", [1 << 20, 250, 7])  # one block, several, one row per block (and a ragged last)
def test_the_blocked_log_sum_exp_equals_the_whole_one_with_its_gradients(monkeypatch, block):
    monkeypatch.setattr(loss, "BLOCK", block)
    queries, items, _ = _inputs()
    got = loss.mean_log_sum_exp(queries, items)
    want = torch.logsumexp(queries @ items.T, 1).mean()
    assert got.item() == pytest.approx(want.item(), abs=1e-12)
    # Scaled upstream (a weighted loss) and the gradients of both inputs.
    for a, b in zip(torch.autograd.grad(3 * got, (queries, items)), torch.autograd.grad(3 * want, (queries, items))):
        assert torch.allclose(a, b, atol=1e-12)
    # Items without a gradient (fixed index vectors): the queries' gradient alone, the same.
    fixed = items.detach()
    (a,) = torch.autograd.grad(loss.mean_log_sum_exp(queries, fixed), (queries,))
    (b,) = torch.autograd.grad(torch.logsumexp(queries @ fixed.T, 1).mean(), (queries,))
    assert torch.allclose(a, b, atol=1e-12)
    # Large logits stay finite (each block shifted by its rows' maximum).
    big = loss.mean_log_sum_exp(queries.detach() * 1e4, fixed)
    assert torch.isfinite(big) and big.item() == pytest.approx(
        torch.logsumexp(queries.detach() * 1e4 @ fixed.T, 1).mean().item(), rel=1e-12)


def test_the_bfloat16_products_stay_close_to_the_exact_softmax():
    g = torch.Generator().manual_seed(2)
    queries = torch.randn(300, 17, generator=g, requires_grad=True)  # float32, as training has them
    items = torch.randn(500, 17, generator=g, requires_grad=True)
    got = loss.mean_log_sum_exp(queries, items, bf16=True)
    want = loss.mean_log_sum_exp(queries, items)
    assert got.dtype == torch.float32 and got.item() == pytest.approx(want.item(), rel=1e-2)
    for a, b in zip(torch.autograd.grad(got, (queries, items)), torch.autograd.grad(want, (queries, items))):
        assert a.dtype == torch.float32
        assert F.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.999
        assert (a - b).abs().max() < 0.02 * b.abs().max()
    # The whole loss takes it too, and differs from the exact one only by bfloat16's rounding.
    h = torch.randn(300, 8, generator=g)
    out = torch.nn.Linear(8, 17)
    targets = torch.randint(0, 500, (300, 3), generator=g)
    exact = loss.next_item_loss(h, out, torch.tensor(1.5), items.detach(), targets)
    rounded = loss.next_item_loss(h, out, torch.tensor(1.5), items.detach(), targets, bf16=True)
    assert rounded.item() == pytest.approx(exact.item(), rel=1e-2) and rounded.item() != exact.item()
