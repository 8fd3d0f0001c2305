"""The online report: the attribution rule (groundrec.online.report.attribution) against a naive
reference, the statistics (groundrec.shared.stats), the tallies and metrics
(groundrec.online.report.tally, groundrec.online.report.metrics) and `groundrec online report`
(groundrec.online.report.run, groundrec.online.report.report) on a real SQLite store."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from typer.testing import CliRunner

from groundrec.online.report.attribution import CLOCK_SKEW_S, AttributionCounts, attribute
from groundrec.shared.cli import app
from groundrec.shared.events.store import Event, Impression, open_store
from groundrec.shared.stats import bootstrap_ratios, paired_test, sign_test, two_sample_test

T0 = 1_760_000_000.0


def _chunks(rows, size=3):
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def _run(events, impressions, **kw):
    counts = AttributionCounts()
    shown = [s for batch in attribute(_chunks(events), _chunks(impressions), counts, **kw) for s in batch]
    return {m.recommendation_id: engaged for m, engaged in shown}, counts


def _imp(rid, user, t, items, **kw):
    return Impression(rid, user, T0 + t, "v1", tuple(items), **kw)


def _ev(user, item, t, rid=None, kind="click"):
    return Event(user, item, T0 + t, kind, 1.0, None, rid)


def test_an_id_credits_the_list_it_names_not_the_latest():
    imps = [_imp("r1", "u1", 0, "abc"), _imp("r2", "u1", 10, "ad")]
    got, counts = _run([_ev("u1", "a", 20, "r1"), _ev("u1", "c", 21, "r1", "purchase")], imps)
    assert got == {"r1": [(0, "click"), (2, "purchase")], "r2": []}
    assert (counts.by_id, counts.by_window, counts.unverified, counts.impressions) == (2, 0, 0, 2)


def test_an_id_that_does_not_check_out_is_unverified_and_not_credited_by_the_window():
    imps = [_imp("r1", "u1", 0, "abc"), _imp("r2", "u2", 5, "ab")]
    events = [_ev("u2", "a", 10, "r1"),  # another user's list
              _ev("u1", "z", 11, "r1"),  # an item the list did not show
              _ev("u1", "a", 12, "nope"),  # unknown id (the window would have found r1)
              _ev("u1", "a", 13, "r2")]  # u2's list
    got, counts = _run(events, imps)
    assert got == {"r1": [], "r2": []}
    assert (counts.unverified, counts.by_id, counts.by_window, counts.unattributed, counts.events) == (4, 0, 0, 0, 4)


def test_an_id_dated_a_little_before_its_list_is_credited_as_the_service_keeps_it():
    """A list that had not landed when its event came: the service kept the id at the event's
    own time, a client's clock a minute behind the list's; more than CLOCK_SKEW_S before, unverified."""
    imps = [_imp("r1", "u", 1000, ["x"])]
    got, counts = _run([_ev("u", "x", 1000 - 60, "r1"), _ev("u", "x", 1000 - CLOCK_SKEW_S - 1, "r1")], imps)
    assert got == {"r1": [(0, "click")]} and (counts.by_id, counts.unverified) == (1, 1)


def test_a_list_logged_after_a_later_one_is_still_found_by_its_id():
    """A log in write order (Redis, several workers) is only nearly in time order: r1 was
    written after r2 though shown before it; the event naming r1 comes between them."""
    got, counts = _run([_ev("u", "x", 100.2, "r1")], [_imp("r2", "u", 100.5, ["x"]), _imp("r1", "u", 100.0, ["x"])])
    assert got == {"r1": [(0, "click")], "r2": []} and (counts.by_id, counts.unverified) == (1, 0)


def test_without_an_id_the_latest_list_showing_the_item_to_the_user_within_the_window():
    imps = [_imp("r1", "u1", 0, "abc"), _imp("r2", "u1", 10, "ad"), _imp("r3", "u2", 15, "a")]
    events = [_ev("u1", "a", 20),  # r2: latest showing a to u1 (r3 is u2's)
              _ev("u1", "b", 21),  # r1: r2 did not show b
              _ev("u1", "q", 22),  # nothing showed q
              _ev("u3", "a", 23)]  # nothing was shown to u3
    got, counts = _run(events, imps)
    assert got == {"r1": [(1, "click")], "r2": [(0, "click")], "r3": []}
    assert (counts.by_window, counts.unattributed) == (2, 2)


def test_the_window_edge_and_the_same_second():
    imps = [_imp("r1", "u1", 0, "ab")]
    got, counts = _run([_ev("u1", "a", 0), _ev("u1", "b", 100)], imps, window_s=100)
    assert got == {"r1": [(0, "click"), (1, "click")]}  # at the same time, and exactly window_s later
    got, counts = _run([_ev("u1", "a", 100.001)], imps, window_s=100)
    assert got == {"r1": []} and counts.unattributed == 1
    got, counts = _run([_ev("u1", "a", 100.001, "r1")], imps, window_s=100, id_window_s=200)
    assert got == {"r1": [(0, "click")]}  # an id reaches further: the id window
    got, counts = _run([_ev("u1", "a", 200.001, "r1")], imps, window_s=100, id_window_s=200)
    assert got == {"r1": []} and counts.unverified == 1
    got, counts = _run([_ev("u1", "a", 200, "r1")], imps, window_s=1000, id_window_s=100)
    assert got == {"r1": []} and counts.unverified == 1  # an id has its own window, even when shorter


def test_lists_before_since_credit_later_events_but_are_not_reported():
    imps = [_imp("r0", "u1", 0, "ab"), _imp("r1", "u1", 500, "cd")]
    got, counts = _run([_ev("u1", "a", 600, "r0"), _ev("u1", "c", 601)], imps, since=T0 + 400)
    assert got == {"r1": [(0, "click")]}
    assert (counts.by_id, counts.by_window, counts.impressions, counts.context_impressions) == (1, 1, 1, 1)


def test_lists_are_handed_on_while_the_stream_is_still_read():
    """Memory bounded: a list leaves once no later event can be credited to it."""
    read = []

    def events():
        for day in range(10):
            read.append(day)
            yield [_ev("u1", "a", day * 86_400 + 1)]

    imps = [_imp(f"r{day}", "u1", day * 86_400, "ab") for day in range(10)]
    stream = attribute(events(), _chunks(imps), AttributionCounts(), window_s=60, id_window_s=3600, batch=1)
    first = next(stream)
    assert first[0][0].recommendation_id == "r0" and first[0][1] == [(0, "click")]
    assert len(read) < 10


def _naive(events, impressions, window_s, id_window_s):
    """The rule spelled out with no streaming: for checking ``attribute``."""
    by_id = {m.recommendation_id: m for m in impressions}
    credit = {m.recommendation_id: [] for m in impressions}
    for e in events:
        if e.recommendation_id is not None:
            m = by_id.get(e.recommendation_id)
            if (m is not None and m.user_id in (None, e.user_id) and e.item_id in m.items
                    and e.timestamp - id_window_s <= m.timestamp <= e.timestamp + CLOCK_SKEW_S):
                credit[m.recommendation_id].append((m.items.index(e.item_id), e.type))
            continue
        before = [m for m in impressions if m.user_id == e.user_id and e.item_id in m.items
                  and e.timestamp - window_s <= m.timestamp <= e.timestamp]
        if before:
            m = before[-1]  # impressions are in time order; the latest wins
            credit[m.recommendation_id].append((m.items.index(e.item_id), e.type))
    return credit


@pytest.mark.parametrize("seed", range(5))
def test_attribution_matches_the_naive_rule_on_random_logs(seed):
    rng = random.Random(seed)
    imps = sorted((_imp(f"r{i}", f"u{rng.randrange(4)}", rng.randrange(2000),
                        rng.sample("abcdefgh", 3)) for i in range(60)), key=lambda m: m.timestamp)
    events = sorted((_ev(f"u{rng.randrange(4)}", rng.choice("abcdefgh"), rng.randrange(2500),
                         rng.choice([None, None, f"r{rng.randrange(70)}"]), rng.choice(["click", "purchase"]))
                     for _ in range(300)), key=lambda e: e.timestamp)
    got, counts = _run(events, imps, window_s=150, id_window_s=400)
    assert got == _naive(events, imps, 150, 400)
    assert counts.by_id + counts.by_window + counts.unverified + counts.unattributed == counts.events == 300


@pytest.mark.parametrize("seed", range(4))
def test_attribution_matches_the_naive_rule_with_anonymous_lists_repeated_items_and_ties(seed):
    """Lists shown to no user id, an item twice in a list, lists and events at the same second,
    events of users never shown a list, ids of other users' lists and of lists shown later."""
    rng = random.Random(100 + seed)
    users = [None, "u0", "u1", "u2", "u3"]
    imps = sorted((_imp(f"r{i}", rng.choice(users), rng.randrange(0, 3000, 7),
                        [rng.choice("abcdef") for _ in range(rng.randrange(1, 6))]) for i in range(80)),
                  key=lambda m: m.timestamp)
    events = [_ev(rng.choice(["u0", "u1", "u2", "u3", "u9"]), rng.choice("abcdefg"), rng.randrange(0, 3500, 7),
                  rng.choice([None, None, None, f"r{rng.randrange(90)}"]), rng.choice(["click", "purchase"]))
              for _ in range(300)]
    for m in rng.choices([m for m in imps if m.user_id], k=100):  # engagement with a list shown
        events.append(_ev(m.user_id, rng.choice(m.items), m.timestamp - T0 + rng.randrange(0, 800, 7),
                          rng.choice([None, m.recommendation_id]), rng.choice(["click", "purchase"])))
    events.sort(key=lambda e: e.timestamp)
    got, counts = _run(events, imps, window_s=140, id_window_s=700)
    assert got == _naive(events, imps, 140, 700)
    assert counts.by_id + counts.by_window + counts.unverified + counts.unattributed == counts.events == 400
    assert counts.by_id and counts.by_window and counts.unverified


