"""The offline job: read -> hash -> ground (cached) -> encode -> learn (with interactions) ->
index -> export -> gate -> publish.

Each stage is a module of this package; this one only wires them, keeps time and
reports. Nothing is published unless every stage succeeded.
"""

from __future__ import annotations

import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from groundrec.offline import catalog as catalog_stage
from groundrec.offline.config import JobConfig
from groundrec.offline.encode import check_encoder, embeddable, encode_cached, load_sentence_transformer
from groundrec.offline.export import export_encoder
from groundrec.offline.gate import GateDecision, resolve_mode, run_gate, serving_version, unless_moved
from groundrec.offline.ground import ground_catalog, not_grounded
from groundrec.offline.index import build_index
from groundrec.offline.interactions import NoInteractions, load_interactions, on_published_rows
from groundrec.offline.learn import index_vectors, learn
from groundrec.offline.learn_sequence import check_device, export as export_sequence
from groundrec.offline.learn_report import LearnReport
from groundrec.offline.live_items import absorb, first_seen, live_items_url
from groundrec.offline.publish import build_manifest, write_version_files
from groundrec.offline.thumbnails import make_thumbnails
from groundrec.offline.runners import open_runner
from groundrec.offline.skips import Skips
from groundrec.offline.vlm.registry import backend_class
from groundrec.shared import artifact


@dataclass
class JobSummary:
    version: str
    version_dir: Path
    runner: str
    items_read: int
    grounded_new: int
    grounded_cached: int
    skipped: dict[str, int]
    encoded: int
    encoded_new: int
    index: dict
    export: dict | None
    timings_s: dict[str, float]
    parse_failures: int = 0
    skipped_examples: list[dict] = field(default_factory=list)
    log_dir: Path | None = None
    distinct_texts: int = 0  # encoded counts items; identical texts share one vector
    ungrounded: int = 0  # published from catalog text: no image, or it could not be read or grounded
    dropped: int = 0  # nothing to embed: not published
    learned: LearnReport | None = None  # the learn stage's report (with interactions; a hybrid or content only)
    gate: GateDecision | None = None  # whether the version went live, and why
    notes: list[str] = field(default_factory=list)  # what the user should know about this run (e.g. no images)
    live_items: dict | None = None  # the live catalog's changes absorbed (through, changes, items); None: not read
    sequence: str | None = None  # the learned profile encoder's decision in one line (None: not trained)


class StageClock:
    def __init__(self):
        self.times: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = round(self.times.get(name, 0.0) + time.perf_counter() - start, 3)


def learned_from_interactions(root: Path, version_id: str | None) -> bool:
    """Whether ``version_id`` (published under ``root``) learned from interactions (its manifest's ``learn``)."""
    try:
        return version_id is not None and artifact.read_manifest(artifact.version_path(root, version_id)).learn is not None
    except (OSError, ValueError):  # unreadable: taken as learned, the careful side
        return True


