"""offline/thumbnails.py: a WebP per readable image, longest side at most max_side and the
picture's proportions kept; cached by image content, so a re-run decodes nothing; an unreadable
image gets none and is counted."""

from __future__ import annotations

import hashlib
import io

import pyarrow as pa
from PIL import Image

from groundrec.offline.thumbnails import make_thumbnails, thumbnail


def _image(path, size=(400, 240), colour=(200, 30, 40)) -> str:
    im = Image.new("RGB", size, colour)
    im.paste((20, 20, 220), (0, 0, size[0] // 2, size[1]))  # left half blue: orientation survives
    im.save(path, "JPEG", quality=95)
    return str(path)


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_a_thumbnail_is_a_smaller_webp_of_the_same_picture(tmp_path):
    data = thumbnail(_image(tmp_path / "wide.jpg"), max_side=100, quality=75)
    im = Image.open(io.BytesIO(data))
    assert im.format == "WEBP" and im.size == (100, 60)
    left, right = im.convert("RGB").getpixel((10, 30)), im.convert("RGB").getpixel((90, 30))
    assert left[2] > 150 > left[0] and right[0] > 150 > right[2]
    tall = Image.open(io.BytesIO(thumbnail(_image(tmp_path / "tall.jpg", (120, 300)), 100, 75)))
    assert tall.size == (40, 100)
    small = Image.open(io.BytesIO(thumbnail(_image(tmp_path / "small.jpg", (50, 30)), 100, 75)))
    assert small.size == (50, 30)  # never enlarged


def test_unreadable_images_give_none(tmp_path):
    (tmp_path / "text.jpg").write_bytes(b"not an image")
    assert thumbnail(str(tmp_path / "text.jpg"), 100, 75) is None
    assert thumbnail(str(tmp_path / "missing.jpg"), 100, 75) is None


def test_make_thumbnails_counts_and_caches(tmp_path):
    a, b = _image(tmp_path / "a.jpg"), _image(tmp_path / "b.jpg", colour=(0, 200, 0))
    (tmp_path / "bad.jpg").write_bytes(b"truncated")
    groundings = pa.table({
        "item_id": ["a", "b", "bad", "never-read"],
        "image_sha256": [_sha(a), _sha(b), _sha(tmp_path / "bad.jpg"), None],  # None: failed in the ground stage
        "image_uri": [a, b, str(tmp_path / "bad.jpg"), str(tmp_path / "nope.jpg")],
    })
    table, counts = make_thumbnails(groundings, "item_id", tmp_path / "cache", max_side=64)
    assert counts == {"made": 2, "from_cache": 0, "unreadable": 1}
    assert table.column("item_id").to_pylist() == ["a", "b"]
    assert all(Image.open(io.BytesIO(w)).format == "WEBP" for w in table.column("webp").to_pylist())
    # A re-run reads the cache: the image files can be gone.
    (tmp_path / "a.jpg").unlink()
    (tmp_path / "b.jpg").unlink()
    again, counts = make_thumbnails(groundings, "item_id", tmp_path / "cache", max_side=64)
    assert counts == {"made": 0, "from_cache": 2, "unreadable": 1} and again.equals(table)
    # Other settings are other cache entries.
    _, counts = make_thumbnails(groundings, "item_id", tmp_path / "cache", max_side=32)
    assert counts["from_cache"] == 0 and counts["unreadable"] == 3


def test_items_sharing_one_image_are_each_counted_made_and_it_is_made_once(tmp_path, monkeypatch):
    """Three items with one image counted two as unreadable (the manifest's
    thumbnails_unreadable), and the image was decoded and encoded once per item."""
    from groundrec.offline import thumbnails

    shared = _image(tmp_path / "shared.jpg")
    calls = []
    real = thumbnails.thumbnail
    monkeypatch.setattr(thumbnails, "thumbnail", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    groundings = pa.table({"item_id": ["a", "b", "c"], "image_sha256": [_sha(shared)] * 3, "image_uri": [shared] * 3})
    table, counts = make_thumbnails(groundings, "item_id", tmp_path / "cache", max_side=64)
    assert counts == {"made": 3, "from_cache": 0, "unreadable": 0} and len(calls) == 1
    assert table.column("item_id").to_pylist() == ["a", "b", "c"] and len(set(table.column("webp").to_pylist())) == 1


def test_an_image_changed_since_the_ground_stage_hashed_it_gets_no_thumbnail(tmp_path):
    """The thumbnail was made from the file as it is now and cached under the old image's
    hash: the version showed a picture other than the one grounded, and so did every later
    version whose image had the old hash."""
    a = _image(tmp_path / "a.jpg")
    grounded = _sha(a)
    _image(tmp_path / "a.jpg", colour=(0, 0, 0))  # replaced while the job ran
    groundings = pa.table({"item_id": ["a"], "image_sha256": [grounded], "image_uri": [a]})
    table, counts = make_thumbnails(groundings, "item_id", tmp_path / "cache", max_side=64)
    assert table.num_rows == 0 and counts == {"made": 0, "from_cache": 0, "unreadable": 1}
