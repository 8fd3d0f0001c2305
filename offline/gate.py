"""The promotion gate: a new version goes live only if it is not significantly worse than the
version serving, on events neither of them trained on.

The window runs from the serving version's training cutoff (the last interaction it learned
from, in its manifest; its publication time when it learned from none) to the newest
interaction this job read. Each user with a history before the window and an item in it that
is new to them is one paired observation: the candidate ranks from that history as it would
have been fitted before the window (its chosen setting refitted on the interactions before
the cutoff: ``candidate_system``), the serving version ranks as it is (its published vectors:
``serving_system``; through its learned profile encoder when that is its default strategy),
both exactly as the service scores a version (``evaluation.systems``,
``shared/scoring``), and each list's recall@K of the user's window items is compared by a
paired sign-flip test (``evaluation.stats.paired_test``). The decision (``decide``) is a pure
function of the two score arrays."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from groundrec.offline import collab
from groundrec.offline.evaluation.metrics import per_user_metrics
from groundrec.offline.evaluation.sequence_system import SequenceSystem
from groundrec.offline.evaluation.stats import paired_test
from groundrec.offline.evaluation.systems import System, hybrid_system, version_content
from groundrec.offline.holdout import split_at
from groundrec.offline.interactions import Interactions
from groundrec.shared import artifact
from groundrec.shared.errors import UserError
from groundrec.shared.scoring.collab import Projection, index_rows
from groundrec.shared.scoring.popularity import counts_of_rows, recent_counts
from groundrec.shared.scoring.searcher import Searcher

EXIT_REFUSED = 3  # the job's exit status when the gate keeps the serving version (2: the input is wrong)


@dataclass(frozen=True)
class GateDecision:
    mode: str  # always | gate | never: how this job's version was to be activated; held: CURRENT moved meanwhile
    activated: bool
    reason: str
    serving_version: str | None = None
    window_from: str | None = None  # ISO times of the window's bounds
    window_to: str | None = None
    users: int = 0
    metric: str = ""
    candidate: float | None = None  # the mean metric over the window's users
    serving: float | None = None
    p_value: float | None = None  # paired, two-sided
    alpha: float = 0.05
    seconds: float = 0.0

    def to_manifest(self) -> dict:
        return asdict(self)


def serving_version(root: Path) -> str | None:
    """What CURRENT names (None: nothing published, or a CURRENT that is not a version id)."""
    try:
        return artifact.current_version(root)
    except ValueError:
        return None


def unless_moved(gate: GateDecision, now: str | None, started_on: str | None) -> GateDecision:
    """``gate``, or not activated when CURRENT (``now``) no longer names what it named when the
    run began (``started_on``; the gate reads it hours later, after grounding and learning) or
    when the gate read it: a rollback or an activation during the run is the operator's, and
    the job does not override it."""
    if not gate.activated or now == gate.serving_version == started_on:
        return gate
    was = started_on if started_on != now else gate.serving_version
    return replace(gate, mode="held", activated=False, serving_version=now,  # not the gate's refusal (exit 3)
                   reason=f"CURRENT moved during this run (from {was} to {now}: a rollback or an "
                          "activation); published, not activated, so as not to override it")


def resolve_mode(setting: str, has_interactions: bool, serving_version: str | None) -> str:
    """``auto``: ``gate`` when the job has interactions and a version is serving, else ``always``."""
    if setting != "auto":
        return setting
    return "gate" if has_interactions and serving_version is not None else "always"


def fewest_users(alpha: float) -> int:
    """The fewest users on which the paired sign-flip test can reach p < ``alpha`` (its p is at
    least 2^(1-n) on n users): 6 at 0.05. On fewer, a candidate worse for every user passed as
    "not significantly worse"."""
    return int(np.floor(1 + np.log2(1 / alpha))) + 1


def decide(candidate: np.ndarray, serving: np.ndarray, alpha: float, min_users: int = 1) -> tuple[bool, float | None, str]:
    """Activate unless the candidate's mean is below the serving version's and the paired
    test says so at ``alpha``: (activate, p, reason)."""
    if len(candidate) < min_users:
        means = f" ({candidate.mean():.4f} vs {serving.mean():.4f})" if len(candidate) else ""
        return True, None, (f"{len(candidate)} users in the window, fewer than the {min_users} a paired test at {alpha} "
                            f"can refuse on: not compared{means}, activated")
    p = paired_test(candidate, serving)
    worse = candidate.mean() < serving.mean()
    if worse and p < alpha:
        return False, p, (f"significantly worse than the serving version ({candidate.mean():.4f} vs "
                          f"{serving.mean():.4f}, p = {p:.3g} < {alpha})")
    return True, p, (f"not significantly worse ({candidate.mean():.4f} vs {serving.mean():.4f}, p = {p:.3g})"
                     if worse else f"not worse ({candidate.mean():.4f} vs {serving.mean():.4f}, p = {p:.3g})")


def learned_until(manifest: artifact.Manifest) -> float | None:
    """The last interaction a version learned from (None: it learned from none)."""
    record = manifest.collab or manifest.learn
    if record and record.get("window", {}).get("to"):
        return datetime.fromisoformat(record["window"]["to"]).timestamp()
    return None


def cutoff_of(manifest: artifact.Manifest) -> float:
    """The last interaction a version learned from (its publication time when it learned from none)."""
    until = learned_until(manifest)
    if until is not None:
        return until
    return artifact.created_at(manifest.version) or datetime.fromisoformat(manifest.created_at).timestamp()


@dataclass
class Window:
    """The users of the window: their histories before it (item ids, oldest first), the
    items of the window new to them and the histories' times."""

    histories: list[list[str]]
    targets: list[set[str]]
    times: list[list[float]]


