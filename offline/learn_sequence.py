"""The learn stage's learned profile encoder (issue 34): trained, scored against the hybrid on
the same validation users, published only where it wins.

1. **Validation.** The encoder (``offline.sequence``) trains on the training part the hybrid
   was tuned on (every history, the held-out users' last new item removed), against the rows
   the index of the hybrid's chosen point holds (its validation fit at the chosen rank,
   weight and projection; content alone when the hybrid chose weight 0): its output is a
   query for that index, ranked by inner product. Its early stopping holds out the new items
   of other users' last moments (``early_stopping_split``: a whole basket, as validation holds
   out), never the validation users' items.
2. **The score** is recall@K of each validation user's held-out item, exactly as the hybrid's
   chosen point was scored (``holdout``), as the service answers a ``sequence`` request to that
   version: seen items excluded and, on a hybrid, each list holding the new items of the
   hybrid's own list for that user (its ``fresh_weight`` lift and ``fresh_slots`` places;
   ``Searcher.holding_new_of``): the encoder cannot rank items nobody has interacted with.
3. **The decision** (``selection.beats_by_one_standard_error``): published when the mean of
   the per-user differences (encoder - hybrid) is above one standard error of them.
4. **The published encoder** starts from the validation model's weights, carried over to the
   final (refitted) version's vectors (``sequence.train.carried_over``: the input projection
   and the output layer mapped by least squares, as a refit's collaborative vectors are in
   another basis), and trains ``refit_epochs`` more epochs (at most validation's best epoch) on
   every history; the best of those epochs (0: the carried weights) on its own early-stopping
   users is exported into the version's ``sequence/`` (checked against PyTorch) and the
   version's ``default_strategy`` is ``sequence``.

``SequenceOutcome.to_manifest()`` is the manifest's ``sequence`` (published or not).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from groundrec.offline.holdout import CHUNK, K, METRIC, hits, hold_out_last
from groundrec.offline.selection import beats_by_one_standard_error
from groundrec.offline.sequence_config import SequenceJobConfig
from groundrec.offline.tuning import HybridChoice, HybridTuning
from groundrec.shared.errors import UserError
from groundrec.shared.scoring.collab import index_rows
from groundrec.shared.sequence_encoder import item_inputs as encoder_inputs
from groundrec.shared.scoring.searcher import Searcher

log_failure = logging.getLogger("groundrec.offline").exception  # a failed training or export: the hybrid stands

RULE = "published when mean(encoder - hybrid) > one standard error of the paired per-user differences"


@dataclass
class SequenceOutcome:
    published: bool
    reason: str  # the decision in words (the job's summary line ends with it)
    validation: dict = field(default_factory=dict)  # encoder, hybrid, diff, se, users, metric, rule, early stopping
    config: dict = field(default_factory=dict)  # the encoder's settings (SequenceConfig)
    train_s: float = 0.0  # seconds training (validation, and the published encoder's when it won)
    training: dict = field(default_factory=dict)  # "validation" / "published": epochs, best epoch, parameters...
    model: object | None = None  # the published encoder (a SequenceModel), None when not published
    parity: dict | None = None  # the export's check against PyTorch (``export``)
    sample: list = field(default_factory=list, repr=False)  # histories the export is checked on (real ones)
    chosen: tuple | None = field(default=None, repr=False)  # (validation's model, its index rows): the refit's start

    def to_manifest(self) -> dict:
        return {"published": self.published, "reason": self.reason, "validation": self.validation,
                "config": self.config, "train_s": round(self.train_s, 2), "training": self.training,
                **({"parity": self.parity} if self.parity is not None else {})}

    def line(self) -> str:
        """The decision in one line (the job's summary)."""
        v = self.validation
        if "encoder" not in v:
            return f"not published: {self.reason}"
        figures = (f"{v['metric']} on {v['users']} validation users: encoder {v['encoder']:.4f}, hybrid "
                   f"{v['hybrid']:.4f}, difference {v['diff']:+.4f} (standard error {v['se']:.4f}); "
                   f"trained in {self.train_s:.0f} s")
        return (f"published (default strategy): {figures}" if self.published else
                f"not published: {figures}; {self.reason}")


def item_inputs(content: np.ndarray, model) -> np.ndarray:
    """What the encoder reads of each item (``shared.sequence_encoder.item_inputs``, the rule the
    service applies to a live item too): its content vector and, for a hybrid, its collaborative
    query- and item-side vectors at unit length (content-mapped for an item nobody interacted
    with, so a new item still has all of them)."""
    return encoder_inputs(content, *((model.query, model.item) if model is not None else ()))


def validation_index(scorer, choice: HybridChoice) -> tuple[np.ndarray, object]:
    """The rows the index of the hybrid's chosen point holds on validation (``JobScorer``'s fit at
    the chosen rank, weight and projection), and that fit (None: content alone)."""
    if not choice.hybrid:
        return np.ascontiguousarray(scorer.content, np.float32), None
    model = scorer.fitted(choice.reg, choice.dropout, choice.train_half_life_days).truncated(choice.rank)
    projection = scorer.projections.get(choice.rank) if choice.projected else None
    rows = index_rows(scorer.content, choice.weight * model.item, projection.item if projection is not None else None)
    return np.ascontiguousarray(rows, np.float32), model


def hybrid_hits(tuning: HybridTuning, choice: HybridChoice) -> np.ndarray:
    """The hybrid's per-user hits at its chosen point as published (its freshness prior and
    kept places for a hybrid; content alone's hits for weight 0): what the tuner scored."""
    last = tuning.last
    return np.asarray(last.scores[tuple(last.chosen[axis] for axis in last.axes)], np.float64)


def served_hits(queries: np.ndarray, index: np.ndarray, held: list[np.ndarray], targets: np.ndarray,
                new: np.ndarray | None = None, others: np.ndarray | None = None,
                prior: np.ndarray | None = None) -> np.ndarray:
    """Whether each user's target is in the top K of ``queries . index`` as the service ranks a
    ``sequence`` query (seen items excluded; on a hybrid version the list holds the ``new``
    items of the hybrid's list ``others``, a row per user: ``Searcher.rank_holding_new_of``),
    as ``holdout.published_hits`` scores the hybrid; ``prior``: the version's recent-popularity
    prior, added to every item's score as the service adds it to every strategy's (or a function
    of a slice of the rows giving a row of it each)."""
    found = []
    for start in range(0, len(held), CHUNK):
        part = slice(start, start + CHUNK)
        scores = np.asarray(queries[part], np.float32) @ index.T
        if prior is not None:
            scores += prior(part) if callable(prior) else prior
        if others is not None and new is not None and len(new):
            top = Searcher(len(index), new).top_matrix(scores, K, held[part], others=others[part])
            found.append((top == targets[part][:, None]).any(axis=1))
        else:
            found.append(hits(scores, held[part], targets[part]))
    return np.concatenate(found) if found else np.zeros(0, bool)


def _settings(cfg: SequenceJobConfig, seed: int):
    from groundrec.offline.sequence.model import SequenceConfig

    return SequenceConfig(**cfg.encoder_settings(K, seed))


def _trained_report(trained, runner=None) -> dict:
    report = trained.report()
    report.pop("config", None)
    report["ran_in"] = "ray task" if _on_ray(runner) else "job process"
    return report


def _on_ray(runner) -> bool:
    """Whether the encoder's trainings are Ray tasks: the job runs on the Ray runner."""
    return getattr(runner, "name", None) == "ray"


def check_device(cfg: SequenceJobConfig, runner) -> None:
    """Refuse ``device: cuda`` where the runner has no GPU (torch here for the local runner, the
    cluster's resources for Ray), before anything is grounded."""
    if cfg.device == "cuda" and not runner.gpus():
        raise UserError(f"sequence.device is 'cuda' but the {runner.name} runner has no GPU (local: torch sees no "
                        "CUDA device; ray: the cluster has none); set sequence.device to auto or cpu")


def _train(runner, cfg: SequenceJobConfig, *args, **kwargs):
    """``train_sequence_encoder`` as the runner's task (``run_task``): a call in this process
    (no runner, or the local one), or one Ray task holding ``cfg.threads`` CPUs and a GPU when
    the cluster has one (and ``device`` is not cpu): the task's torch then sees that GPU and
    ``device: auto`` trains on it."""
    from groundrec.offline.sequence.train import train_sequence_encoder

    if runner is None:
        return train_sequence_encoder(*args, **kwargs)
    if _on_ray(runner):
        kwargs.pop("log", None)  # a callback stays in this process
    gpus = 1 if cfg.device != "cpu" and runner.gpus() > 0 else 0
    return runner.run_task(train_sequence_encoder, args, kwargs, num_cpus=cfg.threads, num_gpus=gpus)


def early_stopping_split(train: list[np.ndarray], users: list[int], max_users: int, seed: int = 0,
                         times: list[np.ndarray] | None = None) -> tuple[list[np.ndarray], tuple[list, list]]:
    """The encoder's training histories and its early-stopping set: the new items of the last
    moment (``times``: each history's sorted timestamps; none: the last item) of up to
    ``max_users`` users held out, drawn from the users *not* validating the choice (``users``,
    whose histories already end before their held-out items and are trained on as they are);
    when no other user has one, from every user's training part."""
    validating = set(users)
    others = [h[:0] if u in validating else h for u, h in enumerate(train)]
    cut, held, targets = hold_out_last(others, max_users, seed, times)
    if not held:  # every candidate validates the choice (a small catalog): their training parts' last moments
        validating = set()
        cut, held, targets = hold_out_last(train, max_users, seed, times)
    histories = [train[u] if u in validating else cut[u] for u in range(len(train))]
    return histories, ([cut[u] for u in held], [t.tolist() for t in targets])


def choose(cfg: SequenceJobConfig, scorer, users: list[int], choice: HybridChoice, tuning: HybridTuning,
           seed: int = 0, log=None, runner=None, times: list[np.ndarray] | None = None) -> SequenceOutcome:
    """Train the encoder on ``scorer``'s training part against the chosen point's index rows
    (``_train``: in this process, or a Ray task with ``runner``), score it on ``scorer``'s
    validation users (``users``, whose held-out items it never sees) as the hybrid was scored,
    and decide. ``times``: each user's sorted timestamps (of the whole history; a training part
    is a prefix): early stopping holds out whole last moments (``early_stopping_split``)."""
    settings = _settings(cfg, seed)
    index, model = validation_index(scorer, choice)
    train, stopping = early_stopping_split(scorer.train, users, cfg.valid_users, seed, times)
    started = time.perf_counter()
    try:
        trained = _train(runner, cfg, train, item_inputs(scorer.content, model), None, settings,
                         targets=index, valid=stopping, log=log)
    except UserError as e:  # too little to train on: the hybrid stands, and the manifest says why
        return SequenceOutcome(False, f"not trained: {e}", {"metric": METRIC, "rule": RULE}, settings.to_dict(),
                               time.perf_counter() - started)
    except Exception as e:  # out of memory, a Ray task lost...: the encoder is an option of the version
        log_failure("the sequence encoder's training failed: the version is the hybrid")
        return SequenceOutcome(False, f"not trained: its training failed ({type(e).__name__}: {e})",
                               {"metric": METRIC, "rule": RULE}, settings.to_dict(), time.perf_counter() - started)
    train_s = time.perf_counter() - started
    fresh = (choice.fresh_weight, choice.fresh_slots) if choice.hybrid else (0.0, 0)
    others = scorer.published_lists(choice) if choice.hybrid else None  # the new items its lists hold
    queries = trained.model.encode(scorer.user_held)[scorer.owner]  # each user encoded once, a row per held-out item
    encoder = scorer.held_out.per_user(served_hits(queries, index, scorer.held, scorer.targets,
                                                   scorer.new if choice.hybrid else None, others, scorer.row_prior(choice)))
    hybrid = hybrid_hits(tuning, choice)
    rule = beats_by_one_standard_error(encoder, hybrid)
    validation = {"encoder": rule["candidate"], "hybrid": rule["incumbent"], "diff": rule["diff"], "se": rule["se"],
                  "users": rule["users"], "metric": METRIC, "rule": RULE,
                  "fresh_weight": fresh[0], "fresh_slots": fresh[1], "early_stopping_recall": round(trained.score, 6)}
    reason = ("it beats the hybrid by more than one standard error" if rule["wins"] else
              "it does not beat the hybrid by more than one standard error: the version is the hybrid")
    return SequenceOutcome(rule["wins"], reason, validation, settings.to_dict(), train_s,
                           {"validation": _trained_report(trained, runner)}, chosen=(trained.model, index))


def train_published(outcome: SequenceOutcome, cfg: SequenceJobConfig, histories: list[np.ndarray],
                    content: np.ndarray, model, index: np.ndarray, seed: int = 0, log=None,
                    runner=None, times: list[np.ndarray] | None = None) -> SequenceOutcome:
    """The winning encoder for the final version: validation's weights carried over to the
    final index rows ``index`` (``model``: its refitted collaborative model, None for content
    alone) and trained ``refit_epochs`` more epochs on every history (never more than
    validation's best epoch), keeping the best on early-stopping users drawn from them."""
    from groundrec.offline.sequence.train import carried_over

    settings = _settings(cfg, seed)
    best = int(outcome.training.get("validation", {}).get("best_epoch") or settings.epochs)
    inputs, index = item_inputs(content, model), np.ascontiguousarray(index, np.float32)
    start = carried_over(*outcome.chosen, inputs, index) if outcome.chosen is not None else None
    epochs = min(settings.refit_epochs, best) if start is not None else best  # no start: as long as validation's
    settings = replace(settings, epochs=epochs, patience=epochs + 1)  # every epoch runs; the best is kept
    started = time.perf_counter()
    try:
        trained = _train(runner, cfg, histories, inputs, None, settings, targets=index, log=log, start=start,
                         times=times)
    except Exception as e:  # out of memory, a Ray task lost...: the version is the hybrid, and says why
        log_failure("the sequence encoder's training for the final version failed: the version is the hybrid")
        outcome.published, outcome.model, outcome.chosen = False, None, None
        outcome.reason = f"{outcome.reason}, but its training for the final version failed ({type(e).__name__}: {e})"
        return outcome
    outcome.train_s += time.perf_counter() - started
    outcome.training["published"] = _trained_report(trained, runner)
    outcome.model, outcome.sample, outcome.chosen = trained.model, list(histories[:1000]), None
    return outcome


def export(outcome: SequenceOutcome, directory: Path, threads: int = 1) -> dict | None:
    """The published encoder exported into the version's ``sequence/`` folder and checked
    against PyTorch on 1,000 histories (the training's first, then the edge cases and random
    ones ``export.check_histories`` adds); the parity report is recorded. An export that fails
    its check is not published: the folder is removed and the version stays the hybrid, with
    the reason in the manifest (the encoder is an option of the version, not what makes one)."""
    from groundrec.offline.sequence.export import SequenceExportError, export_sequence_encoder

    try:
        outcome.parity = export_sequence_encoder(outcome.model, directory, outcome.sample, threads=threads)
    except Exception as e:  # its check, or an exporter or onnxruntime that refuses the graph
        if not isinstance(e, SequenceExportError):
            log_failure("the sequence encoder's ONNX export failed: the version is the hybrid")
        shutil.rmtree(directory, ignore_errors=True)
        outcome.published, outcome.model = False, None
        failed = "failed its check" if isinstance(e, SequenceExportError) else f"failed ({type(e).__name__})"
        outcome.reason = f"{outcome.reason}, but its ONNX export {failed}: {e}"
    return outcome.parity
