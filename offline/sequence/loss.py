"""The encoder's training loss: cross-entropy of each position's next item under a softmax of
``scale x unit query . index vector`` (the inner product the index ranks by, the query
``out(h)`` at unit length, the scale learned), over every item or over ``negatives`` items
drawn at random each step and shared by the batch.

The scale is folded into one matrix product: ``scale x (W h + b) . t / |W h + b|`` is
``[h s, s] . [t W, t . b]`` with ``s = scale / |W h + b|``, so the ``positions x items``
logits are made once, unscaled copies and their gradients never (on retail, about 3,300
positions x 3,658 items, each such tensor is 49 MB, above the 32 MB past which glibc maps an
allocation afresh from the system, page by page).

The full softmax's normaliser is ``mean_log_sum_exp``: row blocks of the logits small enough to
stay in the CPU's cache, each made, normalised and multiplied back while there, the gradients
computed in the forward pass (they depend on the upstream gradient only through a scalar), so
the ``positions x items`` logits never exist whole (on retail's job inputs a training step
took 0.199 s against 0.351 s with the whole logits: docs/benchmarks.md, "the softmax in
blocks").
"""

from __future__ import annotations

import torch


def next_item_loss(h: torch.Tensor, out: torch.nn.Linear, log_scale: torch.Tensor, index: torch.Tensor,
                   targets: torch.Tensor, negatives: int = 0, bf16: bool = False) -> torch.Tensor:
    """Mean cross-entropy of ``targets`` (rows of ``index``, the index vectors) for the hidden
    states ``h`` (``[positions, dim]``) whose queries are ``out(h)``: a full softmax when
    ``negatives`` is 0 or at least the item count, else ``sampled_softmax_cross_entropy``.
    ``targets`` ``[positions]``, or ``[positions, H]`` (a horizon of future items, -1 padded,
    each position with at least one): each position's loss is the mean of its targets'
    cross-entropies under the one softmax, and the loss the mean over positions. ``bf16``: the
    full softmax's products in bfloat16 (``mean_log_sum_exp``)."""
    scale = log_scale.exp() / out(h).norm(dim=1, keepdim=True).clamp_min(1e-12)
    queries = torch.cat([h * scale, scale], 1)
    items = torch.cat([index @ out.weight, (index @ out.bias)[:, None]], 1)
    if 0 < negatives < len(items):
        return sampled_softmax_cross_entropy(queries, items, targets, negatives)
    horizon = targets if targets.dim() == 2 else targets[:, None]
    valid = horizon >= 0
    positive = (queries[:, None, :] * items[horizon.clamp_min(0)]).sum(2)  # [positions, H]
    mean_positive = (positive * valid).sum(1) / valid.sum(1)
    return mean_log_sum_exp(queries, items, bf16) - mean_positive.mean()


BLOCK = 1 << 20  # logits per row block of mean_log_sum_exp (4 MB in float32: within the cache)


class _MeanLogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, queries, items, bf16):
        rows = max(1, BLOCK // max(len(items), 1))
        grads = ctx.needs_input_grad
        d_queries = torch.empty_like(queries) if grads[0] else None
        d_items = torch.zeros_like(items) if grads[1] else None
        each, every = (queries.bfloat16(), items.bfloat16()) if bf16 else (queries, items)
        total = queries.new_zeros(())
        for first in range(0, len(queries), rows):
            q = each[first:first + rows]
            block = (q @ every.T).float() if bf16 else q @ every.T
            top = block.amax(1, keepdim=True)
            norm = block.sub_(top).exp_().sum(1, keepdim=True)
            total += (top + norm.log()).sum()
            if d_queries is None and d_items is None:
                continue
            soft = block.div_(norm).to(every.dtype)  # the softmax: the gradient of each row's log-sum-exp
            if d_queries is not None:
                if bf16:
                    d_queries[first:first + rows] = soft @ every
                else:
                    torch.mm(soft, every, out=d_queries[first:first + rows])
            if d_items is not None:
                if bf16:
                    d_items += soft.T @ q
                else:
                    d_items.addmm_(soft.T, q)
        n = max(len(queries), 1)
        ctx.grads = [None if g is None else g / n for g in (d_queries, d_items)]
        return total / n

    @staticmethod
    def backward(ctx, upstream):
        return *(None if g is None else g * upstream for g in ctx.grads), None


def mean_log_sum_exp(queries: torch.Tensor, items: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """``logsumexp(queries @ items.T, 1).mean()`` with its gradients, in row blocks that stay
    in cache (the gradients made in the forward pass, once; a second backward is not
    supported). ``bf16``: the products in bfloat16 (each block's exponentials and sums in
    float32): about a fifth off a training step on a CPU that multiplies bfloat16 natively,
    the same recall (docs/hybrid.md, "The softmax in blocks")."""
    return _MeanLogSumExp.apply(queries, items, bf16)


def sampled_softmax_cross_entropy(queries: torch.Tensor, items: torch.Tensor, targets: torch.Tensor,
                                  negatives: int) -> torch.Tensor:
    """Mean cross-entropy of each row's target against ``negatives`` items drawn uniformly
    without replacement (torch's seeded generator) and shared by every row; a drawn item that
    is a row's own target is left out of that row's softmax. ``targets`` ``[rows, H]`` (-1
    padded): each target's softmax is itself and the drawn items none of the row's targets,
    and a row's loss the mean over its targets."""
    drawn = torch.randperm(len(items), device=items.device)[:negatives]
    logits = queries @ items[drawn].T
    horizon = targets if targets.dim() == 2 else targets[:, None]
    valid = horizon >= 0
    logits.masked_fill_((drawn[None, :, None] == horizon[:, None, :]).any(2), float("-inf"))
    positive = (queries[:, None, :] * items[horizon.clamp_min(0)]).sum(2)  # [rows, H]
    rest = torch.logsumexp(logits, dim=1, keepdim=True)
    each = torch.logaddexp(positive, rest) - positive
    return ((each * valid).sum(1) / valid.sum(1)).mean()
