"""The collaborative model (offline/collab.py) on interactions whose answer is known."""

import numpy as np
import pytest

from groundrec.offline import collab
from groundrec.shared.scoring.collab import collab_queries, index_rows


def _bundles(n_bundles=12, size=4, users=400, seed=0):
    """Users each buy most of one bundle; bundles are disjoint groups of item rows."""
    rng = np.random.default_rng(seed)
    bundles = rng.permutation(n_bundles * size).reshape(n_bundles, size)
    histories = [rng.choice(bundles[u % n_bundles], size - 1, replace=False) for u in range(users)]
    return bundles, histories


def test_factorised_ease_is_close_to_dense_ease_and_finds_co_purchases():
    bundles, histories = _bundles()
    n = bundles.size
    x = collab.interaction_matrix(histories, n)
    b = collab.ease(x, reg=10.0)
    assert np.allclose(np.diag(b), 0)
    model = collab.fit(histories, n, content=None, rank=24, reg=10.0)
    approx = model.query @ model.item.T
    np.fill_diagonal(approx, -np.inf)  # an item is never recommended after itself (seen)
    np.fill_diagonal(b, -np.inf)
    # rank 24 holds the 12 bundles' structure: the same top 3 as dense EASE after every single item
    assert all(set(np.argsort(-approx[i])[:3]) == set(np.argsort(-b[i])[:3]) for i in range(n))
    # a history of one item brings the rest of its bundle first
    for bundle in bundles:
        q = collab_queries(model.query, [bundle[:1]])[0]
        top = np.argsort(-(model.item @ q))
        assert set(top[:4]) - {bundle[0]} == set(bundle[1:])


def test_dlae_is_the_least_squares_autoencoder_under_dropout():
    bundles, histories = _bundles()
    histories = [np.append(h, 0) for h in histories[:300]] + histories[300:]  # item 0: bought by most users
    n = bundles.size
    x = collab.interaction_matrix(histories, n)
    g = np.asarray((x.T @ x).todense(), dtype=np.float64)
    dropout, reg = 0.5, 10.0
    penalty = np.diag(reg + dropout / (1 - dropout) * np.diag(g))
    # Steck 2020: argmin ||X - XB||^2 + ||Lambda^1/2 B||^2 is (G + Lambda)^-1 G
    expected = np.linalg.solve(g + penalty, g)
    np.fill_diagonal(expected, 0)
    b = collab.ease(x, reg=reg, dropout=dropout)
    assert np.allclose(b, expected, atol=1e-4)
    model = collab.fit(histories, n, content=None, rank=24, reg=reg, dropout=dropout)
    assert model.info["model"] == "DLAE (dropout 0.5), factorised" and model.info["dropout"] == 0.5
    with pytest.raises(Exception, match="dropout must be in"):
        collab.ease(x, reg=reg, dropout=1.0)


def test_repeated_purchases_count_once_in_a_query():
    _, histories = _bundles()
    model = collab.fit(histories, 48, content=None, rank=16, reg=10.0)
    once, repeated = collab_queries(model.query, [np.array([3, 7]), np.array([3, 3, 3, 7])])
    assert np.allclose(once, repeated) and np.isclose(np.linalg.norm(once), 1.0)


def test_items_without_interactions_get_vectors_from_their_content():
    bundles, histories = _bundles()
    n = bundles.size + 1  # one new item, never bought, that looks like bundle 0's first item
    rng = np.random.default_rng(1)
    content = rng.normal(size=(n, 64))
    content[-1] = content[bundles[0][0]] + 0.01 * rng.normal(size=64)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    model = collab.fit(histories, n, content=content, rank=24, reg=10.0)
    assert model.info["items_from_content"] == 1 and not model.fitted[-1]
    q = collab_queries(model.query, [bundles[0][1:2]])[0]
    scores = model.item @ q
    others = np.setdiff1d(np.arange(n - 1), bundles[0])
    assert scores[-1] > np.max(scores[others])  # ranks with its look-alike's bundle, above every other bundle
    # without content, or as pure CF, it gets nothing
    assert not model.interactions_only().item[-1].any()
    assert not collab.fit(histories, n, content=None, rank=24, reg=10.0).item[-1].any()


