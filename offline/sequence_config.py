"""The job's ``sequence`` section: whether the learn stage trains the learned profile encoder
(``offline.sequence``, issue 34) and its settings. The encoder is published only where it
beats the hybrid on the same validation users by more than one standard error of the paired
differences (``offline.learn_sequence``); otherwise its scores are only recorded.

Torch-free on purpose: the config is read (and ``--help`` shown) without importing torch.
``SequenceConfig`` (the encoder's settings, which ``offline.sequence`` trains with) is defined
here once; the job's section takes its defaults from it and adds the edge checks, except ``k``
(the learn stage's metric, recall@20) and ``seed`` (the job's)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from pydantic import Field, model_validator

from groundrec.shared.config import StrictModel
from groundrec.shared.errors import UserError


NATIVE_BF16 = ("avx512_bf16", "amx_bf16")  # CPU flags under which bfloat16 products are faster than float32


def resolved_precision(precision: str, flags: frozenset[str] | None = None) -> str:
    """``float32`` or ``bfloat16`` for the full softmax's products: ``auto`` is bfloat16 where
    the CPU's ``flags`` (default: this machine's) include one of ``NATIVE_BF16`` (without them
    torch emulates it, slower than float32), else float32."""
    if precision != "auto":
        return precision
    flags = cpu_flags() if flags is None else flags
    return "bfloat16" if flags.intersection(NATIVE_BF16) else "float32"


def cpu_flags() -> frozenset[str]:
    """This machine's CPU flags (Linux's /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            return frozenset(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        return frozenset()


@dataclass
class SequenceConfig:
    """The encoder's shape and its training settings (``offline.sequence.train``)."""

    max_len: int = 50  # the latest items of a history that are read
    dim: int = 64
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.2
    id_dropout: float = 0.1  # in training, a warm item's id embedding is dropped this often (teaches the vectors)
    skip_repeats: bool = True  # no loss on a target already in its history (eval and the service exclude seen items)
    epochs: int = 40  # most epochs of a training (the budget is work, never wall time)
    patience: int = 3  # epochs without a better validation recall before stopping
    max_steps: int = 600  # most optimizer steps of a training (0: epochs and patience alone bound it)
    refit_epochs: int = 2  # the published encoder: epochs on every history from validation's weights
    batch_size: int = 128
    negatives: int = 0  # items drawn per step for the softmax, shared by the batch (0, or at least every item: all)
    horizon: int = 5  # each position's targets: its next `horizon` new items (the loss their mean cross-entropy)
    cold_negatives: bool = True  # the softmax over every item (False: over the warm ones, those with an id embedding)
    lr: float = 3e-3
    weight_decay: float = 0.01
    valid_users: int = 2000  # held out (their last new item) when no validation set is given
    scale: float = 5.0  # the softmax temperature's start (logits = scale x unit query . index vector), learned
    scale_lr: float = 0.03  # the temperature's own AdamW rate (0: lr; one scalar moves about its rate a step in log space)
    out_init: str = "random"  # the output layer's start: random (torch's), or principal (the index rows' leading directions)
    k: int = 20  # validation recall@k
    threads: int = 2  # torch.set_num_threads while training (set on purpose: a seeded training is the same per count)
    precision: str = "float32"  # the full softmax's products: float32, bfloat16, or auto (bfloat16 where the CPU has it)
    device: str = "auto"  # where training runs: auto (a CUDA GPU when torch sees one, else the CPU), cpu or cuda
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def __post_init__(self) -> None:
        self.precision = resolved_precision(self.precision)  # auto: decided here, once (what a manifest records)


_D = SequenceConfig()  # the defaults, in one place


class SequenceJobConfig(StrictModel):
    """The learned profile encoder in the offline job (used when interactions.path is set)."""

    enabled: Literal["auto"] | bool = Field(
        False, description="train the encoder in the learn stage, score it on the hybrid's validation users and "
        "publish it (sequence/, default_strategy sequence) only where it beats the hybrid by more than one "
        "standard error of the paired per-user differences; true or auto: on when the job has interactions; "
        "false (the default: it costs about 6x the learn stage on retail, and on retail's whole baskets it "
        "scores a third of the hybrid; docs/evaluation.md, \"Whole baskets\"): not trained (the version is the "
        "hybrid, nothing recorded)")
    max_len: int = Field(_D.max_len, ge=1, le=1024, description="the latest items of a history the encoder reads")
    dim: int = Field(_D.dim, ge=4, le=1024, description="the transformer's width")
    blocks: int = Field(_D.blocks, ge=1, le=12, description="transformer blocks (causal self-attention + feed-forward)")
    heads: int = Field(_D.heads, ge=1, le=16, description="attention heads (dim must be a multiple)")
    dropout: float = Field(_D.dropout, ge=0, lt=1, description="dropout in training")
    id_dropout: float = Field(_D.id_dropout, ge=0, le=1, description="in training, a warm item's id embedding is dropped "
                              "this often (the encoder learns to read an item's vectors, which new items have)")
    skip_repeats: bool = Field(_D.skip_repeats, description="no loss on a next item already in the history (the service "
                               "excludes seen items)")
    epochs: int = Field(_D.epochs, ge=1, description="most epochs of a training (early stopping usually ends it sooner)")
    patience: int = Field(_D.patience, ge=1, description="epochs without a better early-stopping recall before stopping")
    batch_size: int = Field(_D.batch_size, ge=1, description="training sequences per step")
    negatives: int = Field(_D.negatives, ge=0, description="the loss: a softmax of each next item against this many "
                           "items drawn at random each step, shared by the batch; 0, or at least the catalog's item "
                           "count (the default): a full softmax over every item; 1024 is no cheaper a step on retail since "
                           "the softmax in blocks and scores 0.0034 lower (docs/benchmarks.md, \"A training step\")")
    horizon: int = Field(_D.horizon, ge=1, le=100, description="the loss's targets at each position: the next this "
                         "many items new to the history (their mean cross-entropy under one softmax); 1: the next "
                         "item alone; 5 (the default) scored +0.0066 recall@20 over 1 on eval's retail validation "
                         "(p = 0.01; docs/hybrid.md)")
    cold_negatives: bool = Field(_D.cold_negatives, description="the loss's softmax over every item (true) or only "
                                 "the items with training interactions (false: the encoder is never taught to push "
                                 "down the items nobody interacted with, which new items' vectors resemble)")
    lr: float = Field(_D.lr, gt=0, description="AdamW learning rate")
    scale: float = Field(_D.scale, gt=0, le=1000, description="the training softmax's starting multiplier (logits = "
                         "scale x unit query . index row; learned from there; the manifest records the learned one): "
                         "with scale_lr it travels from there to where the catalog wants it (docs/hybrid.md, \"The "
                         "softmax's starting temperature\")")
    scale_lr: float = Field(_D.scale_lr, ge=0, description="the softmax multiplier's own AdamW learning rate (0: "
                            "lr): a single scalar moves about its rate a step in log space, so at lr it cannot "
                            "travel from its start to where a catalog wants it (about 5 on a dense synthetic "
                            "catalog, 15 and 140 on retail's exact and factorised indexes) within a training "
                            "(docs/hybrid.md, \"The temperature's own rate\")")
    out_init: Literal["random", "principal"] = Field(
        _D.out_init, description="the output layer's start (the map from the transformer's width to the index's): "
        "random (torch's default), or principal: the index rows' leading right singular vectors, so that every "
        "item's key starts as its best rank-dim approximation; helped retail's two indexes, cost a dense synthetic "
        "catalog (docs/hybrid.md, \"The temperature's own rate, and the output layer's start\")")
    weight_decay: float = Field(_D.weight_decay, ge=0, description="AdamW weight decay")
    valid_users: int = Field(_D.valid_users, ge=10, description="users whose last new item is held out of the encoder's "
                             "training for early stopping (never the hybrid's validation users' items, which "
                             "are already out of the training part)")
    threads: int = Field(_D.threads, ge=1, le=256, description="torch threads while training and onnxruntime threads of "
                         "the export's check (set on purpose: nothing else of the learn stage runs beside the "
                         "training; a seeded training is the same for a given count, whatever the machine's load)")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        _D.precision, description="the full softmax's matrix products in training: float32 (the default: a "
        "seeded training is the same on every run), bfloat16 (each block's exponentials and sums stay float32; on "
        "retail a learn stage 8% shorter, the same validation recall, but not bit-for-bit the same from run to run), "
        "or auto: bfloat16 where the CPU multiplies it natively (avx512_bf16 or amx_bf16), else float32; the "
        "manifest records the precision used (docs/hybrid.md)")
    device: Literal["auto", "cpu", "cuda"] = Field(
        _D.device, description="where the encoder trains: auto (the default: a CUDA GPU when the process that trains "
        "sees one, else the CPU; on the Ray runner each training is a Ray task given a GPU when the cluster has one), "
        "cpu, or cuda (refused as the runner starts when it has no GPU); the manifest's trainings record the device "
        "used. A seeded training is the same from run to run on the CPU, not on a GPU "
        "(torch's scatter-adds) nor from one device to the other")
    max_steps: int = Field(_D.max_steps, ge=0, description="most optimizer steps of a training (batches; 0: no cap "
                           "beyond epochs and patience): a budget in work, so the same seeded run decides the same "
                           "on a loaded machine")
    refit_epochs: int = Field(_D.refit_epochs, ge=0, description="the published encoder (when it wins): epochs on every "
                              "history starting from the weights validation chose (carried over to the final "
                              "index's vectors), at most validation's best epoch; the best of them (0: the carried "
                              "weights) on its early-stopping users is exported")

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> "SequenceJobConfig":
        if self.dim % self.heads:
            raise UserError(f"sequence.dim ({self.dim}) must be a multiple of sequence.heads ({self.heads})")
        return self

    def active(self, has_interactions: bool) -> bool:
        """Whether the learn stage trains the encoder."""
        return bool(has_interactions) if self.enabled == "auto" else bool(self.enabled and has_interactions)

    def encoder_settings(self, k: int, seed: int) -> dict:
        """The keyword arguments of ``offline.sequence.model.SequenceConfig``."""
        return {**self.model_dump(exclude={"enabled"}), "k": k, "seed": seed}
