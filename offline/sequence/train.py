"""Training the profile encoder (``offline.sequence.model``): next-item prediction at every
position of the training histories, a softmax of each position's query against the items'
index vectors (``logits = scale x query . target_item``: the inner product the index ranks
by, the query at unit length, the scale learned): over every item, or over ``negatives``
items drawn each step and shared by the batch (``offline.sequence.loss``),
AdamW, early stopping on validation recall@k. The budget is counted in work (epochs and
optimizer steps), never in seconds: seeded, with torch's thread count set from the config for
the run (and restored after), a training is the same whatever else the machine runs (for a
given ``precision`` of the softmax's products and device: ``device`` auto trains on a CUDA GPU
when torch sees one, and the trained model is handed back on the CPU either way). A
training can start from another model's weights (``carried_over``: the published encoder
starts from the one validation chose).

Validation: either given (histories and their relevant items, e.g. ``groundrec eval``'s
validation users) or drawn here: up to ``valid_users`` users have the new items of their last
moment held out (``offline.holdout.hold_out_last``; without times, the last item when new),
and the encoder trains on the rest. The training's targets stay the next items in the file's
order, a basket's too (targets of later moments only were tried on retail and scored lower).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from groundrec.offline.holdout import hold_out_last
from groundrec.offline.sequence.loss import next_item_loss
from groundrec.offline.sequence.model import PAD, SequenceConfig, SequenceModel, start_at_principal, torch_threads
from groundrec.shared.errors import UserError
from groundrec.shared.scoring.ranking import top_k_matrix


@dataclass
class Trained:
    model: SequenceModel
    valid_recall: np.ndarray  # per validation user, recall@k of the best epoch
    epochs: list[dict] = field(default_factory=list)  # per epoch: loss, validation recall, steps, seconds
    best_epoch: int = 0  # 0: the starting weights (a warm start) were never bettered
    seconds: float = 0.0
    windows: int = 0  # training sequences (a long history gives several)
    positions: int = 0  # next-item targets trained on per epoch
    steps: int = 0  # optimizer steps taken
    stopped: str = ""  # what ended the training: "patience", "epochs" or "max_steps"
    device: str = "cpu"  # where it trained (``resolved_device``)

    @property
    def score(self) -> float:
        return float(self.valid_recall.mean()) if len(self.valid_recall) else 0.0

    def report(self) -> dict:
        """What a manifest would record."""
        return {"config": self.model.cfg.to_dict(), "valid_recall": round(self.score, 6),
                "valid_users": int(len(self.valid_recall)), "best_epoch": self.best_epoch, "epochs": self.epochs,
                "steps": self.steps, "stopped": self.stopped, "seconds": round(self.seconds, 2),
                "windows": self.windows, "positions": self.positions, "device": self.device,
                "scale": round(float(self.model.log_scale.detach().exp()), 4),  # the softmax's multiplier, learned
                "parameters": int(sum(p.numel() for p in self.model.parameters()))}


def resolved_device(name: str) -> str:
    """Where a training runs: ``auto`` is ``cuda`` when torch sees a CUDA device, else ``cpu``;
    ``cuda`` without one is refused (a job told to use a GPU should not quietly take hours on
    the CPU)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"sequence.device is {name!r} but torch sees no CUDA device here (torch "
                        f"{torch.__version__}); set sequence.device to auto or cpu")
    return name