def test_bootstrap_intervals_cover_the_true_rate_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    covered = 0
    for rep in range(200):
        shown = rng.integers(1, 8, 300)
        clicks = rng.binomial(shown, rng.beta(2, 6, 300))  # users differ: correlated within a user
        _, lo, hi = bootstrap_ratios(clicks, shown, 400, seed=rep)
        covered += lo[0] <= 0.25 <= hi[0]
    assert 0.89 <= covered / 200 <= 0.99


def _arm(rng, n, p):
    shown = rng.integers(1, 10, n)
    return rng.binomial(shown, np.clip(rng.normal(p, 0.05, n), 0, 1)), shown


def test_the_two_sample_test_finds_a_planted_difference_and_holds_its_level():
    rng = np.random.default_rng(1)
    assert two_sample_test(*_arm(rng, 2000, 0.20), *_arm(rng, 2000, 0.23))["p"] < 1e-4
    null = np.array([two_sample_test(*_arm(rng, 500, 0.2), *_arm(rng, 500, 0.2))["p"] for _ in range(400)])
    assert 0.025 <= (null < 0.05).mean() <= 0.085


def test_the_two_sample_test_permutes_users_when_an_arm_is_small():
    ten = np.array([10.0, 10.0])
    tiny = two_sample_test(np.array([0.0, 0.0]), ten, np.array([1.0, 2.0]), ten)
    # the normal p was 0.0027; 2 users an arm can be split 6 ways, 2 of them as far apart
    assert tiny["test"] == "permutation" and 0.25 <= tiny["p"] <= 0.42 and tiny["diff"] == pytest.approx(0.15)
    rng = np.random.default_rng(3)
    assert two_sample_test(*_arm(rng, 150, 0.15), *_arm(rng, 150, 0.30))["p"] < 1e-3  # a planted difference
    null = np.array([two_sample_test(*_arm(rng, 12, 0.2), *_arm(rng, 9, 0.2), n_perm=999, seed=n)["p"]
                     for n in range(300)])
    assert 0.01 <= (null < 0.05).mean() <= 0.08
    assert two_sample_test(*_arm(rng, 500, 0.2), *_arm(rng, 600, 0.2))["test"] == "normal"
    apart = two_sample_test(np.zeros(10), np.ones(10), np.ones(10), np.ones(10))  # no spread within either arm
    assert apart["se"] == 0 and apart["p"] < 0.001  # 2 of 184,756 splits are as far apart (was NaN)


