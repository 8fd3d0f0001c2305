import hashlib

import pytest

from helpers import jpeg_bytes
from groundrec.offline import images


def test_good_image_is_hashed_and_decoded(tmp_path):
    data = jpeg_bytes(size=(30, 40))
    p = tmp_path / "a.jpg"
    p.write_bytes(data)
    loaded = images.load(str(p))
    assert loaded.sha256 == hashlib.sha256(data).hexdigest()
    assert loaded.image.size == (30, 40) and loaded.image.mode == "RGB"


@pytest.mark.parametrize("content,reason", [
    (None, "not found"),
    (b"", "empty"),
    (b"GIF89a but not really an image", "not an image"),
    ("truncated", "corrupt or truncated"),
])
def test_bad_images_give_reasons(tmp_path, content, reason):
    p = tmp_path / "x.jpg"
    if content == "truncated":
        full = jpeg_bytes(size=(200, 200))
        p.write_bytes(full[: len(full) // 2])
    elif content is not None:
        p.write_bytes(content)
    with pytest.raises(images.BadImage, match=reason):
        images.load(str(p))


def test_no_image_given():
    with pytest.raises(images.BadImage, match="no image"):
        images.load(None)
