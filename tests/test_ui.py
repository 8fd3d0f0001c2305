"""The web page in a real browser: headless Chromium (the Debian package) driven by
Playwright, against the real service over a version the real job published from the demo
catalog (thumbnails included)."""

from __future__ import annotations

import os
import shutil
from urllib.parse import unquote

import httpx
import pytest

from groundrec.online.config import ServeConfig
from groundrec.online.service import create_app
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
        results = page.locator("ul[aria-label='search results'] li.card")
        assert results.count() > 0 and "/ui/search" in page.url
        page.wait_for_load_state("networkidle")
        assert all(_images_loaded(page, "ul[aria-label='search results'] img"))
        # build a history by clicking: the list is recommended from it and changes as it grows
        first = results.nth(0).get_attribute("data-item")
        results.nth(0).locator("a.add").click()
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
        assert r.status_code == 200 and r.headers["content-type"] == "image/webp" and "max-age" in r.headers["cache-control"]
        assert r.content[:4] == b"RIFF" and r.headers.get("etag")
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


def test_the_version_view_links_the_eval_report_and_serves_only_its_files(published, tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.html").write_text("<html><body>recall@20 table</body></html>")
    (tmp_path / "secret.txt").write_text("not for the page")
    cfg = ServeConfig(artifacts=published["artifacts"], events="none", report=report)
    with running(create_app(cfg)) as url:
        page = httpx.get(url + "/ui/version")
        assert page.status_code == 200 and "/ui/report/report.html" in page.text and published["version"] in page.text
        assert "recall@20 table" in httpx.get(url + "/ui/report/report.html").text
        for name in ("..%2Fsecret.txt", ".hidden", "nope.html"):
            assert httpx.get(url + f"/ui/report/{name}").status_code == 404
