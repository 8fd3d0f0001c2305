"""Image bytes: fetch from a path or URI, hash, decode. Failures become reasons, not crashes."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import fsspec
from PIL import Image, UnidentifiedImageError

Image.MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs with a reason


class BadImage(Exception):
    """An image that cannot be used; str(exc) is the reason recorded in the run."""


@dataclass(frozen=True)
class LoadedImage:
    sha256: str
    image: Image.Image


def read_bytes(uri: str | None) -> bytes:
    if uri is None:
        raise BadImage("no image given")
    try:
        with fsspec.open(uri, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise BadImage(f"image file not found: {uri}") from None
    except Exception as e:  # network, permissions, unknown protocol
        raise BadImage(f"cannot read image: {uri}: {type(e).__name__}: {e}") from None
    if not data:
        raise BadImage(f"image file is empty: {uri}")
    return data


def decode(data: bytes, uri: str = "") -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()  # forces a full decode: truncated files fail here, not later
        return img.convert("RGB")
    except UnidentifiedImageError:
        raise BadImage(f"not an image (unrecognised format): {uri}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImage(f"corrupt or truncated image: {uri}: {e}") from None


def identify(data: bytes, uri: str = "") -> str:
    """The image format from the header alone (no pixel decode): rejects what is not an image."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.format or "unknown"
    except UnidentifiedImageError:
        raise BadImage(f"not an image (unrecognised format): {uri}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImage(f"corrupt or truncated image: {uri}: {e}") from None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load(uri: str | None) -> LoadedImage:
    data = read_bytes(uri)
    return LoadedImage(sha256=sha256(data), image=decode(data, uri or ""))
