"""online/profiling.py: a content-only version whose job chose the content profile's recency
(``Manifest.profile_half_life_days``) serves ``recency`` by default, over a real server with a
SQLite event store: a history read by user_id is weighed by its events' times, a history sent
as bare ids weighs each item alike (the mean), a server's own ``half_life_days`` overrides the
version's; a default ``recency`` without the job's half-life is refused at load."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest

from groundrec.offline.config import IndexConfig
from groundrec.offline.index import build_index
from groundrec.offline.publish import write_version_files
from groundrec.online.client import Client
from groundrec.online.config import ServeConfig
from groundrec.online.service import create_app
from groundrec.online.serving import build_serving
from groundrec.online.version import VersionError
from groundrec.shared import artifact
from groundrec.shared.scoring.profiles import build_profile
from helpers import running

N, DIM, DAY = 60, 12, 86_400.0


def _publish(root, vectors, learn: dict | None, default: str = "recency"):
    ids = [f"it{n:02d}" for n in range(len(vectors))]
    table = pa.table({"item_id": ids, "title": [f"item {n}" for n in range(len(ids))]})
    index, rep = build_index(vectors, IndexConfig())
    with artifact.publishing(root) as pub:
        write_version_files(pub.staged, index, vectors, table, pa.table({"item_id": pa.array([], pa.string())}))
        return pub.publish(artifact.Manifest(
            version=pub.version, created_at="2026-12-07T00:00:00+00:00", code_version="test", models={}, prompt={},
            text_template="{title}", dim=DIM, counts={"indexed": len(ids)}, index=rep.to_dict(), timings_s={},
            catalog_text_columns=["title"], learn=learn, default_strategy=default))


def _ranked(vectors, rows, times, half_life, k):
    """The list a profile of ``rows`` gets: recency with ``half_life`` days (None: the mean),
    the history left out, ties to the lower row."""
    v = vectors[rows]
    profile = (build_profile(v, "recency", np.asarray(times, np.float64), None, half_life) if half_life
               else build_profile(v, "mean"))[0]
    scores = (vectors @ profile).astype(np.float64)
    scores[rows] = -np.inf
    return [f"it{n:02d}" for n in np.lexsort((np.arange(N), -scores))[:k]]


@pytest.fixture(scope="module")
def catalog():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(N, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_a_version_s_chosen_recency_is_its_default_by_user_id_and_the_mean_without_times(catalog, tmp_path):
    art = tmp_path / "art"
    _publish(art, catalog, {"weight": 0.0, "profile_half_life_days": 1.0})
    now = time.time()
    rows = [3, 7, 11, 19, 23, 31, 40]  # five old purchases, then two on the last day
    times = [now - 30 * DAY, now - 25 * DAY, now - 20 * DAY, now - 15 * DAY, now - 10 * DAY, now - 3600, now]
    ids = [f"it{r:02d}" for r in rows]
    recency, mean = _ranked(catalog, rows, times, 1.0, 8), _ranked(catalog, rows, times, None, 8)
    assert recency != mean  # the two profiles rank differently here
    cfg = ServeConfig(artifacts=art, events=f"sqlite:///{tmp_path / 'events.db'}", compute_standby=False)
    with running(create_app(cfg)) as url, Client(url) as client:
        types = ["view", "purchase"] * 4  # weights 0.2 and 1: not in what the job chose on (unweighted purchases)
        client.add_events([{"user_id": "u1", "item_id": i, "timestamp": t, "type": e}
                           for i, t, e in zip(ids, times, types)])
        by_user = client.recommend(user_id="u1", k=8)
        assert [i.item_id for i in by_user.items] == recency  # the events' times alone, the version's half-life
        assert [i.item_id for i in client.recommend(ids, k=8).items] == mean  # bare ids: alike
        timed = [{"item_id": i, "timestamp": t} for i, t in zip(ids, times)]
        assert [i.item_id for i in client.recommend(timed, k=8).items] == recency
        assert [i.item_id for i in client.recommend(user_id="u1", k=8, strategy="mean").items] == mean
    # a server's own half-life is what its recency uses, the default's too
    cfg30 = cfg.model_copy(update={"half_life_days": 30.0})
    with running(create_app(cfg30)) as url, Client(url) as client:
        assert [i.item_id for i in client.recommend(timed, k=8).items] == _ranked(catalog, rows, times, 30.0, 8)


def test_a_default_recency_without_the_job_s_half_life_is_refused(catalog, tmp_path):
    path = _publish(tmp_path / "art", catalog, None)
    with pytest.raises(VersionError, match="default_strategy 'recency' cannot be a default here"):
        build_serving(ServeConfig(artifacts=tmp_path / "art"), "v", path)
    chosen = _publish(tmp_path / "ok", catalog, {"profile_half_life_days": 2.0})
    assert build_serving(ServeConfig(artifacts=tmp_path / "ok"), "v", chosen).retriever.half_life_days == 2.0


def test_a_batch_of_the_default_recency_is_ranked_as_each_user_alone(catalog, tmp_path):
    """A batch (its mean profiles in a few array operations, the recency ones a user at a time)
    gives each user the list they get alone; a history without times in it gets the mean."""
    from groundrec.online.schemas import HistoryEntry, UserQuery

    path = _publish(tmp_path / "art", catalog, {"profile_half_life_days": 2.0})
    retriever = build_serving(ServeConfig(artifacts=tmp_path / "art"), "v", path).retriever
    rng = np.random.default_rng(7)
    histories = [rng.choice(N, size=n, replace=False).tolist() for n in (1, 3, 6, 9)]
    times = [np.sort(rng.uniform(0, 20 * DAY, size=len(h))).tolist() for h in histories]
    queries = [UserQuery(k=6, history=[HistoryEntry(item_id=f"it{r:02d}", timestamp=t) for r, t in zip(h, ts)])
               for h, ts in zip(histories, times)]
    queries.append(UserQuery(k=6, history=[f"it{r:02d}" for r in histories[-1]]))  # bare ids
    batched = retriever.recommend_batch(queries)
    for q, b, h, ts in zip(queries, batched, histories + [histories[-1]], times + [None]):
        alone = retriever.recommend(q)
        assert [i.item_id for i in b.items] == [i.item_id for i in alone.items] == _ranked(catalog, h, ts, ts and 2.0, 6)
        assert [i.score for i in b.items] == [i.score for i in alone.items]
