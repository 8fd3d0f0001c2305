"""SASRec as published (Kang & McAuley, ICDM 2018), eval's reference for the learned profile
encoder (issue 34): the same kind of causal transformer over a history, but the published
recipe's inputs and loss: each item is a learned id embedding only (no content, no
collaborative vectors; an item never seen in training keeps its random start), the same
embeddings score the items at the output (tied), and the loss is binary cross-entropy of the
next item against one item drawn at random per position (uniformly), with Adam (lr 1e-3,
betas 0.9 and 0.98), 50 dimensions, 2 blocks, 1 head, the latest 50 items, every next item a
target (repeats too), and the paper's dropout for dense (0.2) or sparse (0.5) data, chosen on
validation.

Where this differs from the paper: the blocks are the encoder's own (``offline.sequence.model``:
pre-norm, GELU), the negative may be an item of the user's history, and training stops on
eval's validation users (recall@k, ``patience`` epochs without a better one, at most
``max_steps`` steps) instead of running a fixed 200 epochs; the test row is then retrained on every user's training and
validation parts for the chosen number of epochs, within the same step cap (as eval refits
ALS with its chosen settings). Scores are ``last slot's output . item embedding``; seen items are excluded by eval.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from groundrec.offline.evaluation.systems import System
from groundrec.offline.sequence.model import Encoder, SequenceConfig
from groundrec.offline.sequence.train import epoch_batches, recall_at, training_windows
from groundrec.shared.errors import UserError
from groundrec.shared.sequence_encoder import pad_histories

SASREC = "SASRec (as published: item ids, binary cross-entropy, 1 negative)"


@dataclass
class SASRecSettings:
    """The published recipe's settings, and the training's budget (work, never seconds)."""

    dim: int = 50
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.2
    max_len: int = 50
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 200  # at most (the paper's fixed count)
    patience: int = 20  # epochs without a better validation recall before stopping (its loss plateaus early)
    max_steps: int = 4000  # optimizer steps at most (0: epochs and patience alone)
    k: int = 20
    threads: int = 2
    seed: int = 0


class SASRec(nn.Module):
    def __init__(self, n_items: int, s: SASRecSettings):
        super().__init__()
        self.n_items, self.scale = n_items, math.sqrt(s.dim)
        self.items = nn.Embedding(n_items + 1, s.dim)  # the last row: the empty slot
        nn.init.normal_(self.items.weight, std=1.0 / math.sqrt(s.dim))
        cfg = SequenceConfig(max_len=s.max_len, dim=s.dim, blocks=s.blocks, heads=s.heads, dropout=s.dropout)
        self.encoder = Encoder(cfg, s.dim)  # its blocks, positions and norm (its output layer is not used)

    def hidden(self, x: torch.Tensor, rows: torch.Tensor | None = None, last: bool = False) -> torch.Tensor:
        valid = x >= 0
        e = self.items(torch.where(valid, x, self.n_items)) * self.scale
        return self.encoder.hidden(e, valid.to(e.dtype), rows=rows, last=last)

    def queries(self, histories: list, batch_size: int = 512) -> np.ndarray:
        """The last slot's output per history (zeros for an empty one), in eval mode."""
        was = self.training
        self.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(histories), batch_size):
                x = torch.as_tensor(pad_histories(histories[start:start + batch_size], self.encoder.max_len,
                                                  self.n_items))
                q = self.hidden(x, last=True)[:, -1]
                out.append((q * (x >= 0).any(1, keepdim=True)).numpy())
        self.train(was)
        return np.concatenate(out) if out else np.zeros((0, self.items.embedding_dim), np.float32)

    def item_vectors(self) -> np.ndarray:
        return self.items.weight[:self.n_items].detach().numpy()


@dataclass
class SASRecSystem(System):
    model: SASRec
    params: dict
    name: str = SASREC
    representation: str = "interactions"

    def scores(self, histories, history_ts):
        return self.model.queries([np.asarray(h, np.int64) for h in histories]) @ self.model.item_vectors().T


def train_sasrec(histories: list, n_items: int, s: SASRecSettings, valid: tuple[list, list] | None = None,
                 epochs: int | None = None, log=None) -> tuple[SASRec, dict]:
    """SASRec trained on ``histories`` (item rows, oldest first): with ``valid`` (histories,
    relevant item sets) stopped on its recall@k and the best epoch's weights kept; with
    ``epochs``, exactly that many (the refit). ``log``: called with each epoch's line. Returns
    the model and what the training did (``valid_per_user``: the best epoch's recall@k per
    validation user)."""
    started, threads = time.perf_counter(), torch.get_num_threads()
    torch.set_num_threads(s.threads)
    try:
        torch.manual_seed(s.seed)
        rng = np.random.default_rng(s.seed)
        model = SASRec(n_items, s)
        opt = torch.optim.Adam(model.parameters(), lr=s.lr, betas=(0.9, 0.98))
        x_all, y_all = (torch.as_tensor(a) for a in training_windows(histories, s.max_len, skip_repeats=False))
        if not len(x_all):
            raise UserError("SASRec: no history of two items or more to train on")
        best, best_state, best_epoch, since, steps, lines, per_user = -1.0, None, 0, 0, 0, [], None
        for epoch in range(1, (epochs or s.epochs) + 1):
            model.train()
            total, seen = 0.0, 0
            for x, y in epoch_batches(s, x_all, y_all, rng):
                if s.max_steps and steps >= s.max_steps:
                    break
                keep = y >= 0
                h = model.hidden(x, rows=keep)
                pos = y[keep]
                neg = (pos + torch.randint(1, n_items, pos.shape)) % n_items  # any other item, uniformly
                table = model.items.weight
                logits = torch.stack([(h * table[pos]).sum(1), (h * table[neg]).sum(1)], 1)
                labels = torch.zeros_like(logits)
                labels[:, 0] = 1.0
                loss = nn.functional.binary_cross_entropy_with_logits(logits, labels) * 2  # both terms, per position
                opt.zero_grad()
                loss.backward()
                opt.step()
                steps += 1
                total, seen = total + float(loss.detach()) * len(pos), seen + len(pos)
            line = {"epoch": epoch, "loss": round(total / max(seen, 1), 4), "steps": steps}
            if valid is not None:
                recall = recall_at(model.queries(valid[0]), model.item_vectors(), valid[0], valid[1], s.k)
                line[f"valid_recall@{s.k}"] = round(float(recall.mean()), 5)
                if recall.mean() > best:
                    best, best_epoch, since, per_user = float(recall.mean()), epoch, 0, recall
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    since += 1
            lines.append(line)
            if log:
                log(line)
            if (s.max_steps and steps >= s.max_steps) or (valid is not None and since >= s.patience):
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        report = {**asdict(s), "best_epoch": best_epoch if valid is not None else len(lines), "steps": steps,
                  "valid_recall": round(best, 5) if valid is not None else None,
                  "seconds": round(time.perf_counter() - started, 1), "epochs_run": len(lines),
                  "valid_per_user": per_user}
        return model, report
    finally:
        torch.set_num_threads(threads)
