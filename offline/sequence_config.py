"""The job's ``sequence`` section: whether the learn stage trains the learned profile encoder
(``offline.sequence``, issue 34) and its settings. The encoder is published only where it
beats the hybrid on the same validation users by more than one standard error of the paired
differences (``offline.learn_sequence``); otherwise its scores are only recorded.

Torch-free on purpose: the config is read (and ``--help`` shown) without importing torch.
The knobs mirror ``offline.sequence.model.SequenceConfig`` (its defaults; a test keeps them
equal), except ``k`` (the learn stage's metric, recall@20) and ``seed`` (the job's)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from groundrec.shared.config import StrictModel
from groundrec.shared.errors import UserError


class SequenceJobConfig(StrictModel):
    """The learned profile encoder in the offline job (used when interactions.path is set)."""

    enabled: Literal["auto"] | bool = Field(
        False, description="train the encoder in the learn stage, score it on the hybrid's validation users and "
        "publish it (sequence/, default_strategy sequence) only where it beats the hybrid by more than one "
        "standard error of the paired per-user differences; true or auto: on when the job has interactions; "
        "false (the default for now: its training is capped by wall time, so on a loaded machine the decision "
        "can differ, it costs 3.7-4.6x the learn stage on retail, and eval's published row does not train it "
        "yet): not trained (the version is the hybrid, nothing recorded)")
    max_len: int = Field(50, ge=1, le=1024, description="the latest items of a history the encoder reads")
    dim: int = Field(64, ge=4, le=1024, description="the transformer's width")
    blocks: int = Field(2, ge=1, le=12, description="transformer blocks (causal self-attention + feed-forward)")
    heads: int = Field(1, ge=1, le=16, description="attention heads (dim must be a multiple)")
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout in training")
    id_dropout: float = Field(0.1, ge=0, le=1, description="in training, a warm item's id embedding is dropped "
                              "this often (the encoder learns to read an item's vectors, which new items have)")
    skip_repeats: bool = Field(True, description="no loss on a next item already in the history (the service "
                               "excludes seen items)")
    epochs: int = Field(40, ge=1, description="most epochs of a training (early stopping usually ends it sooner)")
    patience: int = Field(3, ge=1, description="epochs without a better early-stopping recall before stopping")
    batch_size: int = Field(128, ge=1, description="training sequences per step")
    lr: float = Field(3e-3, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    valid_users: int = Field(2_000, ge=10, description="users whose last new item is held out of the encoder's "
                             "training for early stopping (never the hybrid's validation users' items, which "
                             "are already out of the training part)")
    threads: int = Field(1, ge=1, le=256, description="torch threads while training and onnxruntime threads of "
                         "the export's check (set on purpose: the job may share the machine)")
    max_seconds: float = Field(480.0, gt=0, description="a training stops after the epoch that passes this many "
                               "seconds (the learn stage trains up to twice: on validation, then, when it wins, "
                               "for the published version)")

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