def test_paired_test_and_sign_test():
    rng = np.random.default_rng(2)
    a = rng.poisson(1.0, 300).astype(float)
    assert paired_test(a, a) == 1.0
    assert paired_test(a + rng.poisson(0.3, 300), a, 2000) < 0.01
    null = np.array([paired_test(rng.poisson(1, 200), rng.poisson(1, 200), 400, seed=s) for s in range(100)])
    assert 0.01 <= (null < 0.05).mean() <= 0.11
    big = rng.normal(0, 1, 20_000)  # the normal branch
    assert paired_test(big + 0.05, big - rng.normal(0, 1, 20_000) * 0) < 1e-10
    assert sign_test(9, 1) == pytest.approx(2 * 11 / 1024)
    assert sign_test(1040, 960) == pytest.approx(sign_test(1041, 960), rel=0.15)  # exact vs normal at the switch
    assert sign_test(0, 0) == 1.0


def _fill(url, rng):
    """Two A/B arms (B's lists clicked more often), interleaved lists (team B's items clicked
    more), events by id and by window, a purchase now and then. The expected counts."""
    store = open_store(url)
    imps, events = [], []
    expected = {"A": [0, 0, 0], "B": [0, 0, 0]}
    for i in range(1200):
        user = f"u{i % 300}"
        arm = "A" if (i % 300) < 150 else "B"
        t = T0 + 60 * i
        items = tuple(f"i{j}" for j in rng.sample(range(50), 8))
        imps.append(Impression(f"r{i}", user, t, f"v-{arm}", items, arm))
        expected[arm][0] += 1
        if rng.random() < (0.2 if arm == "A" else 0.4):
            pos = rng.randrange(8)
            events.append(Event(user, items[pos], t + 5, "click", 1.0, f"e{i}", f"r{i}" if i % 2 else None))
            expected[arm][1] += 1
            if rng.random() < 0.3:
                events.append(Event(user, items[pos], t + 30, "purchase", 1.0, f"p{i}"))
                expected[arm][2] += 1
        if i % 3 == 0:  # an interleaved list for another user
            teams = tuple(rng.choice("AB") for _ in range(6))
            rid = f"x{i}"
            imps.append(Impression(rid, f"w{i % 90}", t + 1, "v-A|v-B", tuple(f"k{j}" for j in range(6)),
                                   "A+B", tuple(teams)))
            for pos, team in enumerate(teams):
                if rng.random() < (0.05 if team == "A" else 0.25):
                    events.append(Event(f"w{i % 90}", f"k{pos}", t + 2, "click", 1.0, f"x{i}-{pos}", rid))
    events.append(Event("u0", "i0", T0 + 3, "click", 1.0, "bad", "r999999"))  # unknown id
    store.add_impressions(imps)
    store.add(events)
    store.close()
    return expected