def window_users(inter: Interactions, item_ids: list[str], cutoff: float, max_users: int, seed: int = 0) -> Window:
    from groundrec.offline.learn import histories_in_time_order

    rows, row_times = histories_in_time_order(inter, with_times=True)
    cut, after = split_at(rows, row_times, cutoff)
    histories, targets, times = [], [], []
    for h, t, k, new in zip(rows, row_times, cut, after):
        if new:
            histories.append([item_ids[i] for i in h[:k]])
            targets.append({item_ids[i] for i in new})
            times.append(t[:k].astype(np.float64).tolist())  # what a version's recency weighs
    if len(histories) > max_users:
        keep = sorted(np.random.default_rng(seed).choice(len(histories), max_users, replace=False).tolist())
        histories, targets, times = [histories[n] for n in keep], [targets[n] for n in keep], [times[n] for n in keep]
    return Window(histories, targets, times)


def recall_of(system: System, row_of: dict[str, int], window: Window, k: int) -> np.ndarray:
    """Each window user's recall@k under ``system`` (whose rows ``row_of`` names): history items
    the system does not hold are left out of the profile (a user left with none gets the
    service's popular fallback, as the service answers them), window items it does not hold
    count and are never found."""
    histories = [np.array([row_of[i] for i in h if i in row_of], dtype=np.int64) for h in window.histories]
    times = [np.array([t for i, t in zip(h, ts) if i in row_of], np.float64)  # as the event store fills a user_id's
             for h, ts in zip(window.histories, window.times)]
    relevant = [{row_of.get(i, -2 - n) for n, i in enumerate(sorted(t))} for t in window.targets]
    out = np.zeros(len(histories))
    for start in range(0, len(histories), 256):
        hist = histories[start:start + 256]
        ranked = system.top(system.scores(hist, times[start:start + 256]), k, hist)
        out[start:start + len(hist)] = per_user_metrics(ranked, relevant[start:start + len(hist)], [k])[f"recall@{k}"]
    return out


def serving_system(path: Path) -> tuple[System, dict[str, int]]:
    """A published version as the service scores it (exact over its index rows), and its rows."""
    files, manifest = artifact.VersionFiles(path), artifact.read_manifest(path)
    table = pq.read_table(files.items)
    ids = [str(i) for i in table.column(manifest.id_column).to_pylist()]
    content = np.load(files.embeddings)
    counts = (table.column(artifact.WINDOW_INTERACTIONS).to_numpy().astype(np.float64)
              if artifact.WINDOW_INTERACTIONS in table.column_names else np.zeros(len(ids)))
    c = manifest.collab
    prior = Searcher.version_recent_prior(manifest, table)  # as the service reads it
    system = version_content("serving", "published", content, counts, prior, manifest.profile_half_life_days)
    if c:
        model = collab.CollabModel(np.load(files.collab_query), np.load(files.collab_item), np.ones(len(ids), bool))
        projection = (Projection(np.load(files.project_item), np.load(files.project_query))
                      if manifest.projected else None)
    if c:
        system = hybrid_system("serving", "published", system, model, float(c["weight"]), projection,
                               half_life=float(c.get("query_half_life") or 0.0),
                               fresh_weight=float(c.get("fresh_weight") or 0.0),
                               fresh_slots=int(c.get("fresh_slots") or 0))
    if manifest.default_strategy == "sequence" and files.has_sequence:  # a request's default: the encoder
        from groundrec.shared.sequence_encoder import SequenceEncoder

        index = content if not c else index_rows(content, float(c["weight"]) * model.item,
                                                  projection.item if projection is not None else None)
        system = SequenceSystem("serving", "published", SequenceEncoder(files.sequence_dir), index, counts,
                                system if c else None, recent_prior=prior)  # its lists hold the hybrid's new items
    return system, {i: n for n, i in enumerate(ids)}


