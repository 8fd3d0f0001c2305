"""The request path behind the two hot routes and the web page: the version holder, the
micro-batcher that feeds the serving backends, and ``answer``, which checks a request, sends
it to its experiment arm (the arm's version and request defaults), fills in a user_id's
history, queues it and returns the answer with its ``recommendation_id`` (or raises the
domain error that stopped it, ``errors``), logging the list shown after the answer. The HTTP
layer (``service``, ``ui``) only routes to it."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from contextlib import asynccontextmanager

from fastapi.concurrency import run_in_threadpool

from pydantic_core import to_json

from groundrec.online.answers import interleaved, results_by_key, settings_of, stamped, stamped_result
from groundrec.online.backend import Backend
from groundrec.online.batching import MicroBatcher
from groundrec.online.catalog import LiveCatalog
from groundrec.online.live_vectors import LiveVectors
from groundrec.online.config import ServeConfig
from groundrec.online.errors import ClientGone, Reply, Unavailable
from groundrec.online.events import Events
from groundrec.online.experiments import Arm, with_defaults
from groundrec.online.holder import VersionHolder
from groundrec.online.impressions import ImpressionLog, new_recommendation_id
from groundrec.online.metrics import ServiceMetrics
from groundrec.online.schemas import RecommendRequest, SearchRequest, UserQuery
from groundrec.online.serving import Shown, checked
from groundrec.shared.errors import UserError
from groundrec.online.threads import limit_threads

log = logging.getLogger("groundrec.serve")


async def _cancel_when_gone(receive, job: asyncio.Future) -> None:
    """Cancel ``job`` when the client has gone (the body was read already, so the next
    message is the disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    job.cancel()


class Recommender:
    def __init__(self, cfg: ServeConfig, metrics: ServiceMetrics):
        self.cfg, self.metrics = cfg, metrics
        self.holder = VersionHolder(cfg, on_loaded=metrics.loaded,
                                    on_failed=lambda version, error: metrics.reload_failures.inc())
        self.batcher = MicroBatcher(self._compute, cfg.batch_max_size if cfg.batching else 1,
                                    cfg.batch_max_wait_ms / 1000, cfg.max_queue, on_batch=metrics.batch,
                                    worker_init=self._scoring_thread_limits if cfg.compute == "thread" else None)
        metrics.follow(metrics.queue_depth, lambda: self.batcher.depth)
        self.events = Events(cfg, self.serving, metrics)
        self.catalog = LiveCatalog(cfg, self.events, self.holder, self.serving)  # the items API
        if self.catalog.on:  # live items' embeddings kept in the event store: encoded once, by any server
            self.holder.vectors = LiveVectors(self.events, cfg.encoder_variant, metrics.live_encoded.inc)
        self.experiment = cfg.experiment
        self._warned: set[tuple[str, str]] = set()  # (arm, version) told it cannot serve the arm's strategy
        # The lists shown, logged after the answer (with events on and a share above 0).
        self.impressions = (ImpressionLog(self.events.store, cfg.impressions, on_written=metrics.impressions_written)
                            if self.events.url is not None and cfg.impressions > 0 else None)
        if self.impressions is not None:
            self.events.impressions = self.impressions
            metrics.follow(metrics.impressions_dropped, lambda: self.impressions.dropped)

    def serving(self) -> Backend:
        s = self.holder.current
        if s is None:
            raise Unavailable("no version loaded yet: is anything published in the artifacts directory?")
        return s

    def backend(self, version: str = "current") -> Backend:
        """What serves ``version`` (an arm's): the current version when it is not loaded."""
        return self.holder.backend(version) or self.serving()

    def _compute(self, items: list) -> list:
        """The batcher's worker: each (version, query) answered by that version's backend, the
        queries of one version together, answers in order (an error of a whole backend call,
        such as ``Unavailable`` or a bug, goes to each of its callers alone, not to the other
        versions' in the batch)."""
        groups: dict[str, list[int]] = {}
        for n, (version, _) in enumerate(items):
            groups.setdefault(version, []).append(n)
        if len(groups) == 1:
            return self.backend(items[0][0]).answer([q for _, q in items])
        out: list = [None] * len(items)
        for version, positions in groups.items():
            try:
                answers = self.backend(version).answer([items[n][1] for n in positions])
            except Exception as e:  # that version's callers only (a bug there is their 500, not everyone's)
                answers = [e] * len(positions)
            for n, a in zip(positions, answers):
                out[n] = a
        return out

    def _scoring_thread_limits(self) -> None:
        """compute: thread: the batch worker scores, so its own pools are limited and reported
        (OpenMP's count, which FAISS uses, is per thread: set in another thread, it does not hold)."""
        self.metrics.set_threads(limit_threads(self.cfg.compute_threads))

    @asynccontextmanager
    async def running(self, watch: bool = True):
        """Load the version (and watch CURRENT), start the batcher; stop both on exit."""
        # The event loop and the batch worker take turns on the GIL; Python's default 5 ms turn
        # made each wait for the other (docs/benchmarks.md).
        sys.setswitchinterval(self.cfg.gil_switch_interval_ms / 1000)
        # This process's own pools; /metrics reports those of whatever scores (the compute
        # process, or with compute: thread the batch worker), once it has started.
        limit_threads(self.cfg.compute_threads)
        await run_in_threadpool(self.holder.start if watch else self.holder.check)
        self.batcher.start()
        self.events.follow_popularity(self.holder)
        await run_in_threadpool(self.catalog.follow)  # the live items, applied before serving
        try:
            yield
        finally:
            await self.batcher.stop()
            self.catalog.close()
            self.holder.stop()
            if self.holder.vectors is not None:
                self.holder.vectors.close()  # the embeddings queued, written before the store closes
            if self.impressions is not None:
                self.impressions.close()
            self.events.close()

    async def answer(self, body: RecommendRequest | SearchRequest, receive=None, log_shown: bool = True) -> bytes:
        """The answer to ``body``, as the JSON the batch worker built, with its
        ``recommendation_id`` and arm. The request is checked against the limits once, here,
        before any work is queued (the backend answers checked queries), takes its arm's
        defaults, a user_id's history is read from the event store, then it waits for the next
        batch. Raises the error that stops it (``errors``): ``Unavailable`` at once when no
        version is loaded, ``Overloaded`` when the queue is full, the request's ``UserError``;
        with ``receive`` (the ASGI channel, body read), ``ClientGone`` when the client leaves
        first: the batcher then skips the request (counted). ``log_shown`` False: the list is no
        impression (the web page's: an operator looking, not the user being shown it)."""
        self.serving()
        query = checked(self.cfg, body)
        if isinstance(query, RecommendRequest) and query.batch is not None:
            return await self._batch(query, receive)
        if isinstance(body, SearchRequest) or self.experiment is None:
            return self._shown(await self._queued("current", query, receive), query, None,
                               "search" if isinstance(body, SearchRequest) else "recommend", log_shown)
        if self.experiment.mode == "team_draft" and query.user_id is not None:
            return await self._interleaved(query, receive, log_shown)
        arm = self.experiment.assign(query.user_id)
        query = checked(self.cfg, with_defaults(query, self._defaults(arm)))  # the limits hold for the arm's defaults too
        return self._shown(await self._queued(arm.version, query, receive), query, arm.name, log_shown=log_shown)

    async def _queued(self, version: str, query, receive) -> Shown | bytes:
        """``query`` (its user's history filled in) answered by ``version`` in the next batch
        (a ``Shown`` for one user, the JSON of a batch request)."""
        default = self.backend(version).default_strategy  # what the history is filled for (Unavailable: none loaded)
        job = self.batcher.enqueue((version, await self.events.with_histories(query, default)))
        if receive is None:
            return await job
        watcher = asyncio.ensure_future(_cancel_when_gone(receive, job))
        try:
            return await job
        except asyncio.CancelledError:
            if not watcher.done():
                raise  # this request itself was cancelled (shutdown), not by its client
            self.metrics.gone.inc()
            raise ClientGone("the client went away before its answer was ready") from None
        finally:
            watcher.cancel()

    def _shown(self, answer: Shown, query: UserQuery, arm: str | None, endpoint: str = "recommend",
               log_shown: bool = True) -> bytes:
        """The answer with a fresh ``recommendation_id``; its list queued for the impression log."""
        rid = new_recommendation_id()
        if self.impressions is not None and log_shown:
            self.impressions.log(rid, query.user_id, answer, arm, settings_of(query), endpoint)
        return stamped(answer[0], rid, arm)

    def _defaults(self, arm: Arm) -> dict:
        """An arm's request defaults, less a ``strategy: sequence`` its version cannot serve (no
        learned profile encoder: tonight's job kept the hybrid), which would refuse every one of
        its users' requests with a 422 they cannot fix; logged once per version."""
        if arm.defaults.get("strategy") != "sequence":
            return arm.defaults
        backend = self.backend(arm.version)
        if backend.has_sequence:
            return arm.defaults
        if (arm.name, backend.version_id) not in self._warned:
            self._warned.add((arm.name, backend.version_id))
            log.warning("experiment arm %r: version %s has no sequence encoder; its default strategy is served "
                        "instead of the arm's 'sequence'", arm.name, backend.version_id)
        return {k: v for k, v in arm.defaults.items() if k != "strategy"}

    def _arm_of(self, query: UserQuery) -> Arm | None:
        return self.experiment.assign(query.user_id) if self.experiment is not None else None

    def _asked(self, query: UserQuery) -> list[tuple[Arm | None, UserQuery]]:
        """Who answers ``query`` and with what: both arms, each with its defaults, for a user's
        request under team_draft (drafted into one list); else its arm (or none)."""
        exp = self.experiment
        if exp is not None and exp.mode == "team_draft" and query.user_id is not None:
            return [(arm, checked(self.cfg, with_defaults(query, self._defaults(arm)))) for arm in exp.arms]
        arm = self._arm_of(query)
        return [(arm, checked(self.cfg, with_defaults(query, self._defaults(arm))) if arm is not None else query)]

    async def _batch(self, request: RecommendRequest, receive) -> bytes:
        """A batch request: each entry asked as a single request would be (``_asked``), the
        entries of one arm version answered together (one group without an experiment), each
        answer with its own id and logged as shown, a team_draft entry drafted like ``_interleaved``."""
        asked = [self._asked(q) for q in request.batch]
        groups: dict[str, list[tuple[int, int]]] = {}  # version -> (entry, its arm) in the group's order
        for n, arms in enumerate(asked):
            for j, (arm, _) in enumerate(arms):
                groups.setdefault(arm.version if arm is not None else "current", []).append((n, j))
        async def group(version: str, keys: list[tuple[int, int]], first: bool):
            try:
                return await self._queued(version, request.model_copy(
                    update={"batch": [asked[n][j][1] for n, j in keys]}), receive if first else None)
            except UserError as e:  # named by its place in this group: renamed by its place in the request
                if getattr(e, "entry", None) is None:
                    raise
                raise type(e)(f"batch[{keys[e.entry][0]}]: {e.reason}") from None
        answers = await _together([group(version, keys, first)
                                   for first, (version, keys) in zip([True] + [False] * len(groups), groups.items())])
        got, version = results_by_key(list(zip(groups.values(), answers)))
        results = []
        for n, (query, arms) in enumerate(zip(request.batch, asked)):
            rid = new_recommendation_id()
            if len(arms) == 2:
                results.append(json.loads(self._drafted(query, rid, to_json(got[n, 0]), to_json(got[n, 1]))))
                continue
            (arm, entry), = arms
            name = arm.name if arm is not None else None
            if self.impressions is not None:
                self.impressions.log(rid, entry.user_id, to_json(got[n, 0]), name, settings_of(entry))
            results.append(stamped_result(got[n, 0], rid, name))
        return to_json({"results": results, "version": version})

    async def _interleaved(self, query: UserQuery, receive, log_shown: bool = True) -> bytes:
        """team_draft: both arms answer the user (each with its defaults and version), and one
        list is drafted from the two; each position is credited to the arm that gave it."""
        (a, qa), (b, qb) = self._asked(query)
        first, second = await _together([self._queued(a.version, qa, receive),  # one watches the client
                                         self._queued(b.version, qb, None)])
        return self._drafted(query, new_recommendation_id(), first[0], second[0], log_shown)

    def _drafted(self, query: UserQuery, rid: str, first: bytes, second: bytes, log_shown: bool = True) -> bytes:
        """The two arms' answers to ``query`` drafted into one list (``answers.interleaved``),
        logged as shown with each position's arm."""
        a, b = self.experiment.arms
        body, teams = interleaved(first, second, (a.name, b.name), query.k, rid)
        if self.impressions is not None and log_shown:
            self.impressions.log(rid, query.user_id, body, f"{a.name}+{b.name}", settings_of(query), teams=teams)
        return body

    async def ask(self, body: RecommendRequest | SearchRequest, receive) -> dict:
        """``answer`` as a dict (the web page: its lists are no impression, so an operator's view
        of a user neither lowers that user's arm's rates nor takes their clicks' credit)."""
        return json.loads(await self.answer(body, receive, log_shown=False))

    async def handle(self, body: RecommendRequest | SearchRequest, receive) -> Reply:
        """The hot routes' handler: 200 and the answer; an error is raised to the guard, which
        answers it (``errors.http_reply``)."""
        return 200, await self.answer(body, receive), []


async def _together(calls: list) -> list:
    """The answers of several parts of one request (an experiment's arms, a batch's versions);
    when one fails (the queue full for it), the others are cancelled and dropped from the queue
    (they were computed for nobody, then counted as a client gone), and the failure raised."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # each outcome retrieved: nothing logged as lost
        raise
