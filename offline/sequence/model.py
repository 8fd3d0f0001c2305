"""The learned profile encoder: a small causal transformer over a user's history (SASRec /
gSASRec style) whose output is a query for the version's index (inner product).

An item's input is ``W x + b + id`` where ``x`` is the item's published vectors (content, and
collaborative where the version has them: ``item_inputs``) and ``id`` a learned embedding for
a *warm* item (one seen in training); a cold or new item's id part is zero, so it still has
an input from its vectors. Because that input is linear in the item's vectors, every item's
input is one row of a table (``item_table``: items + 1 rows, the last a zero pad) that the
export writes beside the graph, and a new item's row is ``W x + b``.

A history is its latest ``max_len`` known item rows, left-padded with -1 (the one rule,
``groundrec.shared.sequence_encoder.pad_histories``): the newest item sits in the last slot,
and a position is counted from the end (the newest is position 0), so the last slot's output,
projected to the index's width (``out_dim``) and scaled to unit length, is the query. An empty
history (no known item) gives a zero query.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from groundrec.offline.sequence_config import SequenceConfig  # noqa: F401  (the settings, torch-free)
from groundrec.shared.sequence_encoder import PAD, pad_histories  # noqa: F401  (PAD: an empty slot)


@contextmanager
def torch_threads(n: int):
    """torch's intra-op thread count set to ``n`` for the block, and restored after: a training
    and every encoding of the model run at ``SequenceConfig.threads`` (float sums, and so a
    decision near a tie, the same whatever the machine's default)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose mask is drawn with ``uniform_`` (on the CPU about half the time of
    the ``bernoulli_`` it replaces, which torch's profiler put at a seventh of a training step
    on retail): in training an element is kept when its draw is at least ``p`` and scaled by
    ``1 / (1 - p)``; in eval mode (what the export traces) the identity."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.p:
            return x
        if self.p >= 1:
            return torch.zeros_like(x)
        return x * torch.empty_like(x).uniform_().ge_(self.p).mul_(1.0 / (1.0 - self.p))


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention, then a feed-forward layer."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), Dropout(dropout), nn.Linear(4 * dim, dim))
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor | None = None,
                last: bool = False) -> torch.Tensor:
        """``[batch, slots, dim]``, or with ``rows`` (a bool mask ``[batch, slots]``) only those
        slots' outputs, ``[rows, dim]``: the attention reads every slot, the projection and the
        feed-forward run on the wanted ones alone. ``last``: only the last slot's output,
        ``[batch, 1, dim]`` (its query row of the attention, its projection and feed-forward)."""
        b, n, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
        if last:  # the query's slot alone: one row of the attention, then its projection and feed-forward
            q, bias, x, n = q[:, :, -1:], bias[:, :, -1:], x[:, -1:], 1
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // h) + bias, dim=-1)
        y = (self.drop(att) @ v).transpose(1, 2).reshape(b, n, d)
        if rows is not None:
            x, y = x[rows], y[rows]
        x = x + self.drop(self.proj(y))
        return x + self.drop(self.ff(self.norm2(x)))


class Encoder(nn.Module):
    """What the ONNX file holds: embedded histories (``[batch, slots, dim]``, the item table's
    rows; ``slots`` up to ``max_len``, the histories' last ones) and which slots hold an item
    (``[batch, slots]``, 1.0 or 0.0) -> queries (``[batch, out_dim]``)."""

    def __init__(self, cfg: SequenceConfig, out_dim: int):
        super().__init__()
        self.max_len = cfg.max_len
        self.position = nn.Embedding(cfg.max_len, cfg.dim)
        self.drop = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.dropout) for _ in range(cfg.blocks))
        self.norm = nn.LayerNorm(cfg.dim)
        self.out = nn.Linear(cfg.dim, out_dim)
        causal = torch.tril(torch.ones(cfg.max_len, cfg.max_len, dtype=torch.bool))
        self.register_buffer("causal", causal, persistent=False)
        self.register_buffer("from_end", torch.arange(cfg.max_len - 1, -1, -1), persistent=False)
        self.register_buffer("eye", torch.eye(cfg.max_len, dtype=torch.bool), persistent=False)
        self.last_only = True  # forward's last block computes the query's slot alone (False: every slot)

    def hidden(self, x: torch.Tensor, valid: torch.Tensor, rows: torch.Tensor | None = None,
               last: bool = False) -> torch.Tensor:
        """Every slot's output (``[batch, slots, dim]``): slot i sees slots <= i that hold an
        item, and itself (a pad slot then sees only itself: no slot is left with nothing).
        ``slots`` may be fewer than ``max_len`` (training cuts a batch's leading empty slots,
        serving feeds short histories their last slots): the kept slots' outputs are the same as
        at full length.
        ``rows`` (training: the slots with a next item to predict, a bool mask): only those
        slots' outputs, ``[rows, dim]``, the last block's feed-forward run on them alone.
        ``last`` (serving): the last slot's output alone, ``[batch, 1, dim]``, the same values."""
        n = x.shape[1]  # the export traces it: its slots axis is dynamic
        causal, from_end, eye = self.causal[:n, :n], self.from_end[-n:], self.eye[:n, :n]
        allowed = (causal & (valid[:, None, :] > 0)) | eye
        bias = torch.where(allowed, 0.0, -1e9)[:, None, :, :]
        x = self.drop((x + self.position(from_end)[None]) * valid[..., None])
        for i, block in enumerate(self.blocks):
            final = i == len(self.blocks) - 1
            x = block(x, bias, rows if final else None, last and final)
        return self.norm(x)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        query = self.out(self.hidden(x, valid, last=self.last_only)[:, -1])
        query = query / query.norm(dim=1, keepdim=True).clamp_min(1e-12)  # unit length: a ranking needs no scale
        return query * (valid.sum(1, keepdim=True) > 0).to(query.dtype)  # an empty history: a zero query


