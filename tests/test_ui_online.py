"""The web page's "online" view (online/ui_online.py) in a real headless Chromium, against the
real service and its SQLite event store: recommendations answered to users in an experiment,
feedback sent with their recommendation_id, and /ui/online showing the online report over the
last N days: per version and per arm, the A/B test or the interleaving result, the plots."""

from __future__ import annotations

import time

import httpx
import pytest

from groundrec.online.config import ServeConfig
from groundrec.online.service import create_app
from groundrec.shared.events import Impression, open_store
from helpers import publish_demo, running
from test_ui import browser, _watched  # noqa: F401  (the browser fixture: Chromium, or a skip)

USERS = [f"shopper-{n}" for n in range(16)]


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_vlm):
    return publish_demo(tmp_path_factory.mktemp("ui-online"), tiny_vlm(), n_items=30, n_users=6)


def _serve(published, tmp_path, mode: str):
    store_url = f"sqlite:///{tmp_path}/events.db"
    arms = [{"name": "plain", "version": "current"}, {"name": "diverse", "version": "current",
                                                       "defaults": {"diversity": 0.6, "popularity_weight": 0.3}}]
    cfg = ServeConfig(artifacts=published["artifacts"], events=store_url, compute="thread",
                      experiment={"name": "ui-test", "mode": mode, "arms": arms})
    return running(create_app(cfg)), store_url


def _shop(url: str, history: list[str]) -> dict[str, int]:
    """Each user asks once and, a moment later, views the first item shown, with the answer's
    id; the arms seen. (The moment: an impression is stamped when the logger writes it, up to
    its flush interval after the answer, and the report credits no event older than its list.)"""
    answers = {user: httpx.post(url + "/recommend", json={"user_id": user, "history": history, "k": 4}).json()
               for user in USERS}
    time.sleep(0.5)
    arms: dict[str, int] = {}
    for user, answer in answers.items():
        arms[answer["arm"]] = arms.get(answer["arm"], 0) + 1
        event = {"user_id": user, "item_id": answer["items"][0]["item_id"], "type": "view",
                 "recommendation_id": answer["recommendation_id"]}
        assert httpx.post(url + "/events", json={"events": [event]}).json()["unattributed"] == 0
    return arms


def _rows(page, label: str) -> list[list[str]]:
    return page.eval_on_selector_all(f"table[aria-label='{label}'] tbody tr",
                                     "rows => rows.map(r => [...r.cells].map(c => c.innerText))")


def _table(page, label: str) -> dict[str, list[str]]:
    """A table of the view by its first column."""
    return {r[0]: r[1:] for r in _rows(page, label)}


def test_online_view_reports_versions_arms_and_the_ab_test_of_the_last_days(published, browser, tmp_path):
    server, store_url = _serve(published, tmp_path, "ab")
    old = time.time() - 20 * 86_400  # a list shown three weeks ago: outside the default 7 days
    store = open_store(store_url)
    try:
        store.add_impressions([Impression(f"{n}" * 32, f"old-shopper-{n}", old, "retired-version", ("x",), "plain")
                               for n in range(2)])
    finally:
        store.close()
    with server as url:
        arms = _shop(url, published["histories"][0])
        assert set(arms) == {"plain", "diverse"}
        page, problems = _watched(browser)
        page.goto(url + "/ui/version")  # a page that shows no list (the home page's would be an impression)
        page.click("nav a:has-text('Online')")  # linked from every page's navigation
        page.wait_for_load_state("load")  # a click waits for the navigation to commit only
        assert page.url.endswith("/ui/online") and page.locator("h1").inner_text() == "Online: the last 7 days"
        versions = _table(page, "Per version")
        assert list(versions) == [published["version"]]  # the retired version's list is older than 7 days
        impressions, clicks, conversions = versions[published["version"]][:3]
        assert (impressions, clicks, conversions) == (str(len(USERS)), str(len(USERS)), "0")
        per_arm = _table(page, "Per arm")
        assert {a: int(v[0]) for a, v in per_arm.items()} == arms
        ctr = per_arm["plain"][4]
        assert ctr.startswith("1.0000 [") and ctr.endswith("]")  # every list was clicked: the CTR, its interval
        ab = _rows(page, "A/B tests between arms")  # a, b, metric, diff, se, p, p (Holm), p by, users a / b, in both
        assert [(r[0], r[1], r[2]) for r in ab] == [("diverse", "plain", "ctr"), ("diverse", "plain", "cvr")]
        assert ab[0][6] == ab[0][5]  # two arms: one test per metric, nothing to adjust
        assert ab[0][7] == "permutation"  # a few users an arm
        assert ab[0][8] == f"{arms['diverse']} / {arms['plain']}" and ab[0][9] == "0"  # sticky: no user in both
        plots = page.locator("img.plot")
        assert plots.count() >= 2  # matplotlib is installed here: per day, per arm, per version
        assert all(page.eval_on_selector_all("img.plot", "els => els.map(e => e.complete && e.naturalWidth > 0)"))
        page.fill("#days", "30")
        page.click("form.inline button[type=submit]")
        page.wait_for_load_state("load")  # a click waits for the navigation to commit only
        assert "days=30" in page.url
        assert set(_table(page, "Per version")) == {published["version"], "retired-version"}
        assert problems == []
        assert httpx.get(url + "/ui/online", params={"days": "-1"}).status_code == 422


def test_online_view_shows_the_interleaving_result_and_says_when_there_is_no_store(published, browser, tmp_path):
    server, _ = _serve(published, tmp_path, "team_draft")
    with server as url:
        _shop(url, published["histories"][1])
        page, problems = _watched(browser)
        page.goto(url + "/ui/online?days=1")
        assert page.locator("h1").inner_text() == "Online: the last 1 day"
        interleaved = _table(page, "Interleaving (team draft)")
        assert list(interleaved) == ["diverse"]  # a = diverse, b = plain (in name order)
        users, wins = interleaved["diverse"][1], interleaved["diverse"][2]
        assert int(users) == len(USERS) and sum(int(w) for w in wins.split(" / ")) == len(USERS)
        assert problems == []
    with running(create_app(ServeConfig(artifacts=published["artifacts"], events="none"))) as url:
        page, _ = _watched(browser)
        response = page.goto(url + "/ui/online")
        assert response.status == 501 and "no online report without an event store" in page.inner_text("main")


def test_one_online_report_is_computed_at_a_time(published, tmp_path):
    """Each visit ran the whole report in the thread pool every other route shares: a read key's
    visits in parallel took every thread. A visit while one is computed gets a 503."""
    from groundrec.online.ui_online import REPORTING

    server, _ = _serve(published, tmp_path, "ab")
    with server as url:
        with REPORTING:  # another visit's report in progress
            busy = httpx.get(url + "/ui/online?days=1")
        assert busy.status_code == 503 and "online report is being computed" in busy.text
        assert httpx.get(url + "/ui/online?days=1").status_code == 200
