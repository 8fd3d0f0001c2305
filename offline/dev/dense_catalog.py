"""A dense synthetic catalog with planted structure, for developing the hybrid recommender.

Two signals are planted, each visible to one side only:
- *topics*: an item's title names its topic in words, so content vectors can find an item's
  topic-mates; users favour a few topics;
- *bundles*: small groups of items from different topics bought by the same users, which no
  title reveals; only interactions can find them.
Popularity is Zipf-like within a topic, and a share of items is *new*: released in the last
part of the timeline, so a temporal split leaves them without training interactions (the cold
slice). Interactions are written with one timestamp per user event, in order.

    python -m groundrec.offline.dev.dense_catalog OUT_DIR [--items 1500] [--users 1000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TOPICS = {
    "running": ["trail shoe", "running vest", "race sock", "split short", "wind shell"],
    "office": ["blazer", "pencil skirt", "oxford shirt", "chino", "loafer"],
    "beach": ["swim short", "bikini top", "beach towel", "sun hat", "flip flop"],
    "winter": ["parka", "wool scarf", "snow boot", "thermal legging", "knit beanie"],
    "evening": ["cocktail dress", "satin heel", "clutch bag", "silk blouse", "bow tie"],
    "hiking": ["hiking boot", "fleece", "rain jacket", "cargo trouser", "daypack"],
    "yoga": ["yoga legging", "sports bra", "yoga mat", "wrap top", "studio sock"],
    "denim": ["slim jean", "denim jacket", "denim skirt", "jean short", "chambray shirt"],
    "kids": ["baby bodysuit", "kids hoodie", "romper", "toddler sneaker", "bib"],
    "lounge": ["pyjama set", "robe", "slipper", "lounge jogger", "sleep mask"],
    "formal": ["tuxedo jacket", "dress shirt", "cufflink", "oxford shoe", "waistcoat"],
    "street": ["graphic tee", "bucket hat", "skate shoe", "track jacket", "cargo short"],
}
COLOURS = ["black", "white", "navy", "red", "green", "beige", "grey", "pink", "olive", "burgundy"]


def make_dense_data(root: Path, n_items: int = 1500, n_users: int = 1000, per_user: int = 100,
                    bundle_size: int = 5, new_share: float = 0.1, seed: int = 0) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    topics = list(TOPICS)
    topic = rng.integers(0, len(topics), n_items)
    titles = [f"{rng.choice(COLOURS)} {rng.choice(TOPICS[topics[t]])} for {topics[t]}" for t in topic]
    new = rng.random(n_items) < new_share
    bundles = rng.permutation(n_items).reshape(-1, bundle_size)  # across topics: invisible to content
    pop = 1.0 / (1 + rng.permutation(n_items)) ** 0.8
    rows = []
    for u in range(n_users):
        liked_topics = rng.choice(len(topics), 2, replace=False)
        liked_bundles = bundles[rng.choice(len(bundles), 4, replace=False)].ravel()
        in_topics = np.flatnonzero(np.isin(topic, liked_topics))
        n = max(5, int(rng.poisson(per_user)))
        for step in range(n):
            late = step >= 0.8 * n  # the last 20% of each user's timeline: new items are on sale
            pool = liked_bundles if rng.random() < 0.5 else in_topics
            pool = pool if late else pool[~new[pool]]
            if len(pool) == 0:
                continue
            p = pop[pool] / pop[pool].sum()
            item = int(rng.choice(pool, p=p))
            rows.append({"user_id": f"u{u:05d}", "item_id": f"i{item:05d}", "timestamp": 1_700_000_000 + step * 3600 + u})
    root.mkdir(parents=True, exist_ok=True)
    paths = {"catalog": root / "catalog.parquet", "interactions": root / "interactions.parquet"}
    pq.write_table(pa.table({"item_id": [f"i{i:05d}" for i in range(n_items)], "title": titles,
                             "image": pa.nulls(n_items, pa.string()),  # no images: content is the title
                             "topic": [topics[t] for t in topic]}), paths["catalog"])
    table = pa.Table.from_pylist(rows)
    table = table.set_column(2, "timestamp", pa.array(table.column("timestamp").to_numpy().astype("datetime64[s]")))
    pq.write_table(table, paths["interactions"])
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--items", type=int, default=1500)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--per-user", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    paths = make_dense_data(a.out, a.items, a.users, a.per_user, seed=a.seed)
    print(f"wrote {paths['catalog']} and {paths['interactions']} ({pq.read_metadata(paths['interactions']).num_rows} interactions)")


if __name__ == "__main__":
    main()