def start_at_principal(out: nn.Linear, index: torch.Tensor) -> None:
    """Start the output layer (``[out_dim, dim]``) at the index rows' leading right singular
    vectors (as many as the width, uncentred: the inner product ranks by them), each item's key
    ``index @ W`` then its best rank-``dim`` approximation rather than a random projection of
    its row, and the bias at zero. The vectors are scaled to torch's default start's spread
    (uniform within ``1 / sqrt(dim)``), so that the optimizer's steps are the same size
    relative to the weights; directions beyond the index's rank keep their random start
    (docs/hybrid.md, "The temperature's own rate, and the output layer's start")."""
    dim = out.in_features
    rank = min(dim, *index.shape)
    # its own draws: the training's stay as they were (manual_seed seeds CUDA's generators too,
    # so the device of the index is restored as well: a GPU training's draws followed seed 0)
    gpus = [index.device.index or 0] if index.is_cuda else []
    with torch.no_grad(), torch.random.fork_rng(devices=gpus):
        torch.manual_seed(0)
        _, _, v = torch.svd_lowrank(index.float(), q=min(rank + 16, *index.shape), niter=4)  # v: [out_dim, q]
        spread = 1.0 / math.sqrt(3 * dim)  # the default start's standard deviation
        out.weight[:, :rank] = v[:, :rank] * spread * math.sqrt(out.out_features)
        out.bias.zero_()


class SequenceModel(nn.Module):
    """The encoder with the item inputs it learns from: ``item_inputs`` (items x d_in, the
    published vectors, fixed) projected to ``dim`` plus an id embedding for ``warm`` items."""

    def __init__(self, item_inputs: np.ndarray, warm: np.ndarray, out_dim: int, cfg: SequenceConfig):
        super().__init__()
        self.cfg = cfg
        self.log_scale = nn.Parameter(torch.tensor(math.log(cfg.scale)))  # training's softmax temperature, learned
        n, d_in = item_inputs.shape
        self.register_buffer("inputs", torch.as_tensor(np.asarray(item_inputs, np.float32)))
        self.register_buffer("warm", torch.as_tensor(np.asarray(warm, bool), dtype=torch.float32)[:, None])
        self.project = nn.Linear(d_in, cfg.dim)
        self.ids = nn.Embedding(n, cfg.dim)
        nn.init.normal_(self.ids.weight, std=0.02)
        self.encoder = Encoder(cfg, out_dim)

    @property
    def n_items(self) -> int:
        return int(self.inputs.shape[0])

    def item_table(self) -> torch.Tensor:
        """Each item's input (items + 1 rows; the last, the pad, zeros). In training a warm
        item's id part is dropped at random (``id_dropout``), the same for every slot of a batch."""
        ids = self.ids.weight * self.warm
        if self.training and self.cfg.id_dropout:
            ids = ids * (torch.rand(len(ids), 1, device=ids.device) >= self.cfg.id_dropout).to(ids.dtype)
        rows = self.project(self.inputs) + ids
        return torch.cat([rows, rows.new_zeros(1, rows.shape[1])])

    def embed(self, items: torch.Tensor, table: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded histories (``[batch, max_len]`` item rows, -1 empty) -> (embedded, valid)."""
        table = self.item_table() if table is None else table
        valid = (items >= 0) & (items < self.n_items)
        return table[torch.where(valid, items, self.n_items)], valid.to(table.dtype)

    def hidden(self, items: torch.Tensor, table: torch.Tensor | None = None,
               rows: torch.Tensor | None = None) -> torch.Tensor:
        """Every slot's output for padded histories of up to ``max_len`` slots (training cuts a
        batch's leading empty slots), or the ``rows`` slots' alone (``Encoder.hidden``)."""
        return self.encoder.hidden(*self.embed(items, table), rows=rows)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return self.encoder(*self.embed(items))

    def encode(self, histories: list, batch_size: int = 512) -> np.ndarray:
        """Queries for these histories (lists of item rows, oldest first), in eval mode,
        float32 ``[n, out_dim]``: the reference the ONNX export is checked against."""
        was = self.training
        self.eval()
        out = []
        with torch.no_grad(), torch_threads(self.cfg.threads):
            table = self.item_table()
            for start in range(0, len(histories), batch_size):
                items = torch.as_tensor(pad_histories(histories[start:start + batch_size], self.cfg.max_len, self.n_items))
                out.append(self.encoder(*self.embed(items.to(table.device), table)).cpu().numpy())
        self.train(was)
        return np.concatenate(out) if out else np.zeros((0, self.encoder.out.out_features), np.float32)

