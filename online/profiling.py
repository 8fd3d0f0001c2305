"""A query's profile for the retriever, every strategy's rule in this one place: the vector
strategies (mean, recency, weighted, multi_interest: ``shared/scoring/profiles``) give a
content profile, beside a hybrid's collaborative query; the plain mean profiles of a batch are
built in a few array operations; ``sequence`` is the version's learned profile encoder
(``shared/sequence_encoder``) over the history's item rows, every sequence query of a batch in
one ``encode`` call, its output searched as it is (it is trained as a query for the index).

A request that names no strategy gets the version's (``manifest.default_strategy``: mean for
versions that do not say). For ``sequence``, ids the version does not hold are dropped (the
runner's rule; a live item is read from its vectors: ``SequenceEncoder.add_items``); a history with none of its
items left is a zero query, and falls back as any unusable history does. With ``text``, the
query is ``(1 - text_weight) x`` the encoder's output at unit length ``+ text_weight x`` the
text's query as a text search is searched. Asking ``sequence`` of a version without the
encoder is ``Unprocessable`` (422), naming what to use instead."""

from __future__ import annotations

import numpy as np

from groundrec.online.errors import Unprocessable
from groundrec.online.schemas import HistoryEntry, UserQuery
from groundrec.online.version import LoadedVersion, VersionError
from groundrec.shared.errors import UserError
from groundrec.shared.scoring import READS_TIME_OR_WEIGHT, VECTOR_STRATEGIES
from groundrec.shared.scoring.collab import collab_queries, hybrid_queries
from groundrec.shared.scoring.profiles import build_profile, latest, mean_profiles, unit
from groundrec.shared.scoring.searcher import best_of

Profile = tuple[np.ndarray | None, list[int], list[str]]  # the searched rows, the history's rows, unknown ids


def _entry(h: HistoryEntry | str) -> tuple[str, float | None, float]:
    """A history entry as (item id, timestamp, weight): a bare id has no time and weight 1."""
    return (h, None, 1.0) if isinstance(h, str) else (h.item_id, h.timestamp, h.weight)


def load_sequence(files, version: LoadedVersion, threads: int | None = 1):
    """The version's sequence encoder (None without ``sequence/``), refused (``VersionError``)
    when it was not exported for this version's items and index."""
    if not files.has_sequence:
        return None
    from groundrec.shared.sequence_encoder import SequenceEncoder

    encoder = SequenceEncoder(files.sequence_dir, threads=threads)
    if encoder.n_items != version.items.num_rows or encoder.out_dim != version.index.d:
        raise VersionError(f"version {version.path.name}: its sequence encoder was exported for {encoder.n_items} "
                           f"items and {encoder.out_dim}-wide queries, the version holds {version.items.num_rows} "
                           f"items in a {version.index.d}-wide index")
    reads = version.vectors.shape[1] + (0 if version.collab_query is None else
                                        version.collab_query.shape[1] + version.collab_item.shape[1])
    if int(encoder.meta.get("item_inputs_dim", reads)) != reads:  # what a live item's row is made of (add_items)
        raise VersionError(f"version {version.path.name}: its sequence encoder reads {encoder.meta['item_inputs_dim']} "
                           f"values per item, the version's vectors have {reads}")
    return encoder


def check_default_strategy(version: LoadedVersion) -> str:
    """The version's default strategy, refused when this server cannot serve it to a request
    that names none: ``weighted`` (a history read by user_id has no weights), ``recency``
    without the half-life its job chose (``Manifest.profile_half_life_days``)."""
    default = version.manifest.default_strategy
    chosen_recency = default == "recency" and version.manifest.profile_half_life_days > 0
    if default not in VECTOR_STRATEGIES + ("sequence",) or (default in READS_TIME_OR_WEIGHT and not chosen_recency):
        raise VersionError(f"version {version.path.name}: default_strategy {default!r} cannot be a default here; "
                           f"use one of mean, multi_interest, sequence, or recency with the manifest's "
                           f"profile_half_life_days")
    return default