def test_the_head_budget_fits_the_most_interacted_items_only():
    counts = np.array([0, 5, 1, 9, 3, 0, 7])
    assert collab.head_items(counts, 3).tolist() == [1, 3, 6]
    assert collab.head_items(counts, 100).tolist() == [1, 2, 3, 4, 6]


def test_learn_stage_hit_counting_matches_a_full_ranking():
    """The learn stage counts a target's rank instead of sorting: the same answer as taking
    the top K of a full ranking (seen items excluded, ties to the lower row)."""
    from groundrec.offline.holdout import K, hits

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, (40, 60)).astype(np.float32)  # many ties
    seen = [rng.choice(60, 5, replace=False) for _ in range(40)]
    targets = np.array([rng.choice(np.setdiff1d(np.arange(60), s)) for s in seen])
    got = hits(scores.copy(), seen, targets)
    for r in range(40):
        s = scores[r].copy()
        s[seen[r]] = -np.inf
        top = sorted(range(60), key=lambda i: (-s[i], i))[:K]
        assert got[r] == (targets[r] in top)
    assert 0 < got.sum() < 40


def test_truncated_keeps_the_leading_factors_rescaled():
    bundles, histories = _bundles()
    model = collab.fit(histories, bundles.size, content=None, rank=24, reg=10.0)
    assert model.truncated(24) is model and model.truncated(64) is model  # nothing to drop
    small = model.truncated(12)
    assert small.info["rank"] == 12 and small.query.shape == small.item.shape == (bundles.size, 12)
    np.testing.assert_array_equal(small.query, model.query[:, :12])
    ratio = small.item / model.item[:, :12]  # one global factor, chosen so head item vectors average norm 1
    assert np.allclose(ratio[np.isfinite(ratio)], ratio[np.isfinite(ratio)].flat[0])
    assert np.linalg.norm(small.item[small.fitted], axis=1).mean() == pytest.approx(1.0, rel=1e-5)
    q = collab_queries(small.query, [bundles[3][:1]])[0]
    top = np.argsort(-(small.item @ q))[:4]
    assert set(bundles[3]) <= set(top)  # 12 factors still hold 12 bundles


def _bundle_interactions():
    """The bundle purchases as the learn stage reads them, and content vectors that say
    nothing about the bundles (so the collaborative part must win)."""
    from groundrec.offline.interactions import Interactions

    bundles, histories = _bundles(users=600)
    users = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    items = np.concatenate(histories)
    inter = Interactions(users, items, np.arange(len(items), dtype=np.float64), [f"u{u}" for u in range(len(histories))], 0)
    content = np.random.default_rng(2).normal(size=(bundles.size, 32)).astype(np.float32)
    return inter, content / np.linalg.norm(content, axis=1, keepdims=True)


def test_learn_publishes_the_narrowest_rank_within_the_tolerance():
    from groundrec.offline.config import CollabConfig
    from groundrec.offline.learn import learn

    inter, content = _bundle_interactions()  # factorised at rank 24 (full_rank_max_mb 0): its ladder 6, 12
    loose = learn(inter, content, CollabConfig(rank=24, reg=[10.0], rank_tolerance=1.0, valid_users=200, full_rank_max_mb=0))
    assert loose.hybrid and loose.report.rank == 6 == loose.model.query.shape[1]
    assert loose.choice.rank == 6
    strict = learn(inter, content, CollabConfig(rank=24, reg=[10.0], rank_tolerance=0.0, valid_users=200, full_rank_max_mb=0))
    scores = strict.report.scores
    full = scores[f"hybrid reg=10 weight={strict.weight:g}"]  # the chosen setting at the full rank
    chosen = strict.report.rank
    assert chosen == 24 or scores[f"hybrid reg=10 rank={chosen} weight={strict.weight:g}"] >= full
    for r in (6, 12):  # every narrower rank scored before the chosen one fell short of it
        if r < chosen:
            assert scores[f"hybrid reg=10 rank={r} weight={strict.weight:g}"] < full
    assert strict.model.query.shape[1] == chosen


