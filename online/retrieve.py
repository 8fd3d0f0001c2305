"""The retriever: a query's profile (content, and for a hybrid version its collaborative
part), then the search strategies of ``search`` over the version's index, seen items
excluded, filters, priors, max_per; text and mixed queries, single or batched. No torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import numpy as np

from groundrec.online.filters import allowed_rows, group_codes
from groundrec.online.live import LiveOverlay
from groundrec.online.profiling import Profiles
from groundrec.online.search import IndexSearch, latest_items
from groundrec.online.schemas import UserQuery
from groundrec.shared.artifact import WINDOW_INTERACTIONS
from groundrec.online.version import LoadedVersion
from groundrec.shared.errors import UserError
from groundrec.shared.scoring import popularity as pop
from groundrec.shared.scoring import ranking
from groundrec.shared.scoring.searcher import Ask, best_of
from groundrec.shared.scoring.profiles import MAX_HISTORY


# The retriever's answer. Requests are the API's own type (``schemas.UserQuery``); the answer
# stays a plain dataclass that ``schemas.result_json`` serialises on the hot path: building the
# API's pydantic ``ResultOut`` (even with ``model_construct``) costs several times as much.
@dataclass
class Recommendation:
    item_id: str
    score: float
    fields: dict | None = None
    parts: dict | None = None  # with explain: what the score is made of


@dataclass
class Result:
    items: list[Recommendation]
    unknown_ids: list[str] = field(default_factory=list)
    fallback: str | None = None  # set when the history could not be used
    history_ignored: int = 0  # known items older than the latest max_history, not in the profile


class NoHistory(UserError):
    """The history holds no known item and the fallback policy is 'error'."""


class Retriever(Profiles):
    def __init__(self, version: LoadedVersion, popularity: dict[str, float] | None = None,
                 encoder=None, fallback: Literal["popular", "error"] = "popular",
                 half_life_days: float | None = None, n_interests: int = 3, overfetch: int = 4,
                 exact_subset_max: int = 20_000, max_history: int = MAX_HISTORY, max_per: dict[str, int] | None = None,
                 sequence=None):
        self.v = version
        self.encoder = encoder  # an OnnxTextEncoder, for text queries
        self.sequence = sequence  # a SequenceEncoder (``profiling.load_sequence``): the sequence strategy
        self.default_strategy = version.manifest.default_strategy  # a request's that names none
        self.fallback = fallback
        # recency's half-life: the one given (a serve config's), else the version's own (its job's
        # choice for a content-only version), else 30 days
        self.half_life_days = half_life_days or version.manifest.profile_half_life_days or 30.0
        self.n_interests = n_interests
        self.max_history = max_history  # the profile uses the latest this many known items
        self.max_per = max_per or None  # a request's default: at most N items per value of a column
        self._groups: dict[str, np.ndarray] = {}  # column -> each row's group code (max_per)
        # What explains a recommendation: the grounded fields, the embedded text, the catalog text.
        explain = {"text", *version.manifest.catalog_text_columns}
        self.field_columns = [c for c in version.items.column_names if c.startswith("vlm_") or c in explain]
        self.hybrid = version.collab_query is not None
        self.half_life = version.collab_half_life if self.hybrid else 0.0
        # New items (no interaction in the job's window) and the lift the job chose for them.
        fresh = (version.items.column(WINDOW_INTERACTIONS).to_numpy()
                 if self.hybrid and WINDOW_INTERACTIONS in version.items.column_names else None)
        self.new_rows = pop.new_items(fresh) if fresh is not None else None
        self.searcher = IndexSearch(version, overfetch, exact_subset_max, self.new_rows, version.recent_prior)
        self.popularity_map: dict[str, float] | None = None
        self.counts = np.zeros(0)
        self.ranker = self.searcher.ranker  # the one searcher: every list is ranked by it
        self.set_popularity(popularity)
        self.fresh_weight = version.collab_fresh_weight if fresh is not None else 0.0
        self.fresh_slots = version.collab_fresh_slots if fresh is not None else 0
        self.projected = version.project_query is not None
        # Live items (the items API), applied between batches: rows added, rows removed.
        self.live = LiveOverlay(self) if {"hidden", "available_until"} & set(version.items.column_names) else None

    @property
    def flat(self):
        """A flat index's exact scores (``FlatScores``; None: an approximate index)."""
        return self.searcher.flat

    def set_popularity(self, popularity: dict[str, float] | None) -> None:
        """Interactions per item id: the prior and the popular fallback (replaced whole, so a
        batch in flight reads the old or the new, never a mix)."""
        self.popularity_map = popularity
        self.counts = pop.counts_by_row(popularity, self.v.row_of, self.v.index.ntotal)
        self.ranker.set_counts(self.counts)

    # --- building blocks (the profiles: ``profiling.Profiles``) ----------------------
    def _allowed(self, filters: dict[str, object] | None) -> np.ndarray | None:
        return allowed_rows(self.v.items, filters)

    def _fresh(self, q: UserQuery) -> float:
        """The freshness prior's weight for this query: its own, else the version's (none for a
        list that holds the hybrid's new items instead: ``_holds_hybrids_new``)."""
        if self.new_rows is None or self._holds_hybrids_new(q):
            return 0.0
        return self.fresh_weight if q.fresh_weight is None else q.fresh_weight

    def _slots(self, q: UserQuery) -> int:
        """The places kept for new items in this query's list: its own, else the version's (none
        for a list that holds the hybrid's new items instead: ``_holds_hybrids_new``)."""
        if not self.ranker.is_new or self._holds_hybrids_new(q):
            return 0
        return min(q.k, self.fresh_slots if q.fresh_slots is None else q.fresh_slots)

    def _holds_hybrids_new(self, q: UserQuery) -> bool:
        """Whether this query's list holds the new items of the hybrid's list for the same
        request instead of lifting and placing them itself: a ``sequence`` query on a hybrid
        version with new items (the encoder cannot rank items nobody has interacted with)."""
        return self.hybrid and bool(self.ranker.is_new) and self.strategy_of(q) == "sequence"

    def _with_hybrids_new(self, queries: list[UserQuery], lists: list, profiles: list[np.ndarray],
                          known: list | None = None) -> list:
        """``lists`` (the encoder's, one per query) holding the new items of the hybrid's list for
        the same request (``_hybrid_rows``), each at its score for the encoder's query
        (``Searcher.holding_new_of``), as eval and the job's validation rank them. ``known``:
        each query's (known rows, unknown ids), when the caller has them."""
        others = self._hybrid_rows(queries, known)
        new = sorted({row for other in others if other for row in other if row in self.ranker.is_new})
        vectors = dict(zip(new, self.searcher.indexed(np.asarray(new, np.int64)))) if new else {}

        def score_of(rows: list[int], profile: np.ndarray, prior: np.ndarray | None) -> np.ndarray:
            scores = best_of(np.asarray([vectors[r] for r in rows]), profile)  # as the list's own are scored
            return scores if prior is None else scores + prior[rows]

        return [ranked if other is None else self.ranker.holding_new_of(
                    ranked, other, q.k, partial(score_of, profile=profile, prior=self._prior(q)), self._pick(q))
                for q, ranked, profile, other in zip(queries, lists, profiles, others)]

    def _hybrid_rows(self, queries: list[UserQuery], known: list | None = None) -> list[list[int] | None]:
        """The item rows of the hybrid's list for each request, asked again with the ``mean``
        strategy (its freshness prior and places as the request sets them): one batched search
        for those ``recommend_batch`` would batch, ``recommend`` for the others (None where it
        refuses: the encoder's list then stands as it is)."""
        asked = [q.model_copy(update={"strategy": "mean", "explain": False, "with_fields": False}) for q in queries]
        means = self._mean_profiles(asked, known)
        out: list[list[int] | None] = [None] * len(asked)
        batch, asks, where = [], [], []
        for n, a in enumerate(asked):
            if n not in means or not self._batchable(a, means[n][0]):
                try:
                    out[n] = [self.v.row_of[x.item_id] for x in self.recommend(a).items]
                except UserError:
                    pass
                continue
            profile, rows, _ = means[n]
            batch.append(profile[0])
            asks.append(self._ask(a, rows, self._pick(a)))
            where.append(n)
        if batch:
            for n, ranked in zip(where, self.searcher.search_batch(np.asarray(batch), asks)):
                out[n] = [row for row, _ in ranked]
        return out

    def _batchable(self, q: UserQuery, profile: np.ndarray | None) -> bool:
        """Whether this query's list joins a batch's one search: a one-row profile, no filter,
        diversity or explain, and no place kept on an approximate index (max_per joins the
        batch; diversity is taken one list at a time)."""
        return (profile is not None and len(profile) == 1 and not (q.filters or q.diversity or q.explain)
                and not (self._slots(q) and self.flat is None))

    def _ask(self, q: UserQuery, rows: list[int], pick) -> Ask:
        """This query's list as one row of a batch's search (``_batchable``)."""
        return Ask(q.k, self._excluded(q, rows), q.popularity_weight, self._fresh(q), self._slots(q), pick)

    def _excluded(self, q: UserQuery, rows: list[int]) -> set[int]:
        """The rows no list of this query may hold: its history (unless exclude_seen is off)
        and the items it names in ``exclude``, in the one place the searcher excludes them."""
        seen = set(rows) if q.exclude_seen else set()
        if self.live is not None:  # replaced, hidden, expired and deleted items
            seen.update(self.live.excluded())
        if q.exclude:
            row_of = self.v.row_of
            seen.update(row_of[i] for i in q.exclude if i in row_of)
        return seen

    def _prior(self, q: UserQuery) -> np.ndarray | None:
        """What is added to every item's score for this query: the popularity prior and, for a
        hybrid version, the freshness prior of its new items (None: nothing)."""
        return self.ranker.prior(q.popularity_weight, self._fresh(q))

    def _pick(self, q: UserQuery):
        """How the k items are taken from the ranking's head when the query asks for more than
        the best k: its max_per (else the server's) and its diversity; None: the best k."""
        wanted = self.max_per if q.max_per is None else q.max_per
        if not wanted and not q.diversity:
            return None
        for column in wanted or {}:
            if column not in self._groups:
                self._groups[column] = group_codes(self.v.items, column)
        groups, limits = [self._groups[c] for c in wanted or {}], list((wanted or {}).values())
        return partial(ranking.select, groups=groups, limits=limits, vectors=self.v.vectors, diversity=q.diversity)

    def _ignored(self, q: UserQuery, rows: list[int]) -> int:
        """The history's known items the profile did not read (the answer's ``history_ignored``):
        beyond the latest ``max_history``, or for ``sequence`` the encoder's ``max_len``."""
        sequence = self.sequence is not None and self.strategy_of(q) == "sequence"
        return max(0, len(rows) - (self.sequence.max_len if sequence else self.max_history))

    def _result(self, ranked: list[tuple[int, float]], with_fields: bool, unknown: list[str],
                fallback: str | None, ignored: int = 0, parts: list[dict] | None = None) -> Result:
        recs = []
        for n, (row, score) in enumerate(ranked):
            fields = {c: self.v.items.column(c)[row].as_py() for c in self.field_columns} if with_fields else None
            recs.append(Recommendation(self.v.item_ids[row], score, fields, parts[n] if parts else None))
        return Result(recs, unknown, fallback, ignored)

    # --- public API ------------------------------------------------------------------
    def recommend(self, q: UserQuery) -> Result:
        return self._answer(q, *self._profile(q))

    def _answer(self, q: UserQuery, profile: np.ndarray | None, rows: list[int], unknown: list[str]) -> Result:
        seen = self._excluded(q, rows)
        allowed = self._allowed(q.filters)
        pick = self._pick(q)
        if profile is None:
            if q.order == "latest":
                return self._result(latest_items(self, q.k, seen, allowed, pick), q.with_fields, unknown, "latest")
            if self.fallback == "error" and q.order is None:  # a list asked for by its order is no fallback
                raise NoHistory(f"no known item in the history ({len(unknown)} unknown) and no text: nothing to rank by")
            return self._result(self.ranker.popular(q.k, seen, allowed, pick), q.with_fields, unknown, "popular")
        ranked = self.searcher.search(profile, q.k, seen, allowed, self._prior(q), pick, self._slots(q),
                                      (q.popularity_weight > 0, self._fresh(q) > 0))
        if self._holds_hybrids_new(q):
            ranked = self._with_hybrids_new([q], [ranked], [profile], [(rows, unknown)])[0]
        return self._result(ranked, q.with_fields, unknown, None, self._ignored(q, rows),
                            self._parts(q, rows, ranked, profile) if q.explain else None)

    def recommend_batch(self, queries: list[UserQuery], errors: Literal["raise", "return"] = "raise") -> list[Result]:
        """Many users at once, each answer equal to ``recommend``'s: the texts of all queries
        are encoded in one call; single-profile, unfiltered queries without diversity share one
        search (a matrix product on a flat index, one FAISS call otherwise), max_per included.
        With ``errors="return"`` a query that cannot be answered gets its exception in its
        place and the others are answered."""
        results: list[Result | Exception | None] = [None] * len(queries)
        texts = list(dict.fromkeys(q.text for q in queries if q.text))
        text_vectors = dict(zip(texts, self._encode(texts))) if texts and self.encoder is not None else {}
        batch, asks, meta = [], [], []
        means = self._mean_profiles(queries)
        if self.sequence is not None:  # every sequence history in one encode call
            means.update(self._sequence_profiles(queries, text_vectors, skip_errors=True))
        for n, q in enumerate(queries):
            try:
                profile, rows, unknown = means.get(n) or self._profile(q, text_vectors.get(q.text) if q.text else None)
                pick = self._pick(q)
                if not self._batchable(q, profile):
                    results[n] = self._answer(q, profile, rows, unknown)
                    continue
            except UserError as e:  # a bug is not the request's fault: it propagates
                if errors == "raise":
                    raise
                results[n] = e
                continue
            batch.append(profile[0])
            asks.append(self._ask(q, rows, pick))
            meta.append((n, q, unknown, rows))
        if batch:
            lists = self.searcher.search_batch(np.asarray(batch), asks)
            held = [i for i, (_, q, _, _) in enumerate(meta) if self._holds_hybrids_new(q)]
            if held:
                for i, ranked in zip(held, self._with_hybrids_new(
                        [meta[i][1] for i in held], [lists[i] for i in held], [batch[i][None, :] for i in held],
                        [(meta[i][3], meta[i][2]) for i in held])):
                    lists[i] = ranked
            for (n, q, unknown, rows), ranked in zip(meta, lists):
                results[n] = self._result(ranked, q.with_fields, unknown, None, self._ignored(q, rows))
        return results  # type: ignore[return-value]

    def search(self, text: str, k: int = 10, filters: dict | None = None, with_fields: bool = False) -> Result:
        return self.recommend(UserQuery(text=text, k=k, filters=filters, with_fields=with_fields))

    def live_texts(self, items: list, vectors: dict | None = None) -> dict[str, str]:
        """The texts ``apply_live`` would embed (``LiveOverlay.texts``)."""
        if self.live is None:
            self.live = LiveOverlay(self)
        return self.live.texts(items, vectors)

    def apply_live(self, items: list, vectors: dict | None = None) -> dict:
        """Apply the live catalog's items (``shared.live_items.LiveItem``) to this version
        (``online/live``); the embeddings computed, for a standby to reuse."""
        if self.live is None:
            self.live = LiveOverlay(self)
        return self.live.apply(items, vectors)
