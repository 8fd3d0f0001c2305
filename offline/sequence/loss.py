"""The encoder's training loss: cross-entropy of each position's next item under a softmax of
``scale x unit query . index vector`` (the inner product the index ranks by, the query
``out(h)`` at unit length, the scale learned), over every item or over ``negatives`` items
drawn at random each step and shared by the batch.

The scale is folded into one matrix product: ``scale x (W h + b) . t / |W h + b|`` is
``[h s, s] . [t W, t . b]`` with ``s = scale / |W h + b|``, so the ``positions x items``
logits are made once, unscaled copies and their gradients never (on retail, about 3,300
positions x 3,658 items, each such tensor is 49 MB, above the 32 MB past which glibc maps an
allocation afresh from the system, page by page).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def next_item_loss(h: torch.Tensor, out: torch.nn.Linear, log_scale: torch.Tensor, index: torch.Tensor,
                   targets: torch.Tensor, negatives: int = 0) -> torch.Tensor:
    """Mean cross-entropy of ``targets`` (rows of ``index``, the index vectors) for the hidden
    states ``h`` (``[positions, dim]``) whose queries are ``out(h)``: a full softmax when
    ``negatives`` is 0 or at least the item count, else ``sampled_softmax_cross_entropy``.
    ``targets`` ``[positions]``, or ``[positions, H]`` (a horizon of future items, -1 padded,
    each position with at least one): each position's loss is the mean of its targets'
    cross-entropies under the one softmax, and the loss the mean over positions."""
    scale = log_scale.exp() / out(h).norm(dim=1, keepdim=True).clamp_min(1e-12)
    queries = torch.cat([h * scale, scale], 1)
    items = torch.cat([index @ out.weight, (index @ out.bias)[:, None]], 1)
    if 0 < negatives < len(items):
        return sampled_softmax_cross_entropy(queries, items, targets, negatives)
    if targets.dim() == 1:
        return F.cross_entropy(queries @ items.T, targets)
    logits = queries @ items.T
    valid = targets >= 0
    positive = logits.gather(1, targets.clamp_min(0))
    mean_positive = (positive * valid).sum(1) / valid.sum(1)
    return (torch.logsumexp(logits, 1) - mean_positive).mean()


def sampled_softmax_cross_entropy(queries: torch.Tensor, items: torch.Tensor, targets: torch.Tensor,
                                  negatives: int) -> torch.Tensor:
    """Mean cross-entropy of each row's target against ``negatives`` items drawn uniformly
    without replacement (torch's seeded generator) and shared by every row; a drawn item that
    is a row's own target is left out of that row's softmax. ``targets`` ``[rows, H]`` (-1
    padded): each target's softmax is itself and the drawn items none of the row's targets,
    and a row's loss the mean over its targets."""
    drawn = torch.randperm(len(items))[:negatives]
    logits = queries @ items[drawn].T
    horizon = targets if targets.dim() == 2 else targets[:, None]
    valid = horizon >= 0
    logits.masked_fill_((drawn[None, :, None] == horizon[:, None, :]).any(2), float("-inf"))
    positive = (queries[:, None, :] * items[horizon.clamp_min(0)]).sum(2)  # [rows, H]
    rest = torch.logsumexp(logits, dim=1, keepdim=True)
    each = torch.logaddexp(positive, rest) - positive
    return ((each * valid).sum(1) / valid.sum(1)).mean()