def test_learn_widens_a_grid_whose_edge_wins_and_warns_when_it_may_not():
    from groundrec.offline.config import CollabConfig
    from groundrec.offline.learn import learn

    inter, content = _bundle_interactions()
    # content says nothing here, so the most collaborative weight tried wins: the top of the grid
    cfg = CollabConfig(rank=24, reg=[10.0], weight=[0.0, 0.001, 1.0], valid_users=200, widenings=0, fresh_weight=[0.0])
    learned = learn(inter, content, cfg)
    assert learned.weight == 1.0 and learned.report.tuning.widened == []
    assert learned.report.warnings == [
        "weight=1.0 is the largest value tried: widen the grid (collab) upwards"]
    widened = learn(inter, content, cfg.model_copy(update={"widenings": 1}))
    report = widened.report
    assert report.tuning.widened == [{"axis": "weight", "value": 1000.0}]  # one step of the grid's ratio beyond 1
    assert report.axes["weight"] == [0.0, 0.001, 1.0, 1000.0]
    assert "hybrid reg=10 weight=1000" in report.scores  # the new point was scored, then chosen or not
    assert widened.weight in (1.0, 1000.0)


def test_a_projection_keeps_every_score_when_the_items_fit_in_its_width():
    rng = np.random.default_rng(4)
    items = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 14))  # rank 5 in 14 dimensions
    profiles = rng.normal(size=(500, 14))
    projection = collab.fit_projection(items, profiles, 6)
    assert projection.item.shape == projection.query.shape == (14, 6) and projection.info["energy_kept"] > 0.9999
    fresh = rng.normal(size=(50, 14))  # profiles it was not fitted on
    searched = (fresh.astype(np.float32) @ projection.query) @ (items.astype(np.float32) @ projection.item).T
    assert np.allclose(searched, fresh @ items.T, atol=1e-3 * np.abs(fresh @ items.T).max())
    assert np.allclose(projection.effective(items[:, :6], items[:, 6:]), items, atol=1e-3 * np.abs(items).max())
    with pytest.raises(ValueError, match="nothing to save"):
        collab.fit_projection(items, profiles, 14)


def test_a_projection_spends_its_width_where_the_profiles_are():
    """Items spread over 12 dimensions, their largest variance in 6 that no profile uses: a
    projection to 6 fitted on the profiles keeps their scores; one that ignores them (isotropic
    profiles: the items' own top singular directions) loses them."""
    rng = np.random.default_rng(5)
    items = rng.normal(size=(400, 12)) * np.r_[np.full(6, 0.3), np.full(6, 3.0)]
    used = rng.normal(size=(6, 12))  # the profiles' subspace: mostly the low-variance half
    used[:, 6:] *= 0.05
    profiles = rng.normal(size=(800, 6)) @ used
    exact = profiles @ items.T
    weighted = profiles @ collab.fit_projection(items, profiles, 6).effective(items[:, :6], items[:, 6:]).T
    isotropic = profiles @ collab.fit_projection(items, rng.normal(size=(800, 12)), 6).effective(items[:, :6],
                                                                                             items[:, 6:]).T
    err = lambda s: np.abs(s - exact).mean() / np.abs(exact).mean()  # noqa: E731
    assert err(weighted) < 0.01 < 0.5 < err(isotropic)


def test_learn_projects_the_hybrid_to_the_content_width_only_within_the_tolerance():
    from groundrec.offline.config import CollabConfig
    from groundrec.offline.learn import index_vectors, learn

    inter, content = _bundle_interactions()
    loose = learn(inter, content, CollabConfig(rank=24, reg=[10.0], rank_tolerance=1.0, valid_users=200, full_rank_max_mb=0))
    assert loose.choice.projected and loose.projection is not None
    assert loose.report.projection["dim"] == 32 and index_vectors(content, loose).shape == (len(content), 32)
    off = learn(inter, content, CollabConfig(rank=24, reg=[10.0], rank_tolerance=1.0, valid_users=200, project=False))
    assert off.projection is None and off.report.projection is None and off.report.projected_from is None
    assert index_vectors(content, off).shape == (len(content), 32 + off.report.rank)
    # Zero tolerance: projected only if the projected validation score is no lower than the full rank's.
    strict = learn(inter, content, CollabConfig(rank=24, reg=[10.0], rank_tolerance=0.0, valid_users=200, full_rank_max_mb=0))
    scores, chosen = strict.report.scores, strict.choice
    key = f"hybrid reg=10 rank={chosen.rank} weight={strict.weight:g} projected to 32"
    assert chosen.projected == (scores[key] >= scores[f"hybrid reg=10 weight={strict.weight:g}"])
    assert (strict.projection is not None) == chosen.projected


