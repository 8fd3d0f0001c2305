"""`groundrec demo`: a generated catalog of drawn products with known attributes, synthetic
users who prefer some of them, the offline job on it, and recommendations for a few users."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from groundrec.offline.config import load_job_config
from groundrec.shared import artifact
from groundrec.shared.scoring import ranking
from groundrec.shared.scoring.profiles import latest, mean_profiles

COLOURS = {"red": (200, 30, 40), "blue": (30, 70, 200), "green": (40, 150, 60), "black": (20, 20, 20),
           "white": (240, 240, 240), "yellow": (235, 200, 40)}
PATTERNS = ("solid", "striped", "dotted", "checked")
CUTS = ("", "relaxed", "slim", "cropped", "oversized")
CATEGORIES = {
    "t-shirt": [(30, 20), (70, 20), (95, 40), (80, 50), (72, 42), (72, 110), (28, 110), (28, 42), (20, 50), (5, 40)],
    "trousers": [(30, 10), (70, 10), (75, 115), (55, 115), (50, 45), (45, 115), (25, 115)],
    "dress": [(40, 10), (60, 10), (65, 40), (85, 115), (15, 115), (35, 40)],
    "bag": [(20, 45), (80, 45), (85, 110), (15, 110)],
}


def _draw(category: str, colour: str, pattern: str, seed: int) -> Image.Image:
    img = Image.new("RGB", (100, 125), (250, 250, 250))
    mask = Image.new("L", img.size, 0)
    ImageDraw.Draw(mask).polygon(CATEGORIES[category], fill=255)
    fill = Image.new("RGB", img.size, COLOURS[colour])
    d = ImageDraw.Draw(fill)
    other = (250, 250, 250) if colour != "white" else (30, 30, 30)
    rng = random.Random(seed)
    if pattern == "striped":
        for y in range(0, 125, 10):
            d.rectangle([0, y, 100, y + 4], fill=other)
    elif pattern == "dotted":
        for _ in range(40):
            x, y = rng.randrange(100), rng.randrange(125)
            d.ellipse([x, y, x + 5, y + 5], fill=other)
    elif pattern == "checked":
        for x in range(0, 100, 12):
            for y in range(0, 125, 12):
                if (x + y) // 12 % 2:
                    d.rectangle([x, y, x + 11, y + 11], fill=other)
    img.paste(fill, (0, 0), mask)
    if category == "bag":
        ImageDraw.Draw(img).arc([30, 15, 70, 65], 180, 360, fill=COLOURS[colour], width=5)
    return img


def make_demo_data(root: Path, n_items: int = 120, n_users: int = 30, seed: int = 0) -> dict[str, Path]:
    """Write catalog.parquet, images/ and interactions.parquet under ``root``."""
    rng = random.Random(seed)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    # Distinct products: every (category, colour, pattern) once before any repeats, and a
    # repeat gets a cut of its own, so no two items share a title.
    combos = [(c, col, p) for c in CATEGORIES for col in COLOURS for p in PATTERNS]
    rng.shuffle(combos)
    for i in range(n_items):
        category, colour, pattern = combos[i % len(combos)]
        cut = CUTS[(i // len(combos)) % len(CUTS)]
        item_id = f"demo-{i:04d}"
        rel = f"images/{item_id}.jpg"
        _draw(category, colour, pattern, seed + i).save(root / rel, quality=90)
        rows.append({"item_id": item_id, "image": rel,
                     "title": f"{colour.capitalize()} {pattern} {category}" + (f", {cut} cut" if cut else ""),
                     "description": f"A {pattern} {category} in {colour}.", "category": category,
                     "colour": colour, "pattern": pattern})
    interactions = []
    for u in range(n_users):
        key, value = rng.choice([("category", rng.choice(list(CATEGORIES))), ("colour", rng.choice(list(COLOURS)))])
        liked = [r for r in rows if r[key] == value] or rows
        for day, r in enumerate(rng.sample(liked, min(5, len(liked)))):
            interactions.append({"user_id": f"user-{u:03d}", "item_id": r["item_id"], "timestamp": day,
                                 "prefers": f"{key}={value}"})
    paths = {"catalog": root / "catalog.parquet", "interactions": root / "interactions.parquet"}
    pq.write_table(pa.Table.from_pylist(rows), paths["catalog"])
    pq.write_table(pa.Table.from_pylist(interactions), paths["interactions"])
    return paths


def run_demo(out: Path, vlm: str | None, n_items: int, runner: str, progress: bool, console) -> None:
    from groundrec.offline.job import run_job
    from groundrec.offline.vlm import resolve_vlm
    from groundrec.offline.cli import print_summary

    cfg = load_job_config(None, {"vlm.model": vlm, "run.runner": runner, "out": str(Path(out) / "artifacts"),
                             "catalog.path": str(Path(out) / "data" / "catalog.parquet"),
                             "vlm.max_new_tokens": 48})
    resolve_vlm(cfg.vlm.model)  # before any work: no model here means a clear error in seconds
    paths = make_demo_data(Path(out) / "data", n_items=n_items)
    console.print(f"demo catalog: {n_items} drawn products in {paths['catalog'].parent}")
    summary = run_job(cfg, progress=progress)
    print_summary(summary)
    files = artifact.VersionFiles(artifact.current_path(cfg.out))
    items, vectors = pq.read_table(files.items), np.load(files.embeddings)
    item_ids = items.column(artifact.read_manifest(files.root).id_column).to_pylist()
    row_of = {iid: r for r, iid in enumerate(item_ids)}
    titles = dict(zip(item_ids, items.column("title").to_pylist()))
    users = pq.read_table(paths["interactions"]).to_pylist()
    by_user: dict[str, list[dict]] = {}
    for r in users:
        by_user.setdefault(r["user_id"], []).append(r)
    grounded = dict(zip(item_ids, items.column("vlm_text").to_pylist()))
    for user, rows in list(by_user.items())[:3]:
        history = [row_of[r["item_id"]] for r in rows if r["item_id"] in row_of]
        # The service's rule for a content version: mean profile, seen items excluded, top 5.
        scores = (mean_profiles(vectors, [latest(history)]) @ vectors.T)[0]
        ranked = ranking.top_k(ranking.exclude(scores, history), 5)
        console.print(f"\n[bold]{user}[/] (prefers {rows[0]['prefers']}) bought: "
                      + ", ".join(titles.get(r["item_id"], r["item_id"]) for r in rows), highlight=False)
        for row, score in ranked:
            iid = item_ids[row]
            said = (grounded.get(iid) or "")[:70]
            console.print(f"  {score:.3f}  {titles[iid]}  ({iid})  VLM: {said!r}", highlight=False)