def test_the_cli_on_a_sqlite_store_writes_the_report_with_numeric_counts(tmp_path):
    url = f"sqlite:///{tmp_path}/events.db"
    expected = _fill(url, random.Random(3))
    out = tmp_path / "report"
    r = CliRunner().invoke(app, ["online", "report", "--events", url, "--out", str(out), "--bootstrap", "200"])
    assert r.exit_code == 0, r.output
    for name in ("report.md", "report.html", "results.json"):
        assert (out / name).stat().st_size > 0
    res = json.loads((out / "results.json").read_text())
    for arm, (n, clicks, conversions) in expected.items():
        got = res["arms"][arm]
        assert (got["impressions"], got["clicks"], got["conversions"]) == (n, clicks, conversions)
        assert all(isinstance(got[k], int) for k in ("impressions", "clicks", "conversions"))
        assert got["ctr"] == pytest.approx(clicks / n)
        assert got["ctr_ci"][0] < got["ctr"] < got["ctr_ci"][1]
        assert res["versions"][f"v-{arm}"]["users"] == 150
    assert res["attribution"]["unverified"] == 1
    assert res["arm_versions"]["A"]["v-A"] > 0 and "v-A" not in res["arm_versions"]["B"]
    ctr = next(t for t in res["ab_tests"] if t["metric"] == "ctr" and {t["a"], t["b"]} == {"A", "B"})
    assert ctr["one_version"] is None
    assert ctr["p"] < 0.001 and ctr["diff"] > 0 and ctr["users_in_both"] == 0 and ctr["p_holm"] == ctr["p"]  # 2 arms
    inter = res["interleaving"][0]
    assert (inter["a"], inter["b"]) == ("A", "B") and inter["wins_b"] > inter["wins_a"] and inter["p_sign"] < 0.01
    md = (out / "report.md").read_text().splitlines()
    assert "| A |" in "\n".join(md) and any("v-A\\|v-B" in line for line in md)  # a team-draft list's versions
    cells = lambda line: len(line.replace("\\|", "").split("|"))  # noqa: E731  (an escaped | is no cell)
    for n, line in enumerate(md[:-1]):
        if md[n + 1].startswith("|---"):  # a table: its header, its rule, its rows
            rows = [r for r in md[n + 2:][:next((i for i, r in enumerate(md[n + 2:]) if not r.startswith("|")),
                                                 len(md))]]
            assert rows and all(cells(r) == cells(line) for r in rows), (line, rows)
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(res["plots"]) and "per_day.png" in pngs  # matplotlib is installed: a plot, not a note