def training_windows(histories: list, max_len: int, skip_repeats: bool = True,
                     horizon: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets), right-aligned and -1 padded: a history of n items gives its
    next-item pairs in windows of ``max_len`` from its end; inputs ``[windows, max_len]``,
    targets the same or, with ``horizon`` H > 1, ``[windows, max_len, H]``: each position's
    next H items new to the history so far, read past the window's end (a position whose next
    item is a repeat still has the new ones after it). A target already in the history before
    it is -1 with ``skip_repeats`` (no loss)."""
    xs, ys = [], []
    for h in histories:
        h = np.asarray(h, np.int64)
        if len(h) < 2:
            continue
        new = np.ones(len(h), bool)
        if skip_repeats:
            seen: set[int] = set()
            for t, item in enumerate(h.tolist()):
                new[t] = item not in seen
                seen.add(item)
        ahead = _ahead(h, new, horizon) if horizon > 1 else np.where(new, h, PAD)[1:]
        for end in range(len(h), 1, -max_len):
            start = max(0, end - max_len - 1)
            x, y = h[start:end - 1], ahead[start:end - 1]
            if (y >= 0).any():
                pad = [(max_len - len(x), 0)] + [(0, 0)] * (y.ndim - 1)
                xs.append(np.pad(x, pad[0], constant_values=PAD))
                ys.append(np.pad(y, pad, constant_values=PAD))
    if not xs:
        shape = (0, max_len) if horizon <= 1 else (0, max_len, horizon)
        return np.zeros((0, max_len), np.int64), np.zeros(shape, np.int64)
    return np.stack(xs), np.stack(ys)


def _ahead(h: np.ndarray, new: np.ndarray, horizon: int) -> np.ndarray:
    """``[len(h) - 1, horizon]``: for each position t, the items of the first ``horizon``
    slots after t that hold an item new to the history (``new``: first occurrences), -1
    padded, left-packed; with ``new`` all true (no ``skip_repeats``), the next ``horizon``."""
    at = np.flatnonzero(new)
    if not len(at):
        return np.full((len(h) - 1, horizon), PAD, np.int64)
    nth = np.searchsorted(at, np.arange(1, len(h)))[:, None] + np.arange(horizon)  # which new items, per position
    return np.where(nth < len(at), h[at[np.minimum(nth, len(at) - 1)]], PAD)


def recall_at(queries: np.ndarray, targets: np.ndarray, histories: list, relevant: list[set], k: int) -> np.ndarray:
    """Per user, recall@k of ranking every item by ``queries . targets`` with the history's
    items excluded (as eval and the service rank)."""
    out = np.zeros(len(relevant))
    for start in range(0, len(relevant), 1024):
        stop = start + 1024
        ranked = top_k_matrix(queries[start:stop] @ targets.T, k, list(histories[start:stop]))
        out[start:stop] = [len(rel.intersection(row.tolist())) / len(rel)
                           for row, rel in zip(ranked, relevant[start:stop])]
    return out


def _validation(histories: list, cfg: SequenceConfig, valid, times) -> tuple[list, list, list[set]]:
    if valid is not None:
        v_hist, v_rel = valid
        return list(histories), list(v_hist), [set(map(int, r)) for r in v_rel]
    train, users, held = hold_out_last([np.asarray(h, np.int64) for h in histories], cfg.valid_users, cfg.seed, times)
    return train, [train[u] for u in users], [set(t.tolist()) for t in held]


def train_sequence_encoder(histories: list, item_vectors: np.ndarray, warm_items: np.ndarray | None = None,
                           cfg: SequenceConfig | None = None, targets: np.ndarray | None = None,
                           valid: tuple[list, list] | None = None, log=None, start: dict | None = None,
                           times: list | None = None) -> Trained:
    """The encoder trained on ``histories`` (item rows, oldest first). ``item_vectors``: each
    item's published vectors (its input); ``targets``: what the index holds per item (the
    output space; default ``item_vectors``); ``warm_items``: bool per item, the items with an
    id embedding (default: those in ``histories``); ``valid``: (histories, relevant item rows)
    to stop on, else drawn from ``histories``: their last moments (``times``: each history's
    sorted timestamps; none: the last item). ``log``: called with each epoch's line.
    ``start``: weights to start from (``carried_over``), scored first as epoch 0.

    The budget is work, never the clock: at most ``cfg.epochs`` epochs and ``cfg.max_steps``
    optimizer steps (0: no step cap), stopped after ``cfg.patience`` epochs without a better
    validation recall; the best epoch's weights are kept. For a seed and a thread count the
    training is the same on a loaded machine as on a quiet one."""
    cfg = cfg or SequenceConfig()
    item_vectors = np.asarray(item_vectors, np.float32)
    targets = item_vectors if targets is None else np.asarray(targets, np.float32)
    n = len(item_vectors)
    if len(targets) != n:
        raise UserError(f"sequence encoder: {n} item inputs but {len(targets)} index vectors")
    train, v_hist, v_rel = _validation(histories, cfg, valid, times)
    if warm_items is None:
        warm_items = np.zeros(n, bool)
        for h in train:
            warm_items[np.asarray(h, np.int64)] = True
    x_all, y_all = training_windows(train, cfg.max_len, cfg.skip_repeats, cfg.horizon)
    if not len(x_all) or not v_rel:
        raise UserError(f"sequence encoder: {len(x_all)} training sequences and {len(v_rel)} validation users; "
                        "it needs histories of at least two items")
    device = torch.device(resolved_device(cfg.device))
    with torch_threads(cfg.threads):
        return _fit(cfg, item_vectors, targets, warm_items, x_all, y_all, v_hist, v_rel, log, start, device)


def carried_over(model: SequenceModel, old_targets: np.ndarray, item_vectors: np.ndarray, targets: np.ndarray) -> dict:
    """``model``'s weights (trained against ``old_targets``, the index vectors it was trained
    for) for the same items given other input vectors and index vectors (a
    refit's collaborative vectors are another basis): the input projection refitted by least
    squares so that every item's projected input is what ``model`` computed from its own
    inputs, and the output layer composed with the least-squares map from the new index
    vectors to ``model``'s (scores of every item kept as well as a linear map keeps them).
    The transformer, the id embeddings and the temperature are kept as they are."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if k not in ("inputs", "warm")}
    inputs = model.inputs.numpy().astype(np.float64)
    new_inputs = np.asarray(item_vectors, np.float64)
    if new_inputs.shape != inputs.shape or not np.allclose(new_inputs, inputs):
        with torch.no_grad():
            rows = model.project(model.inputs).numpy().astype(np.float64)
        a = np.hstack([new_inputs, np.ones((len(new_inputs), 1))])
        solution = np.linalg.lstsq(a, rows, rcond=None)[0]  # [d_in + 1, dim]
        state["project.weight"] = torch.as_tensor(solution[:-1].T, dtype=torch.float32)
        state["project.bias"] = torch.as_tensor(solution[-1], dtype=torch.float32)
    old_targets, new_targets = np.asarray(old_targets, np.float64), np.asarray(targets, np.float64)
    if old_targets.shape != new_targets.shape or not np.allclose(old_targets, new_targets):
        to_old = np.linalg.lstsq(new_targets, old_targets, rcond=None)[0]  # [d_new, d_old]
        weight = model.encoder.out.weight.detach().numpy().astype(np.float64)  # [d_old, dim]
        bias = model.encoder.out.bias.detach().numpy().astype(np.float64)
        state["encoder.out.weight"] = torch.as_tensor(to_old @ weight, dtype=torch.float32)
        state["encoder.out.bias"] = torch.as_tensor(to_old @ bias, dtype=torch.float32)
    return state


def epoch_batches(cfg, x_all, y_all, rng):
    """One epoch's batches (``cfg.batch_size`` windows) in a seeded random order, each cut to
    the slots that hold an item in some row (histories are left-padded: a batch of short ones
    needs no full-length pass). Eval's SASRec row batches the same way."""
    order = torch.as_tensor(rng.permutation(len(x_all)))
    for first in range(0, len(x_all), cfg.batch_size):
        batch = order[first:first + cfg.batch_size]
        x, y = x_all[batch], y_all[batch]
        cut = int(torch.argmax((x >= 0).any(0).to(torch.int8)))  # the first slot any row holds an item in
        yield x[:, cut:], y[:, cut:]


def _warm_softmax(index: torch.Tensor, y: torch.Tensor, warm: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The index rows of the warm items and of every target, and the targets renumbered to
    them (-1 stays -1): a softmax that never pushes down the items nobody interacted with,
    which a new item's vectors resemble."""
    kept = torch.as_tensor(np.asarray(warm, bool)).clone()
    kept[y[y >= 0]] = True
    renumber = torch.full((len(kept) + 1,), PAD, dtype=torch.int64)  # the last: -1 stays -1
    renumber[:-1][kept] = torch.arange(int(kept.sum()))
    return index[kept], renumber[y]


def _fit(cfg, item_vectors, targets, warm, x_all, y_all, v_hist, v_rel, log, start, device) -> Trained:
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = SequenceModel(item_vectors, warm, targets.shape[1], cfg)
    if cfg.out_init == "principal":
        start_at_principal(model.encoder.out, torch.as_tensor(targets))
    model.to(device)  # the batches follow it there; the epochs' order and windows stay on the CPU
    rest = [p for name, p in model.named_parameters() if name != "log_scale"]
    opt = torch.optim.AdamW([{"params": rest}, {"params": [model.log_scale], "lr": cfg.scale_lr or cfg.lr}],
                            lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    t = torch.as_tensor(targets)
    x_all, y_all = torch.as_tensor(x_all), torch.as_tensor(y_all)
    if not cfg.cold_negatives:  # the softmax over warm items (and every target) alone
        t, y_all = _warm_softmax(t, y_all, warm)
    t = t.to(device)
    first = y_all if y_all.dim() == 2 else y_all[..., 0]  # a horizon's first target: whether a slot has any
    trained = Trained(model, np.zeros(0), windows=len(x_all), positions=int((first >= 0).sum()), device=str(device))
    best, best_state, since = -1.0, None, 0

    def scored(epoch: int, loss: float | None, tick: float) -> bool:
        nonlocal best, best_state, since
        recall = recall_at(model.encode(v_hist), targets, v_hist, v_rel, cfg.k)
        line = {"epoch": epoch, "loss": None if loss is None else round(loss, 4),
                f"valid_recall@{cfg.k}": round(float(recall.mean()), 5), "steps": trained.steps,
                "seconds": round(time.perf_counter() - tick, 2)}
        trained.epochs.append(line)
        if log:
            log(line)
        if recall.mean() > best:
            best, best_state, since = float(recall.mean()), copy.deepcopy(model.state_dict()), 0
            trained.best_epoch, trained.valid_recall = epoch, recall
            return True
        since += 1
        return False

    if start is not None:
        model.load_state_dict({**model.state_dict(), **start})
        scored(0, None, time.perf_counter())
    trained.stopped = "epochs"
    for epoch in range(1, cfg.epochs + 1):
        tick, total, seen = time.perf_counter(), 0.0, 0
        model.train()
        for x, y in epoch_batches(cfg, x_all, y_all, rng):
            if cfg.max_steps and trained.steps >= cfg.max_steps:
                break
            x, y = x.to(device), y.to(device)
            keep = (y if y.dim() == 2 else y[..., 0]) >= 0
            table = model.item_table()
            h = model.hidden(x, table, keep)  # the slots with a next item to predict
            loss = next_item_loss(h, model.encoder.out, model.log_scale, t, y[keep], cfg.negatives,
                                  cfg.precision == "bfloat16")
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            trained.steps += 1
            total, seen = total + float(loss.detach()) * int(keep.sum()), seen + int(keep.sum())
        scored(epoch, total / max(seen, 1), tick)
        if cfg.max_steps and trained.steps >= cfg.max_steps:
            trained.stopped = "max_steps"
            break
        if since >= cfg.patience:
            trained.stopped = "patience"
            break
    model.load_state_dict(best_state)
    model.to("cpu")  # what encodes, exports and carries over reads its weights here
    model.eval()
    trained.seconds = time.perf_counter() - started
    return trained