def test_a_projection_fitted_from_column_blocks_equals_one_from_the_stacked_matrix():
    rng = np.random.default_rng(6)
    content, item = rng.normal(size=(500, 10)), rng.normal(size=(500, 4))
    profiles = rng.normal(size=(300, 14))
    whole = collab.fit_projection(np.hstack([content, item]), profiles, 10, chunk=128)
    blocks = collab.fit_projection([content, item], profiles, 10, chunk=77)
    # compared as the operator they form (an eigenvector's sign is arbitrary)
    assert np.allclose(whole.query @ whole.item.T, blocks.query @ blocks.item.T, atol=1e-4)
    assert np.allclose(index_rows(content, item, blocks.item, chunk=64), np.hstack([content, item]).astype(np.float32)
                       @ blocks.item, atol=1e-4)


def test_an_exact_model_scores_as_ease_and_its_narrower_widths_are_the_factorised_models():
    """Within the budget the model is exact: a head item's row of B beside a unit item vector,
    so a history of one item scores every item as EASE's B does. Cut to rank r it is the
    factorised model of rank r (B's leading singular vectors), content-mapped rows included,
    and the widest width asked for is the one SVD the narrower ones are cut from."""
    bundles, histories = _bundles()
    n = bundles.size
    rng = np.random.default_rng(1)
    content = rng.normal(size=(n + 6, 8)).astype(np.float32)  # 6 items nobody bought: placed by content
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    exact = collab.fit(histories, n + 6, content, rank=24, reg=10.0, full_rank_max_mb=1.0)
    assert exact.exact and exact.rank == n and exact.info["model"] == "EASE, full rank"
    b = collab.ease(collab.interaction_matrix(histories, n + 6)[:, :n], reg=10.0)
    np.testing.assert_array_equal(exact.query[:n] @ exact.item[:n].T, b)
    assert exact.info["items_from_content"] == 6 and exact.item[n:].any()
    factorised = collab.fit(histories, n + 6, content, rank=24, reg=10.0)
    assert not factorised.exact and factorised.rank == 24 and factorised.info["model"] == "EASE, factorised"
    wide = exact.truncated(24)
    assert wide.rank == 24 and not wide.exact and exact.basis.shape == (n, 24)
    scores = lambda m: m.query @ m.item.T  # noqa: E731  (content-mapped rows included)
    assert np.abs(scores(wide) - scores(factorised)).max() < 1e-3 * np.abs(scores(factorised)).max()
    narrow = exact.truncated(12)
    assert exact.basis.shape == (n, 24)  # cut from the widest SVD, not a new one
    np.testing.assert_allclose(narrow.query, exact.query @ exact.basis[:, :12], rtol=1e-6)
    assert np.linalg.norm(narrow.item[narrow.fitted], axis=1).mean() == pytest.approx(1.0, rel=1e-5)
    assert exact.truncated(n) is exact and exact.interactions_only().exact


def test_the_full_rank_budget_counts_what_the_version_holds():
    # retail: 3,658 items all in the head, 384-d content: 4 x 3658 x (384 + 3 x 3658) bytes = 158.5 MiB
    assert collab.full_rank_fits(3658, 3658, 384, 159) and not collab.full_rank_fits(3658, 3658, 384, 158)
    assert not collab.full_rank_fits(1, 10, 384, 1e6)  # one item: nothing to fit
    assert not collab.full_rank_fits(2000, 1_000_000, 384, 2048)  # a small head in a huge catalog
    _, histories = _bundles()
    assert not collab.fit(histories, 48, None, rank=16, reg=10.0, full_rank_max_mb=0.01).exact  # 48 x 144 x 4 > 10 KB
    from groundrec.offline.config import CollabGrid

    grid = CollabGrid(rank=16, full_rank_max_mb=0.1)
    assert collab.fit_grid(histories, 48, None, grid, reg=10.0).exact
    assert collab.fit_grid(histories, 48, None, grid.model_copy(update={"full_rank_max_mb": 0}), reg=10.0).rank == 16