class Profiles:
    """The profile half of ``retrieve.Retriever`` (which sets ``v``, ``sequence``,
    ``default_strategy``, ``hybrid``, ``half_life``, ``projected``, ``max_history``,
    ``half_life_days``, ``n_interests``, ``encoder``, ``searcher``)."""

    def strategy_of(self, q: UserQuery) -> str:
        """The strategy that builds this query's profile: its own, else the version's (its
        ``recency`` the mean where an item of the history has no time: a history sent as bare
        ids weighs each item alike)."""
        if q.strategy:
            return q.strategy
        if self.default_strategy == "recency" and any(isinstance(h, str) or h.timestamp is None for h in q.history):
            return "mean"
        return self.default_strategy

    def _profile(self, q: UserQuery, text_vector: np.ndarray | None = None) -> Profile:
        if self.strategy_of(q) == "sequence":
            return self._sequence_profiles([q], {q.text: text_vector} if text_vector is not None else {})[0]
        profile, rows, unknown = self._content_profile(q, text_vector)
        if profile is not None and self.hybrid:
            profile = self._with_collab(profile, latest(rows, self.max_history))
        return profile, rows, unknown

    def _content_profile(self, q: UserQuery, text_vector: np.ndarray | None = None):
        at: list[int] = []
        rows, unknown = self._known(q, at)
        entries = [_entry(q.history[n]) for n in at]
        ts, ws = [t for _, t, _ in entries], [w for _, _, w in entries]
        profile = None
        if rows:
            ts, ws = latest(ts, self.max_history), latest(ws, self.max_history)
            timestamps = None if any(t is None for t in ts) else np.array(ts, dtype=np.float64)
            profile = build_profile(np.asarray(self.v.vectors[latest(rows, self.max_history)]), self.strategy_of(q),
                                    timestamps, np.array(ws),
                                    self.half_life_days, self.n_interests)
        if q.text:
            t = self._encode([q.text]) if text_vector is None else text_vector[None, :]
            profile = t if profile is None else unit((1 - q.text_weight) * profile + q.text_weight * t)
        return profile, rows, unknown

    def _known(self, q: UserQuery, at: list[int] | None = None) -> tuple[list[int], list[str]]:
        """The history's known rows, and the unknown ids the request sent (not those the store
        gave: ``UserQuery._stored``); ``at``, when given, gets the known entries' positions."""
        rows, unknown, stored = [], [], q._stored
        for n, h in enumerate(q.history):
            item_id = h if isinstance(h, str) else h.item_id
            row = self.v.row_of.get(item_id)
            if row is not None:
                rows.append(row)
                if at is not None:
                    at.append(n)
            elif n >= stored:
                unknown.append(item_id)
        return rows, unknown

    def _sequence_profiles(self, queries: list[UserQuery], text_vectors: dict | None = None,
                           skip_errors: bool = False) -> dict[int, Profile]:
        """The profiles of a batch's ``sequence`` queries (by position), every history through
        the encoder in one call. Without the encoder: the first such query's refusal; a query
        whose text cannot be encoded raises, or with ``skip_errors`` is left out (its own
        ``_profile`` then raises it in its place)."""
        todo = [n for n, q in enumerate(queries) if self.strategy_of(q) == "sequence"]
        if not todo:
            return {}
        if self.sequence is None:
            raise Unprocessable(f"version {self.v.path.name} has no sequence encoder; use mean, recency, weighted "
                                f"or multi_interest")
        known = [self._known(queries[n]) for n in todo]
        encoded = self.sequence.encode([rows for rows, _ in known])
        out = {}
        for n, query, (rows, unknown) in zip(todo, encoded, known):
            q = queries[n]
            profile = query[None, :] if query.any() else None  # a zero query: nothing known to the encoder
            if q.text:
                t = (text_vectors or {}).get(q.text)
                try:
                    t = self._encode([q.text]) if t is None else t[None, :]
                except UserError:
                    if skip_errors:
                        continue
                    raise
                if self.hybrid:  # as a text search is searched: no collaborative part
                    t = self._searched(t, np.zeros((1, self.v.collab_query.shape[1]), np.float32))
                profile = t if profile is None else (1 - q.text_weight) * unit(profile) + q.text_weight * t
            out[n] = (profile, rows, unknown)
        return out

    def _parts(self, q: UserQuery, rows: list[int], ranked: list[tuple[int, float]],
               profile: np.ndarray | None = None) -> list[dict]:
        """What each ranked item's score is made of, at the version's full width: the content
        cosine (the best of the profile's rows), for a hybrid ``weight x`` the collaborative
        score, and the priors (popularity, freshness); for ``sequence`` the encoder's query
        against the item as the index holds it (and the priors). A projected version ranks by
        an approximation of their sum (``score``)."""
        sequence = self.strategy_of(q) == "sequence"
        picked = np.array([r for r, _ in ranked], dtype=np.intp)
        out = [{} for _ in ranked]
        if sequence and profile is not None and len(picked):
            for part, value in zip(out, best_of(self.searcher.indexed(picked), profile)):
                part["sequence"] = float(value)
        content = None if sequence else self._content_profile(q)[0]
        if content is not None and len(picked):
            for part, value in zip(out, best_of(np.asarray(self.v.vectors[picked]), content)):
                part["content"] = float(value)
        if self.hybrid and rows and len(picked) and not sequence:
            query = collab_queries(self.v.collab_query, [latest(rows, self.max_history)], self.half_life)[0]
            for part, value in zip(out, self.v.collab_weight * (self.v.collab_item[picked] @ query)):
                part["collaborative"] = float(value)
        prior = self._prior(q)
        if prior is not None:
            for part, row in zip(out, picked):
                part["prior"] = float(prior[row])
        return out

    def _with_collab(self, content_profile: np.ndarray, rows: list[int]) -> np.ndarray:
        """A hybrid profile: each content profile row beside the history's collaborative query
        (zeros for a text query without history), as the scoring core searches it."""
        return self._searched(content_profile, collab_queries(self.v.collab_query, [rows], self.half_life))

    def _searched(self, content: np.ndarray, collab: np.ndarray) -> np.ndarray:
        return hybrid_queries(content, collab, self.v.project_query if self.projected else None)

    def _mean_profiles(self, queries: list[UserQuery], known: list | None = None) -> dict[int, Profile]:
        """The plain VLM4Rec profiles of a batch (mean strategy, unit weights, no text) in a few
        array operations instead of one small computation per user; the same numbers as
        ``_profile`` (the same float64 sums in the same order). ``known``: each query's
        (known rows, unknown ids) as ``_known`` gives them, when the caller has them."""
        plain = [n for n, q in enumerate(queries) if self.strategy_of(q) == "mean" and not q.text
                 and all(isinstance(h, str) or h.weight == 1.0 for h in q.history)]
        found: dict[int, tuple[list[int], list[str]]] = {}
        for n in plain:
            rows, unknown = self._known(queries[n]) if known is None else known[n]
            if rows:
                found[n] = (rows, unknown)
        if not found:
            return {}
        order = list(found)
        used = [latest(found[n][0], self.max_history) for n in order]
        profiles = mean_profiles(self.v.vectors, used)
        if self.hybrid:
            profiles = self._searched(profiles, collab_queries(self.v.collab_query, used, self.half_life))
        return {n: (profiles[i:i + 1], found[n][0], found[n][1]) for i, n in enumerate(order)}

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self.encoder is None:
            raise UserError("text queries need the version's ONNX encoder, which is not loaded")
        return self.encoder.encode(texts)
