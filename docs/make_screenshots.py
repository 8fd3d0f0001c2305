"""The README's screenshots of the web page, made from the demo catalog that `groundrec demo`
generates (never from ../shared data), so anyone can regenerate them:

    .venv/bin/python docs/make_screenshots.py        # needs chromium (apt-get install chromium)

It builds a tiny random-weight VLM (no download; its answers are noise, the lists come from
the catalog text), draws the demo catalog, runs the offline job with the demo's purchases (a
hybrid version), serves it on a loopback port and photographs three pages with headless
Chromium through Playwright: docs/img/items.png, docs/img/user.png, docs/img/item.png.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import uvicorn

from groundrec.offline.config import load_job_config
from groundrec.offline.demo import make_demo_data
from groundrec.offline.dev.tiny_models import build_tiny_vlm
from groundrec.offline.job import run_job
from groundrec.online.config import ServeConfig
from groundrec.online.service import create_app

OUT = Path(__file__).resolve().parent / "img"


def main() -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="groundrec-shots-") as tmp:
        tmp = Path(tmp)
        paths = make_demo_data(tmp / "data", n_items=120)
        vlm = build_tiny_vlm("smolvlm", tmp / "vlm")
        run_job(load_job_config(None, {"catalog.path": str(paths["catalog"]), "out": str(tmp / "artifacts"),
                                       "vlm.model": str(vlm), "vlm.max_new_tokens": 8, "run.runner": "local",
                                       "interactions.path": str(paths["interactions"]),
                                       "catalog.text_columns": ["title", "description", "category", "colour"]}),
                progress=False)
        server = uvicorn.Server(uvicorn.Config(create_app(ServeConfig(artifacts=str(tmp / "artifacts"), events="none")),
                                               host="127.0.0.1", port=0, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        buyer = pq.read_table(paths["interactions"]).to_pylist()
        history = [r["item_id"] for r in buyer if r["user_id"] == buyer[0]["user_id"]][:3]
        OUT.mkdir(exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"], headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            for name, path in (("items", "/"), ("user", f"/ui/user?h={','.join(history)}&k=8"),
                               ("item", f"/ui/items/{history[0]}")):
                page.goto(url + path)
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(OUT / f"{name}.png"))
                print(OUT / f"{name}.png")
            browser.close()
        server.should_exit = True


if __name__ == "__main__":
    main()