def candidate_system(learned, content: np.ndarray, before: list[np.ndarray], seed: int = 0,
                     recent: np.ndarray | None = None, times: list[np.ndarray] | None = None) -> System:
    """The candidate's chosen setting fitted on the interactions before the window only, in the
    form the version was fitted (``learned.grid``: exact or factorised, although fewer
    interactions could fit the budget where the version's did not), its recent-popularity prior
    over ``recent`` (the interactions per item of its last ``recent_days`` before the window)."""
    from groundrec.offline.learn import fit_chosen
    from groundrec.offline.projection import project

    counts = counts_of_rows(before, len(content))
    choice = learned.choice if learned is not None else None
    prior = Searcher.recent_prior_of(choice.recent_weight, recent) if choice is not None else None
    system = version_content("candidate", "published", content, counts, prior,
                             choice.profile_half_life_days if choice is not None else 0.0)
    if choice is None or not choice.hybrid:
        return system
    model = fit_chosen(before, len(content), content, learned.grid, choice, seed, times)
    projection = project(content, model, choice.weight, before, seed, choice.half_life) if choice.projected else None
    return hybrid_system("candidate", "published", system, model, choice.weight, projection,
                         half_life=choice.query_half_life, fresh_weight=choice.fresh_weight,
                         fresh_slots=choice.fresh_slots)


def run_gate(mode: str, root: Path, inter: Interactions | None, item_ids: list[str], content: np.ndarray, learned,
             collab_cfg, alpha: float = 0.05, k: int = 20, max_users: int = 5_000, seed: int = 0,
             catalog: tuple[Interactions, list[str]] | None = None) -> GateDecision:
    """The decision for a candidate published from ``content`` (rows ``item_ids``; ``inter``
    the interactions on those rows) and ``learned`` (None: content only), against what CURRENT
    names under ``root``. The window's users and items come from ``catalog`` (the interactions
    on the catalog's rows, and its ids) when given, so an item the candidate did not publish
    still counts against it."""
    started = time.perf_counter()
    serving = serving_version(root)
    if mode != "gate":
        return GateDecision(mode, mode == "always", f"activate: {mode}", serving)
    if serving is None or inter is None:
        return GateDecision(mode, True, "no version serving or no interactions: nothing to compare with", serving)
    path = artifact.version_path(root, serving)
    try:
        manifest = artifact.read_manifest(path)
        cutoff, until = cutoff_of(manifest), learned_until(manifest)
    except (OSError, ValueError) as e:  # the serving version is broken: nothing sound to keep serving
        return GateDecision(mode, True, f"the serving version {serving} could not be read ({e}): activated", serving)
    read = (catalog[0] if catalog else inter).ts  # every interaction on the catalog, published items or not
    newest = float(read.max()) if len(read) else None
    if until is not None and (newest is None or newest + 1e-3 < until):  # an older snapshot, or another job's newer
        # data (a millisecond's slack: a window's end is written rounded up to the microsecond)
        return GateDecision(mode, False, f"this job's interactions end {_iso(newest) if newest else '(none)'}, before "
                            f"the last one the serving version {serving} learned from ({_iso(until)}): it would "
                            f"replace a version trained on newer data; read the newer interactions, or activate "
                            f"by hand (groundrec versions activate)", serving,
                            seconds=round(time.perf_counter() - started, 2))
    window = window_users(*(catalog or (inter, item_ids)), cutoff, max_users, seed)
    common = dict(serving_version=serving, window_from=_iso(cutoff), window_to=_iso(newest) if newest is not None else None,
                  users=len(window.histories),
                  metric=f"recall@{k} of each user's items in the window", alpha=alpha)
    if not window.histories:
        return GateDecision(mode, True, "no user with a history and a new item in the window: nothing to compare on",
                            seconds=round(time.perf_counter() - started, 2), **common)
    row_of = {i: n for n, i in enumerate(item_ids)}
    before, before_times = _rows_before(inter, cutoff, collab_cfg.window_days)
    early = (inter.ts <= cutoff) & ((inter.ts >= cutoff - collab_cfg.window_days * 86_400)
                                    if collab_cfg.window_days else True)  # its prior's counts: as of the window's start
    recent = recent_counts(inter.items[early], inter.ts[early], len(content), collab_cfg.recent_days)
    ours = recall_of(candidate_system(learned, content, before, seed, recent, before_times), row_of, window, k)
    try:
        theirs = recall_of(*serving_system(path), window, k)
    except (OSError, ValueError, KeyError, UserError) as e:  # UserError: e.g. its encoder onnxruntime cannot load
        return GateDecision(mode, True, f"the serving version {serving} could not be scored ({e}): activated",
                            seconds=round(time.perf_counter() - started, 2), **common)
    activated, p, reason = decide(ours, theirs, alpha, fewest_users(alpha))
    return GateDecision(mode, activated, reason, candidate=float(ours.mean()), serving=float(theirs.mean()),
                        p_value=p, seconds=round(time.perf_counter() - started, 2), **common)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(float(t), timezone.utc).isoformat(timespec="seconds")


def _rows_before(inter: Interactions, cutoff: float,
                 window_days: float | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each user's item rows before the cutoff, oldest first, and their times: what the
    candidate is refitted on, within its learn window (``collab.window_days`` before the
    cutoff) as the learn stage fits."""
    from groundrec.offline.learn import histories_in_time_order

    keep = (inter.ts <= cutoff) & ((inter.ts >= cutoff - window_days * 86_400) if window_days else True)
    part = Interactions(inter.users[keep], inter.items[keep], inter.ts[keep], inter.user_ids, 0)
    return histories_in_time_order(part, with_times=True) if keep.any() else ([], [])
