"""The thumbnails stage: a small WebP per item with a readable image (longest side at most
``thumbnails.max_side``), for the web page. Cached by image content and settings like the
groundings, so an unchanged re-run decodes nothing; an image that cannot be read gets no
thumbnail (the page shows a placeholder) and is never fatal."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
from groundrec.offline import images
from groundrec.offline.cache import ParquetCache, cache_key

SCHEMA = pa.schema([("item_id", pa.string()), ("webp", pa.binary())])
CACHE_SCHEMA = pa.schema([("cache_key", pa.string()), ("webp", pa.binary())])


class ThumbnailCache(ParquetCache):
    def __init__(self, root: Path):
        super().__init__(Path(root) / "thumbnails", CACHE_SCHEMA)


def thumbnail(uri: str, max_side: int, quality: int, sha: str | None = None) -> bytes | None:
    """The image at ``uri`` as WebP, longest side at most ``max_side``; None when unreadable,
    or when it is no longer the image the ground stage hashed (``sha``: it changed while the job
    ran, and its thumbnail would be cached under the old image's key)."""
    try:
        data = images.read_bytes(uri)
        if sha is not None and images.sha256(data) != sha:
            return None
        im = images.decode(data, uri, at_most=max_side)
    except (images.BadImage, OSError, ValueError):
        return None
    im.thumbnail((max_side, max_side))
    out = io.BytesIO()
    im.save(out, "WEBP", quality=quality, method=2)
    return out.getvalue()


def make_thumbnails(groundings: pa.Table, id_column: str, cache_dir: Path, max_side: int = 256,
                    quality: int = 75, threads: int = 2) -> tuple[pa.Table, dict]:
    """(item id, WebP bytes) for each item whose image was read in the ground stage (its
    ``image_sha256`` is known); the counts (made, from cache, unreadable)."""
    ids = groundings.column(id_column).to_pylist()
    shas = groundings.column("image_sha256").to_pylist()
    uris = groundings.column("image_uri").to_pylist()
    wanted = [(str(i), u, cache_key(s, {"thumbnail": max_side, "quality": quality}), s)
              for i, u, s in zip(ids, uris, shas) if s and u]
    cache = ThumbnailCache(cache_dir)
    cached = cache.lookup({k for _, _, k, _ in wanted})
    found = dict(zip(cached.column("cache_key").to_pylist(), cached.column("webp").to_pylist()))
    todo = list({k: (u, s) for _, u, k, s in wanted if k not in found}.items())  # one image shared by items: once
    with ThreadPoolExecutor(max(1, threads)) as pool:  # PIL decodes and encodes outside the GIL
        made = list(pool.map(lambda t: thumbnail(t[1][0], max_side, quality, t[1][1]), todo))
    new = {k: b for (k, _), b in zip(todo, made) if b is not None}
    cache.append(pa.table({"cache_key": list(new), "webp": list(new.values())}, schema=CACHE_SCHEMA))
    cache.compact()
    cached_before = set(found)
    found.update(new)
    rows = [(i, found[k]) for i, _, k, _ in wanted if k in found]
    table = pa.table({"item_id": [i for i, _ in rows], "webp": [b for _, b in rows]}, schema=SCHEMA)
    counts = {"made": sum(k in new for _, _, k, _ in wanted), "from_cache": sum(k in cached_before for _, _, k, _ in wanted)}
    return table, {**counts, "unreadable": len(wanted) - counts["made"] - counts["from_cache"]}  # items, each counted once