def test_arms_served_by_one_version_are_named_in_the_report(tmp_path):
    """An arm pinned to a version that did not load is served by the current one under its own
    name: the report says which versions served each arm, and that the test compared one with itself."""
    url = f"sqlite:///{tmp_path}/events.db"
    store = open_store(url)
    store.add_impressions([Impression(f"r{i}", f"u{i}", T0 + i, "v1", ("i1", "i2"), "AB"[i % 2]) for i in range(60)])
    store.add([_ev(f"u{i}", "i1", i + 1, f"r{i}") for i in range(0, 60, 3)])
    store.close()
    out = tmp_path / "report"
    r = CliRunner().invoke(app, ["online", "report", "--events", url, "--out", str(out), "--bootstrap", "100"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert res["arm_versions"] == {"A": {"v1": 30}, "B": {"v1": 30}}
    assert all(t["one_version"] == "v1" and t["test"] == "permutation" for t in res["ab_tests"])
    md = (out / "report.md").read_text()
    assert "Arms A and B were both served by version v1 alone" in md and "A: v1 (30 lists)" in md


def test_the_cli_names_a_missing_store_instead_of_creating_one(tmp_path):
    r = CliRunner().invoke(app, ["online", "report", "--events", f"sqlite:///{tmp_path}/none.db",
                                 "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "no such file" in r.output
    assert not (tmp_path / "none.db").exists()


def test_anonymous_lists_and_lists_without_an_arm_stay_out_of_the_rates_and_the_ab_tests(tmp_path):
    """Lists shown to no user id can earn no credit (an event names its user): counted, never a
    zero-click share of the default arm; /search's lists (no arm) are no A/B arm."""
    url = f"sqlite:///{tmp_path}/events.db"
    expected = _fill(url, random.Random(3))
    store = open_store(url)
    store.add_impressions([Impression(f"anon{i}", None, T0 + i, "v-A", ("i1", "i2"), "A") for i in range(500)]
                          + [Impression(f"s{i}", f"u{i}", T0 + i, "v-A", ("i3",)) for i in range(40)])
    store.close()
    out = tmp_path / "report"
    r = CliRunner().invoke(app, ["online", "report", "--events", url, "--out", str(out), "--bootstrap", "100"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    n, clicks, _ = expected["A"]
    assert (res["arms"]["A"]["impressions"], res["arms"]["A"]["clicks"]) == (n, clicks)  # not n + 500
    assert res["anonymous_lists"] == 500 and any("500 lists were shown to no user id" in x for x in res["notes"])
    assert {(t["a"], t["b"]) for t in res["ab_tests"]} == {("A", "B")}  # no test against "(none)"


def test_lists_shown_to_no_user_id_cost_one_cell_not_one_each_and_stay_out_of_interleaving():
    """Every anonymous list had a code of its own: 10,000 searches were 10,000 cells, each batch
    past the merge threshold regrouped them all. They are one cell a (day, version, arm) now,
    counted, and an interleaved list shown to no user id is no user's win or tie."""
    from groundrec.online.report.attribution import attribute_columns, impressions_table
    from groundrec.online.report.metrics import interleaving
    from groundrec.online.report.tally import Tally

    imps = [_imp(f"s{i}", None, i, "ab") for i in range(10_000)]
    imps += [_imp(f"k{i}", f"u{i}", 20_000 + i, "ab", arm="A+B", teams=("A", "B")) for i in range(3)]
    imps += [_imp("anon-drafted", None, 20_010, "ab", arm="A+B", teams=("B", "A"))]
    tally = Tally()
    for att in attribute_columns([], [impressions_table(imps)], AttributionCounts(), batch=2_000):
        tally.add(att)
    cells = tally.cells()
    assert tally.anonymous == 10_001 and cells.num_rows == 5  # 10,000 searches one cell; 3 users; the drafted list
    assert sum(cells["impressions"].to_pylist()) == len(imps)
    credits = {k: v.to_numpy() for k, v in zip(tally.credits().column_names, tally.credits().columns)}
    teams = {c: n for n, c in tally.teams.items()}
    arms = {c: n for n, c in tally.arms.items()}
    (pair,) = interleaving(credits, teams, arms)
    assert pair["users"] == 3 and pair["ties"] == 3  # the three users, not the anonymous list


def test_a_group_of_one_user_has_no_interval_and_the_report_is_written(tmp_path):
    from groundrec.shared.stats import delta_interval

    r, lo, hi = delta_interval(np.array([1.0]), np.array([49.0]))  # 1/49: a rounding residue, not zero
    assert r == pytest.approx(1 / 49) and np.isnan(lo) and np.isnan(hi)
    one = two_sample_test(np.array([1.0]), np.array([49.0]), np.array([3.0, 1]), np.array([9.0, 7]))
    assert np.isnan(one["se"]) and one["test"] == "permutation" and 1 / 3 <= one["p"] <= 1  # 3 ways to split 3 users
    url = f"sqlite:///{tmp_path}/events.db"  # one user, 49 lists, one click: was an infinite interval, a crash
    store = open_store(url)
    store.add_impressions([_imp(f"r{i}", "u1", i, ["a", "b"]) for i in range(49)])
    store.add([_ev("u1", "a", 3, "r3")])
    store.close()
    r = CliRunner().invoke(app, ["online", "report", "--events", url, "--out", str(tmp_path / "out"), "--bootstrap", "100"])
    assert r.exit_code == 0, r.output
    got = json.loads((tmp_path / "out" / "results.json").read_text())["days"]
    assert [d["ctr"] for d in got.values()] == [pytest.approx(1 / 49)] and list(got.values())[0]["ctr_ci"] == [None, None]


def test_interleaving_compares_two_teams_on_the_lists_they_shared_and_credits_no_filled_position(tmp_path):
    """An A+B experiment, then A+C (arm A reused): A against B counts the A+B lists only (the
    A+C users, where A's items were clicked, were 20 wins of A), and B and C, never drafted
    into one list, are not compared. A position filled after one arm's list ran out (team
    None) is credited to neither."""
    url = f"sqlite:///{tmp_path}/events.db"
    store = open_store(url)
    imps, events = [], []
    for i in range(20):
        t = T0 + 60 * i
        imps.append(Impression(f"ab{i}", f"w{i}", t, "v1|v2", ("a1", "b1", "f1"), "A+B", ("A", "B", None)))
        events += [Event(f"w{i}", "b1", t + 5, "click", 1.0, f"eb{i}", f"ab{i}"),
                   Event(f"w{i}", "f1", t + 6, "click", 1.0, f"ef{i}", f"ab{i}")]  # filled: nobody's credit
        imps.append(Impression(f"ac{i}", f"z{i}", t, "v1|v3", ("c1", "a1"), "A+C", ("C", "A")))
        events.append(Event(f"z{i}", "a1", t + 5, "click", 1.0, f"ea{i}", f"ac{i}"))
    store.add_impressions(imps)
    store.add(events)
    store.close()
    out = tmp_path / "report"
    r = CliRunner().invoke(app, ["online", "report", "--events", url, "--out", str(out), "--bootstrap", "100"])
    assert r.exit_code == 0, r.output
    got = {(x["a"], x["b"]): x for x in json.loads((out / "results.json").read_text())["interleaving"]}
    assert set(got) == {("A", "B"), ("A", "C")}
    ab, ac = got["A", "B"], got["A", "C"]
    assert (ab["users"], ab["wins_a"], ab["wins_b"], ab["credits_a"], ab["credits_b"]) == (20, 0, 20, 0, 20)
    assert (ac["users"], ac["wins_a"], ac["wins_b"], ac["credits_a"], ac["credits_b"]) == (20, 20, 0, 20, 0)
    assert ab["p_sign_holm"] == pytest.approx(2 * ab["p_sign"]) == pytest.approx(ac["p_sign_holm"])  # two pairs


def test_holm_adjusted_p_values_are_the_step_down_rule():
    from groundrec.shared.stats import holm_adjusted

    got = holm_adjusted([0.01, 0.04, 0.03, float("nan")])
    assert got[:3] == pytest.approx([0.03, 0.06, 0.06]) and np.isnan(got[3])  # 3p, 2p, then never below the last
    assert holm_adjusted([0.5, 0.9]) == pytest.approx([1.0, 1.0]) and holm_adjusted([]) == []