@pytest.mark.parametrize("full_rank_max_mb", [0.0, 64.0])
def test_the_content_map_makes_an_unbought_item_s_vectors_at_every_width(full_rank_max_mb):
    """``content_map``: what a live item's collaborative vectors are made by (online/live); it
    gives the rows the model gave its unbought items, for the model and its narrower widths."""
    bundles, histories = _bundles()
    n = bundles.size + 3
    rng = np.random.default_rng(2)
    content = rng.normal(size=(n, 16))
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    model = collab.fit(histories, n, content=content, rank=24, reg=10.0, full_rank_max_mb=full_rank_max_mb)
    assert model.exact == (full_rank_max_mb > 0) and model.info["items_from_content"] == 3
    for m in (model, model.truncated(12)):
        mapped = content[-3:].astype(np.float32) @ m.content_map
        np.testing.assert_allclose(mapped[:, :m.rank], m.query[-3:], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(mapped[:, m.rank:], m.item[-3:], rtol=1e-4, atol=1e-5)
    assert model.interactions_only().content_map is None


def test_validation_fits_the_form_the_version_will_have_when_only_its_smaller_head_fits_the_budget():
    """A budget that validation's head fits but the whole window's does not (items bought only
    as validation's held-out items): validation scores the factorised model the refit publishes,
    not an exact one it never publishes."""
    from groundrec.offline.config import CollabConfig
    from groundrec.offline.interactions import Interactions
    from groundrec.offline.learn import learn

    bundles, histories = _bundles(users=600)
    n = bundles.size + 6
    histories = [np.append(h, bundles.size + u % 6) if u % 5 == 0 else h for u, h in enumerate(histories)]
    users = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    inter = Interactions(users, np.concatenate(histories), np.arange(len(users), dtype=np.float64),
                         [f"u{u}" for u in range(len(histories))], 0)
    content = np.random.default_rng(2).normal(size=(n, 32)).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    budget = 4 * n * (32 + 3 * (n - 3)) / 2**20  # fits a head of n - 3 items, not of n
    assert collab.full_rank_fits(n - 6, n, 32, budget) and not collab.full_rank_fits(n, n, 32, budget)
    learned = learn(inter, content, CollabConfig(rank=8, reg=[10.0], valid_users=1000, full_rank_max_mb=budget))
    assert learned.hybrid and not learned.model.info["full_rank"]  # the whole window's head is past the budget
    assert learned.report.to_manifest()["validation"]["width"][0]["rank"] == 8  # validation's model: factorised too
    assert learned.choice.rank == learned.model.query.shape[1]  # the width published is the one validated
    # the promotion gate refits the candidate on fewer interactions (a head that fits): in the version's form
    from groundrec.offline.gate import candidate_system

    before = [h[h < bundles.size] for h in histories]  # without the items only some users bought
    assert collab.fit_grid(before, n, content, learned.grid.model_copy(update={"full_rank_max_mb": budget}), 10.0).exact
    candidate = candidate_system(learned, content, before)
    assert not candidate.model.exact and candidate.model.rank == learned.model.rank


def test_a_fit_decayed_by_age_follows_what_is_bought_together_now():
    """Each interaction weighs 0.5 ** (its days before the newest one fitted / half-life), the
    same whatever the clock (only ages count); a repeat keeps its latest (largest) weight. Item
    0 was bought with item 1 by many users a year ago and with item 2 by fewer users now: the
    plain fit ranks 1 first after 0, the decayed fit 2."""
    day = 86_400.0
    times = [np.array([0.0, 30 * day]), np.array([60 * day])]
    weights = collab.decay_weights(times, 30.0)
    assert np.allclose(weights[0], [0.25, 0.5]) and np.allclose(weights[1], [1.0])
    shifted = collab.decay_weights([t + 1e9 for t in times], 30.0)
    assert all(np.allclose(a, b) for a, b in zip(weights, shifted)) and collab.decay_weights(times, 0.0) is None
    x = collab.interaction_matrix([np.array([2, 2, 1])], 3, [np.array([0.25, 1.0, 0.5])]).toarray()
    assert x[0, 0] == 0 and x[0, 2] == pytest.approx(2 * x[0, 1])  # item 2: its latest weight, 1
    assert np.mean(x[x > 0] ** 2) == pytest.approx(1.0)  # X'X keeps its scale: reg means what it means
    assert collab.interaction_matrix([np.array([2, 2, 1])], 3).toarray().tolist() == [[0.0, 1.0, 1.0]]
    histories = [np.array([0, 1])] * 100 + [np.array([0, 2])] * 80
    at = [np.full(2, 0.0)] * 100 + [np.full(2, 365 * day)] * 80

    def after_item_0(weights) -> np.ndarray:
        model = collab.fit(histories, 3, None, reg=10.0, full_rank_max_mb=100, weights=weights)
        return model.item_side.scores(collab_queries(model.query, [np.array([0])], 0.0))[0]

    plain, decayed = after_item_0(None), after_item_0(collab.decay_weights(at, 30.0))
    assert plain[1] > plain[2] and decayed[2] > decayed[1]


def test_learn_fits_with_decay_by_age_where_what_sells_together_changed_and_records_it():
    """Each anchor item was bought a year ago with 25 others by many users (one basket each),
    and lately, by a few users, before one new partner (held out as their last new item by some
    of them): the validation users choose a fit decayed by age,
    the refit is decayed as chosen (the new partner first after the anchor) and the manifest
    records it; without the decay the old partners come first."""
    from groundrec.offline.config import CollabConfig
    from groundrec.offline.interactions import Interactions
    from groundrec.offline.learn import learn

    day, anchors, old = 86_400.0, 20, 25
    new_partner = lambda a: anchors * (old + 1) + a  # noqa: E731
    n = new_partner(anchors)
    users, items, ts = [], [], []
    for a in range(anchors):
        for p in range(old):
            for _ in range(10):
                users += [len(users) and users[-1] + 1] * 2
                items += [a, anchors + a * old + p]
                ts += [0.0, 0.0]
        for wave in (250, 250, 250, 300, 300, 300):  # the anchor, then the new partner
            u = users[-1] + 1
            users += [u, u]
            items += [a, new_partner(a)]
            ts += [wave * day, (wave + 1 if wave == 250 else 340) * day]
    inter = Interactions(np.array(users), np.array(items), np.array(ts), [f"u{u}" for u in range(users[-1] + 1)], 0)
    content = np.random.default_rng(0).normal(size=(n, 16)).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    cfg = CollabConfig(valid_users=60, reg=[10.0], half_life=[0.0], recent_weight=[0.0], fresh_weight=[0.0],
                       train_half_life_days=[30.0, 90.0, 365.0])
    learned = learn(inter, content, cfg)
    c, record = learned.choice, learned.report.to_manifest()
    assert learned.hybrid and c.train_half_life_days > 0 and record["train_half_life_days"] == c.train_half_life_days
    assert record["validation"]["decay"]["rule"]["wins"] and record["validation"]["decay"]["chosen"] == {
        "train_half_life_days": c.train_half_life_days}
    scores = learned.model.item_side.scores(collab_queries(learned.model.query, [np.array([3])], 0.0))[0]
    assert np.argsort(-scores)[0] == new_partner(3)  # the refit is decayed too
    plain = learn(inter, content, cfg.model_copy(update={"train_half_life_days": []}))
    assert plain.choice.train_half_life_days == 0.0 and plain.report.to_manifest()["validation"]["decay"] is None
    scores = plain.model.item_side.scores(collab_queries(plain.model.query, [np.array([3])], 0.0))[0]
    assert np.argsort(-scores)[0] != new_partner(3)