def run_job(cfg: JobConfig, progress: bool = True) -> JobSummary:
    cfg.require_paths()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    clock = StageClock()
    started_on = serving_version(out)  # what serves as the run begins: a rollback during it holds (``unless_moved``)

    with clock.stage("read"):
        items = catalog_stage.load_catalog(cfg.catalog)
        items, absorbed = absorb(items, live_items_url(cfg.catalog.live_items, cfg.interactions.path), cfg.catalog,
                                 cfg.catalog.images_root or Path(cfg.catalog.path).parent)
        interactions, none_yet = None, None
        if cfg.interactions.path is not None:  # read before any model runs: a bad table fails in seconds
            catalog_ids = items.column(cfg.catalog.id_column).to_pylist()
            try:
                interactions = load_interactions(cfg.interactions, {str(i): r for r, i in enumerate(catalog_ids)})
            except NoInteractions as e:  # a fresh install's first nights: its content alone, said
                if learned_from_interactions(out, started_on):  # never one learned from nothing over it (ungated)
                    raise NoInteractions(f"{e}; version {started_on} serves, learned from interactions: nothing is "
                                         f"published from none (check the export and its event store)") from None
                none_yet = f"{e}: published from its content alone, as before the first events"
    no_images = catalog_stage.text_only(items, cfg.catalog)
    notes = [n for n in (no_images, none_yet) if n] + (absorbed.notes if absorbed is not None else [])
    with clock.stage("resolve_models"):  # fail in seconds, before any cluster starts
        if not no_images:
            backend_class(cfg.vlm).check(cfg.vlm)
        encoder_path = check_encoder(cfg.encoder.model)

    log_dir = None
    # One writer per artifacts root; any error leaves what is published as it was.
    with artifact.publishing(out, keep=cfg.run.keep_versions) as pub:
        staged, version_id = pub.staged, pub.version
        train_sequence = interactions is not None and cfg.sequence.active(True)
        with ExitStack() as stack:
            with clock.stage("start_runner"):
                runner = stack.enter_context(open_runner(cfg.run.runner, cfg.run.ray_address, cfg.resolved_work_dir))
                log_dir = getattr(runner, "log_dir", None)
                if train_sequence:  # a GPU the runner lacks: refused now, not after grounding
                    check_device(cfg.sequence, runner)
            grounded = (not_grounded(items, cfg.prompt, no_images) if no_images else
                        ground_catalog(runner, items, id_column=cfg.catalog.id_column, vlm=cfg.vlm,
                                       prompt=cfg.prompt, cache_dir=cfg.resolved_cache_dir, progress=progress))
            clock.times.update(grounded.timings_s)
            with clock.stage("encode"):
                groundings, texts, not_embedded = embeddable(grounded.table, cfg.encoder.template,
                                                             cfg.catalog.text_columns, cfg.catalog.id_column)
                groundings = groundings.append_column("text", pa.array(texts, pa.string()))
                vectors, encoded_new = encode_cached(runner, texts, cfg.encoder, encoder_path,
                                                     cfg.resolved_cache_dir, progress)
            if not train_sequence:
                stack.close()  # nothing more runs on the runner (Ray shuts down here, as before the encoder)
            learned = on_rows = None
            published = [str(i) for i in groundings.column(cfg.catalog.id_column).to_pylist()]
            if interactions is not None:  # the encoder's trainings are the runner's tasks (Ray: a GPU if any)
                with clock.stage("learn"):
                    on_rows = on_published_rows(interactions, catalog_ids, published)
                    learned = learn(on_rows, vectors, cfg.collab, sequence=cfg.sequence if train_sequence else None,
                                    runner=runner)
        skips = Skips(grounded.skipped + not_embedded)
        if interactions is not None:
            outcome = learned.sequence
            if outcome is not None and outcome.published:  # into the version: its checksums cover it
                with clock.stage("sequence_export"):
                    export_sequence(outcome, artifact.VersionFiles(staged).sequence_dir, cfg.sequence.threads)
        mode = resolve_mode(cfg.publish.activate, interactions is not None, serving_version(out))
        with clock.stage("gate"):
            gate = run_gate(mode, out, on_rows, published, vectors, learned, cfg.collab, cfg.publish.gate_alpha,
                            cfg.publish.gate_k, cfg.publish.gate_max_users,
                            catalog=(interactions, [str(i) for i in catalog_ids]) if interactions is not None else None)
        thumbnails, thumb_counts = None, None
        if cfg.thumbnails.enabled and not no_images:
            with clock.stage("thumbnails"):
                thumbnails, thumb_counts = make_thumbnails(groundings, cfg.catalog.id_column, cfg.resolved_cache_dir,
                                                           cfg.thumbnails.max_side, cfg.thumbnails.quality)
        with clock.stage("index"):
            index, index_report = build_index(index_vectors(vectors, learned), cfg.index)
        export_report = None
        if cfg.export.enabled:
            with clock.stage("export"):
                model = load_sentence_transformer(encoder_path, cfg.encoder.max_seq_length)
                export_report = export_encoder(model, artifact.VersionFiles(staged).encoder_dir, cfg.export, texts[:200])
        with clock.stage("write"):
            write_version_files(staged, index, vectors, groundings, skips.table(), learned, thumbnails,
                                first_seen(published, on_rows, absorbed))
        flags = groundings.column("grounded").to_pylist()
        counts = {"items_read": items.num_rows, "indexed": int(vectors.shape[0]),
                  "grounded_new": len(grounded.new_by_id),
                  "grounded_cached": sum(groundings.column("from_cache").to_pylist()),
                  "ungrounded": flags.count(False), "dropped": skips.dropped(), "encoded_new": encoded_new,
                  "skipped": len(skips), **({f"thumbnails_{k}": v for k, v in thumb_counts.items()}
                                            if thumb_counts else {})}
        manifest = build_manifest(cfg, version_id, encoder_path, int(vectors.shape[1]), counts,
                                  index_report.to_dict(), export_report, dict(clock.times),
                                  learned.report if learned else None, notes)
        manifest.gate = gate.to_manifest()
        if learned is not None and learned.choice.profile_half_life_days:  # the content profile's recency it chose
            manifest.default_strategy = "recency"
        if learned is not None and learned.sequence is not None:
            manifest.sequence = learned.sequence.to_manifest()
            if learned.sequence.published:
                manifest.default_strategy = "sequence"
        if absorbed is not None:  # the service skips the changes through this seq (online/live)
            manifest.live_items = absorbed.to_manifest()
        with clock.stage("publish"):
            with artifact.current_lock(out):  # a rollback meanwhile waits, then holds
                gate = unless_moved(gate, serving_version(out), started_on)  # under the lock, just before CURRENT moves
                manifest.gate = gate.to_manifest()
                final = pub.publish(manifest, activate_it=gate.activated, collect=False)
                if gate.activated:
                    try:
                        artifact.record_activation(out, version_id, f"offline run (activate: {gate.mode})",
                                                   note=gate.reason)
                    except OSError as e:  # it serves already: said, not a failed job
                        notes.append(f"version {version_id} is serving, but its activation could not be logged "
                                     f"({e}): it will not be offered as a fallback")
            pub.collect()  # old versions deleted with CURRENT free

    parse_ok = groundings.column("parse_ok").to_pylist()
    return JobSummary(
        version=version_id, version_dir=final, runner=cfg.run.runner, items_read=counts["items_read"],
        grounded_new=counts["grounded_new"], grounded_cached=counts["grounded_cached"], skipped=skips.by_kind(),
        encoded=counts["indexed"], encoded_new=counts["encoded_new"], index=index_report.to_dict(), export=export_report,
        timings_s=dict(clock.times), skipped_examples=skips.rows[:5], log_dir=log_dir, distinct_texts=len(set(texts)),
        parse_failures=sum(g and not ok for g, ok in zip(flags, parse_ok)),
        ungrounded=counts["ungrounded"], dropped=counts["dropped"], learned=learned.report if learned else None,
        gate=gate, notes=notes, live_items=absorbed.to_manifest() if absorbed is not None else None,
        sequence=learned.sequence.line() if learned is not None and learned.sequence is not None else None,
    )
