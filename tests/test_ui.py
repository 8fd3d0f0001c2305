"""The web page in a real browser: headless Chromium (the Debian package) driven by
Playwright, against the real service over a version the real job published from the demo
catalog (thumbnails included)."""

from __future__ import annotations

import os
import re
import shutil
from html import unescape
from pathlib import Path
from urllib.parse import unquote

import httpx
import pyarrow.parquet as pq
import pytest

from groundrec.online.config import ServeConfig
from groundrec.online.service import create_app
from groundrec.shared import artifact
from helpers import publish_demo, running

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_vlm):
    return publish_demo(tmp_path_factory.mktemp("ui"), tiny_vlm(), n_items=40, n_users=12)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        if os.environ.get("GROUNDREC_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (apt-get install chromium), and GROUNDREC_REQUIRE_BROWSER is set")
        pytest.skip("chromium is not installed: apt-get install chromium (CI runs these tests)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        yield b
        b.close()


def _watched(browser):
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    return page, problems


def _images_loaded(page, selector: str) -> list[bool]:
    return page.eval_on_selector_all(selector, "els => els.map(e => e.complete && e.naturalWidth > 0)")


def test_search_build_a_history_and_read_an_item(published, browser):
    with running(create_app(ServeConfig(artifacts=published["artifacts"], events="none"))) as url:
        page, problems = _watched(browser)
        page.goto(url + "/")
        cards = page.locator("ul[aria-label='most popular items'] li.card")
        assert cards.count() > 10
        page.wait_for_load_state("networkidle")
        shown = _images_loaded(page, "ul[aria-label='most popular items'] img")
        assert shown and all(shown)  # a thumbnail for every item (the demo's images are all readable)
        alts = page.eval_on_selector_all("li.card img", "els => els.map(e => e.alt)")
        assert all(alts)  # alt text from the title
        # search with the ONNX encoder
        page.fill("#q", "red dress")
        page.click("button[type=submit]")
        page.wait_for_load_state("load")  # a click waits for the navigation to commit only
        results = page.locator("ul[aria-label='search results'] li.card")
        assert results.count() > 0 and "/ui/search" in page.url
        page.wait_for_load_state("networkidle")
        assert all(_images_loaded(page, "ul[aria-label='search results'] img"))
        # build a history by clicking: the list is recommended from it and changes as it grows
        first = results.nth(0).get_attribute("data-item")
        results.nth(0).locator("a.add").click()
        page.wait_for_load_state("load")  # a click waits for the navigation to commit only
        assert page.locator("ul[aria-label='history'] li").count() == 1
        before = page.eval_on_selector_all("ul[aria-label='recommended items'] li.card",
                                           "els => els.map(e => e.dataset.item)")
        assert before and first not in before  # seen items are excluded
        assert "content" in page.locator("ul[aria-label='recommended items'] .parts").first.inner_text()
        second = page.locator("ul[aria-label='recommended items'] li.card").nth(3)
        second_id = second.get_attribute("data-item")
        # keyboard: focus its "add" link and press Enter
        second.locator("a.add").focus()
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert unquote(page.url.split("h=")[1]).split(",") == [first, second_id]
        after = page.eval_on_selector_all("ul[aria-label='recommended items'] li.card",
                                          "els => els.map(e => e.dataset.item)")
        assert after != before and second_id not in after
        # the controls change the list: diversity spreads it
        page.fill("#div", "0.9")
        page.click("form.inline button[type=submit]")
        page.wait_for_load_state("load")  # a click waits for the navigation to commit only
        spread = page.eval_on_selector_all("ul[aria-label='recommended items'] li.card",
                                           "els => els.map(e => e.dataset.item)")
        assert spread != after and "diversity=0.9" in page.url
        # an item page: its picture, what the VLM said and where it came from, its neighbours
        page.goto(url + f"/ui/items/{first}")
        assert page.locator("table[aria-label='grounded fields'] th").count() >= 1
        assert "grounded by the VLM" in page.inner_text("#source")
        assert page.locator("ul[aria-label='nearest items'] li.card").count() > 0
        # the version view
        page.goto(url + "/ui/version")
        assert published["version"] in page.inner_text("main")
        assert problems == []
        # thumbnails: cached WebP, a placeholder for an item without one
        r = httpx.get(url + f"/items/{first}/thumbnail")
        assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
        assert r.content[:4] == b"RIFF" and r.headers.get("etag")
        assert r.headers["cache-control"] == "private, no-cache"  # asked again each time: a new picture shows
        again = httpx.get(url + f"/items/{first}/thumbnail", headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304 and not again.content  # ... for a 304 while the copy is current
        r = httpx.get(url + "/items/no-such-item/thumbnail")
        assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg")


def test_the_page_needs_the_key_when_one_is_set_and_never_puts_it_in_a_url(published, browser, monkeypatch):
    monkeypatch.setenv("GROUNDREC_API_KEY", "page-secret")
    with running(create_app(ServeConfig(artifacts=published["artifacts"], events="none"))) as url:
        page, problems = _watched(browser)
        urls: list[str] = []
        page.on("request", lambda r: urls.append(r.url))
        page.goto(url + "/")
        assert "/ui/login" in page.url  # sent to sign in, nothing shown
        assert httpx.get(url + "/items/x/thumbnail").status_code == 401
        page.fill("#key", "wrong")
        page.click("button[type=submit]")
        page.wait_for_load_state("load")  # a click waits for the navigation to commit only
        assert "/ui/login" in page.url
        page.fill("#key", "page-secret")
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
        assert page.locator("li.card").count() > 0 and all(_images_loaded(page, "li.card img"))
        assert not any("page-secret" in u for u in urls)
        # the cookie opens the page's GETs only: a write with it alone is refused
        cookies = {c["name"]: c["value"] for c in page.context.cookies()}
        r = httpx.post(url + "/events", json={"events": [{"user_id": "u", "item_id": "x"}]}, cookies=cookies)
        assert r.status_code == 401
        assert [p for p in problems if "401" not in p] == []


def test_bad_query_values_get_a_4xx_page_and_lists_asked_by_name_ignore_the_fallback(published, tmp_path):
    """The page's query values go through the API's limits: out of range is a 422 page naming
    the field, never a 500; an empty search is the form alone; with ``fallback: error`` the
    home page and /popular still list the popular items (asked for by name, not a fallback);
    a history item deleted since is left out of the user's page."""
    cfg = ServeConfig(artifacts=published["artifacts"], events=f"sqlite:///{tmp_path}/events.db", fallback="error")
    with running(create_app(cfg)) as url:
        empty = httpx.get(url + "/ui/search")
        assert empty.status_code == 200 and 'name="q"' in empty.text
        home = httpx.get(url + "/")
        assert home.status_code == 200 and 'data-item="' in home.text
        assert len(httpx.get(url + "/popular", params={"k": 3}).json()["items"]) == 3
        first, second = [h.split('"')[0] for h in home.text.split('data-item="')[1:3]]
        for params, says in (({"h": first, "k": 0}, "k"), ({"h": first, "diversity": 2}, "diversity"),
                             ({"user_id": "u" * 300}, "user_id")):
            r = httpx.get(url + "/ui/user", params=params)
            assert r.status_code == 422 and says in unescape(r.text), (params, r.text[-300:])
        nothing = httpx.get(url + "/ui/user")  # no history: the popular list (was the fallback's 422)
        assert nothing.status_code == 200 and 'data-item="' in nothing.text and 'name="user_id"' in nothing.text
        httpx.post(url + "/events", json={"events": [{"user_id": "c1", "item_id": i} for i in (first, second)]})
        known = httpx.get(url + "/ui/user", params={"user_id": "c1", "k": 5})  # the store's history, shown
        panel = unquote(known.text).split("<h2>Recommended</h2>")[0]
        assert known.status_code == 200 and f"ui/items/{first}" in panel and f"ui/items/{second}" in panel
        assert "No history yet" not in panel and ">remove<" not in panel  # stored, not the page's to remove
        added = httpx.get(url + "/ui/user", params={"user_id": "c1", "k": 5, "h": second})
        remove = re.findall(r'href="(ui/user\?[^"]*)" aria-label="remove', unescape(added.text))
        assert len(remove) == 1 and "user_id=c1" in remove[0] and "k=5" in remove[0]  # the page's settings kept
        adds = re.findall(r'class="add" href="(ui/user\?[^"]*)"', unescape(added.text))
        assert adds and all("user_id=c1" in a and "k=5" in a for a in adds)  # by "add to history" too
        assert httpx.delete(url + f"/items/{first}").status_code == 200
        page = httpx.get(url + "/ui/user", params={"h": f"{first},{second}"})
        assert page.status_code == 200 and f"ui/items/{second}" in unquote(page.text)
        assert f"ui/items/{first}" not in unquote(page.text)


def test_the_version_view_links_the_eval_report_and_serves_only_its_files(published, tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.html").write_text("<html><body>recall@20 table</body></html>")
    (tmp_path / "secret.txt").write_text("not for the page")
    cfg = ServeConfig(artifacts=published["artifacts"], events="none", report=report)
    with running(create_app(cfg)) as url:
        page = httpx.get(url + "/ui/version")
        assert page.status_code == 200 and "ui/report/report.html" in page.text and published["version"] in page.text
        files = artifact.VersionFiles(artifact.version_path(published["artifacts"], published["version"]))
        skipped = pq.read_table(files.skipped).num_rows if files.skipped.is_file() else 0
        assert f"Skipped items ({min(skipped, 200)} shown)" in page.text  # read off the event loop, the first 200
        assert "recall@20 table" in httpx.get(url + "/ui/report/report.html").text
        for name in ("..%2Fsecret.txt", ".hidden", "nope.html"):
            assert httpx.get(url + f"/ui/report/{name}").status_code == 404


@pytest.fixture(scope="module")
def variants(tmp_path_factory, tiny_vlm):
    """The demo catalog with H&M's problem: its pattern variants share a title ("Red dress"),
    as H&M's colour variants of one product do. Published by the real job."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from groundrec.offline.config import load_job_config
    from groundrec.offline.demo import make_demo_data
    from groundrec.offline.job import run_job

    root = tmp_path_factory.mktemp("variants")
    paths = make_demo_data(root / "data", n_items=40, n_users=4)
    table = pq.read_table(paths["catalog"])
    titles = [f"{c.capitalize()} {k}" for c, k in zip(table["colour"].to_pylist(), table["category"].to_pylist())]
    pq.write_table(table.set_column(table.schema.get_field_index("title"), "title", pa.array(titles)), paths["catalog"])
    run_job(load_job_config(None, {"catalog.path": str(paths["catalog"]), "out": str(root / "artifacts"),
                                   "vlm.model": str(tiny_vlm()), "vlm.max_new_tokens": 4, "run.runner": "local",
                                   "export.int8": False, "catalog.text_columns": ["title", "category", "colour"]}),
            progress=False)
    return root / "artifacts"


def _titles(html: str, label: str) -> list[str]:
    """The titles of a page's list, as its cards show them."""
    import re

    (grid,) = re.findall(rf'<ul class="grid" aria-label="{label}">(.*?)</ul>', html, re.S)
    return [unescape(t) for t in re.findall(r'<a href="ui/items/[^"]+">([^<]*)</a>', grid)]


def test_every_list_of_the_page_takes_max_per_and_shows_the_one_in_force(variants):

    with running(create_app(ServeConfig(artifacts=variants, events="none"))) as url:
        plain = _titles(httpx.get(url + "/").text, "most popular items")
        assert len(plain) == 40 and len(set(plain)) < len(plain)  # without it, titles repeat
        home = httpx.get(url + "/", params={"max_per": "title:1"}).text
        once = _titles(home, "most popular items")
        assert once and len(set(once)) == len(once) == len(set(plain))  # each title once, every title there
        assert 'value="title:1"' in home and "at most 1 per title" in home
        found = httpx.get(url + "/ui/search", params={"q": "red dress", "max_per": "title:1"}).text
        assert len(set(_titles(found, "search results"))) == len(_titles(found, "search results")) > 1
        two = _titles(httpx.get(url + "/ui/search", params={"q": "red dress", "max_per": "title:2"}).text,
                      "search results")
        assert max(two.count(t) for t in two) == 2
        first = httpx.get(url + "/").text.split('data-item="')[1].split('"')[0]
        user = httpx.get(url + "/ui/user", params={"h": first, "k": 20, "max_per": "title:1"}).text
        listed = _titles(user, "recommended items")
        assert len(listed) == len(set(listed)) > 5 and 'id="max_per" name="max_per" value="title:1"' in user
        bad = httpx.get(url + "/ui/user", params={"h": first, "max_per": "title:0"})
        assert bad.status_code == 400 and "max_per" in bad.text and "column:N" in bad.text
        unknown = httpx.get(url + "/", params={"max_per": "no_such_column:1"})
        assert unknown.status_code == 400 and "no_such_column" in unknown.text
    # the server's default applies when the page gives none, says so, and "none" lifts it
    with running(create_app(ServeConfig(artifacts=variants, events="none", max_per={"title": 1}))) as url:
        home = httpx.get(url + "/").text
        assert _titles(home, "most popular items") == once
        assert "at most 1 per title (the server&#x27;s default)" in home and 'placeholder="title:1"' in home
        assert _titles(httpx.get(url + "/", params={"max_per": "none"}).text, "most popular items") == plain


def test_max_per_in_the_browser_changes_the_users_list(variants, browser):
    with running(create_app(ServeConfig(artifacts=variants, events="none"))) as url:
        page, problems = _watched(browser)
        page.goto(url + "/")
        first = page.locator("ul[aria-label='most popular items'] li.card").first.get_attribute("data-item")
        page.goto(url + f"/ui/user?h={first}&k=30")  # 30 of 39 items: more than their 23 titles
        titles = "els => els.map(e => e.querySelector('a[href^=\"ui/items/\"]').textContent)"
        before = page.eval_on_selector_all("ul[aria-label='recommended items'] li.card", titles)
        assert len(set(before)) < len(before)  # variants side by side
        assert "no limit (the server's default)" in page.inner_text("#max_per_used")
        page.fill("#max_per", "title:1")
        page.click("form.inline button[type=submit]")
        page.wait_for_load_state("load")  # a click waits for the navigation to commit only
        after = page.eval_on_selector_all("ul[aria-label='recommended items'] li.card", titles)
        assert "max_per=title%3A1" in page.url and len(after) == len(set(after)) >= 22  # every title (but the seen one's)
        assert page.input_value("#max_per") == "title:1" and "at most 1 per title" in page.inner_text("#max_per_used")
        assert problems == []


def test_the_pages_max_per_field_reads_and_writes_the_apis_max_per():
    from groundrec.online.ui_html import format_max_per, max_per_field, parse_max_per
    from groundrec.shared.errors import UserError

    assert parse_max_per("") is None and parse_max_per(None) is None and parse_max_per(" none ") == {}
    assert parse_max_per("title:1, colour : 2") == {"title": 1, "colour": 2}
    assert parse_max_per("a:b:3") == {"a:b": 3}  # the last colon splits: a column may hold one
    for given in ({"title": 1, "colour": 2}, {}, None):
        assert parse_max_per(format_max_per(given)) == given
    for bad in ("title", "title:0", "title:x", ":1", "title:1,", "title:\u00b2", "title:" + "9" * 5000):
        with pytest.raises(UserError, match="column:N"):
            parse_max_per(bad)
    field = max_per_field("", {"title": 1})
    assert 'value=""' in field and "at most 1 per title (the server&#x27;s default)" in field
    assert "no limit</span>" in max_per_field("none", {"title": 1})
    assert 'value="x:2"' in max_per_field('x:2', None) and "at most 2 per x</span>" in max_per_field("x:2", None)


def test_a_catalog_whose_id_column_is_not_item_id_and_a_key_the_cookie_must_quote(published, tmp_path, monkeypatch):
    """/ui/user read the history rows' ``item_id`` (a 500 for a catalog keyed by ``sku``); a key
    with ``;`` or ``"`` is quoted in its cookie, and the page looped back to sign-in."""
    import pyarrow.parquet as pq

    from groundrec.offline.config import load_job_config
    from groundrec.offline.job import run_job

    catalog = pq.read_table(published["overrides"]["catalog.path"])  # a copy keyed by sku, its images where they are
    catalog = catalog.rename_columns(["sku" if c == "item_id" else c for c in catalog.column_names])
    pq.write_table(catalog, tmp_path / "catalog.parquet")
    run_job(load_job_config(None, {**published["overrides"], "catalog.path": str(tmp_path / "catalog.parquet"),
                                   "catalog.images_root": str(Path(published["overrides"]["catalog.path"]).parent),
                                   "catalog.id_column": "sku", "out": str(tmp_path / "art")}), progress=False)
    monkeypatch.setenv("GROUNDREC_API_KEY", 'a;b"c')
    with running(create_app(ServeConfig(artifacts=tmp_path / "art", events="none"))) as url, \
            httpx.Client(base_url=url) as client:
        assert client.post("/ui/login", data={"key": 'a;b"c'}).status_code == 303
        first = catalog.column("sku")[0].as_py()
        page = client.get("/ui/user", params={"h": first})
        assert page.status_code == 200 and f"ui/items/{first}" in unquote(page.text)
        quoted = client.cookies.get("groundrec_key")  # beside a malformed cookie of another app on the host
        other = httpx.get(url + "/", headers={"cookie": f'prefs={{"a": 1}}; x=a b; groundrec_key={quoted}'})
        assert other.status_code == 200 and "/ui/login" not in str(other.url)


def test_a_history_of_ids_holding_commas_and_percents_survives_the_page_s_links():
    """The page's ``h`` joined ids with commas: "coat,red" (an id the catalog and the items API
    accept) came back as two unknown ids."""
    from urllib.parse import parse_qs, urlsplit

    from groundrec.online.ui_html import card, joined, split

    history = ["coat,red", "50%-off", "plain-1"]
    assert split(joined(history)) == history and split("plain-1,plain-2") == ["plain-1", "plain-2"]
    link = card({"item_id": "a,b", "title": "x", "score": 1.0}, history).split('class="add" href="')[1].split('"')[0]
    assert split(parse_qs(urlsplit(unescape(link)).query)["h"][0]) == [*history, "a,b"]


def test_why_an_item_was_shown_escapes_the_field_s_name_and_value():
    """The grounded fields an item shares with the history: a column name from the catalog's
    header or the prompt config went into the page raw."""
    from groundrec.online.ui_html import segment, why

    line = why({"vlm_<img src=x onerror=alert(1)>": "<b>red</b>", "vlm_text": "x", "title": "t"},
               [{"vlm_<img src=x onerror=alert(1)>": "<B>RED</B>"}])
    assert "<img" not in line and "<b>" not in line and "(like 1 in the history)" in line
    assert (segment(".."), segment("."), segment("a/..b?"), segment("..x")) == ("%2E%2E", "%2E", "a%2F..b%3F", "..x")


def test_sign_in_refuses_another_site_s_form_and_a_blank_key_and_marks_the_cookie_secure_over_https(published,
                                                                                                   monkeypatch):
    """Another site's page could post its own key to /ui/login (login CSRF: the browser signed
    in as someone else); a blank key was stored as the cookie; the cookie carrying the full key
    was never Secure, so one plain-http request sent it in clear."""
    monkeypatch.setenv("GROUNDREC_API_KEY", "full-key")
    with running(create_app(ServeConfig(artifacts=published["artifacts"], events="none"))) as url, \
            httpx.Client(base_url=url) as client:
        forged = client.post("/ui/login", data={"key": "attacker"}, headers={"sec-fetch-site": "cross-site"})
        assert forged.status_code == 403 and "own page" in forged.json()["detail"] and not client.cookies
        blank = client.post("/ui/login", data={"key": "  "})
        assert blank.status_code == 303 and "error=" in blank.headers["location"] and not client.cookies
        plain = client.post("/ui/login", data={"key": "full-key"}, headers={"sec-fetch-site": "same-origin"})
        assert plain.status_code == 303 and "secure" not in plain.headers["set-cookie"].lower()
        proxied = client.post("/ui/login", data={"key": "full-key"}, headers={"x-forwarded-proto": "https"})
        assert "secure" in proxied.headers["set-cookie"].lower() and "httponly" in proxied.headers["set-cookie"].lower()
