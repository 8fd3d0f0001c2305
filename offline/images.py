"""Image bytes: fetch from a path or URI, hash, decode. Failures become reasons, not crashes.

Every failure while reading or decoding one image (whatever Pillow raises) becomes a
``BadImage`` whose message is that item's skip reason. Only the formats a product catalog
uses are opened (a DDS or SPIDER file named ``.jpg`` is refused, not parsed); images above
``MAX_PIXELS`` are refused from their header, before any pixel is decoded; remote reads have
a timeout and a byte cap.
"""

from __future__ import annotations

import hashlib
import io
import time
import warnings
from dataclasses import dataclass

import fsspec
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
MAX_PIXELS = 40_000_000  # 8000 x 5000; a product photo is far smaller
DEEP_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # greyscale of more than 8 bits a pixel
MAX_BYTES = 50 * 1024 * 1024
REMOTE_TIMEOUT_S = 20.0
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})  # an image URL's answers worth a second try
HTTP_TRIES, HTTP_BACKOFF_S = 3, 0.5
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class BadImage(Exception):
    """An image that cannot be used; str(exc) is the reason recorded in the run."""


@dataclass(frozen=True)
class LoadedImage:
    sha256: str
    image: Image.Image


class _Transient(BadImage):
    """A failure a second try may not meet (a CDN's 503, a connection reset mid-image)."""


def _read_http(uri: str) -> bytes:
    """The image at an http(s) URL; a transient failure (``RETRY_STATUS``, a connection
    dropped mid-image) is tried again ``HTTP_TRIES`` times in all, with a backoff: one CDN
    error left a grounded item ungrounded (its hash, hence its cached grounding, unknown)."""
    for attempt in range(HTTP_TRIES):
        try:
            return _get_http(uri)
        except _Transient as e:
            if attempt == HTTP_TRIES - 1:
                raise BadImage(f"{e} (tried {HTTP_TRIES} times)") from None
            time.sleep(HTTP_BACKOFF_S * 2 ** attempt)
    raise AssertionError("unreachable")


def _get_http(uri: str) -> bytes:
    import httpx

    try:
        with httpx.stream("GET", uri, timeout=REMOTE_TIMEOUT_S, follow_redirects=True) as r:
            if r.status_code == 404:
                raise BadImage(f"image not found (HTTP 404): {uri}")
            if r.status_code in RETRY_STATUS:
                raise _Transient(f"cannot read image: {uri}: HTTP {r.status_code}")
            if r.status_code >= 400:
                raise BadImage(f"cannot read image: {uri}: HTTP {r.status_code}")
            chunks, size = [], 0
            deadline = time.monotonic() + REMOTE_TIMEOUT_S  # httpx's timeout bounds each read, not the whole
            for chunk in r.iter_bytes():
                if time.monotonic() > deadline:  # a server trickling bytes would hold the stage for hours
                    raise httpx.ReadTimeout("the whole image took longer")
                size += len(chunk)
                if size > MAX_BYTES:
                    raise BadImage(f"image larger than {MAX_BYTES} bytes: {uri}")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.ConnectError as e:
        raise BadImage(f"cannot connect to the image's host (refused or unreachable): {uri}: {e}") from None
    except httpx.TimeoutException:
        raise BadImage(f"timed out after {REMOTE_TIMEOUT_S:g} s reading image: {uri}") from None
    except (httpx.ReadError, httpx.RemoteProtocolError) as e:  # dropped mid-answer: a reset, a closed connection
        raise _Transient(f"cannot read image: {uri}: {type(e).__name__}: {e}") from None
    except httpx.HTTPError as e:
        raise BadImage(f"cannot read image: {uri}: {type(e).__name__}: {e}") from None
    except BadImage:
        raise
    except Exception as e:  # not a URL httpx can send (a bad port, an unclosed [, a control character)
        raise BadImage(f"not a valid image URL: {uri!r}: {type(e).__name__}: {e}") from None


def read_bytes(uri: str | None) -> bytes:
    if uri is None:
        raise BadImage("no image given")
    if uri.startswith(("http://", "https://")):
        data = _read_http(uri)
    else:
        try:
            with fsspec.open(uri, "rb") as f:
                data = f.read(MAX_BYTES + 1)
        except FileNotFoundError:
            raise BadImage(f"image file not found: {uri}") from None
        except Exception as e:  # permissions, unknown protocol, a directory, object-store errors
            raise BadImage(f"cannot read image: {uri}: {type(e).__name__}: {e}") from None
        if len(data) > MAX_BYTES:
            raise BadImage(f"image larger than {MAX_BYTES} bytes: {uri}")
    if not data:
        raise BadImage(f"image file is empty: {uri}")
    return data


def _open(data: bytes, uri: str) -> Image.Image:
    """Open (header only) with the allowed formats, refusing oversized images."""
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise BadImage(f"not an image (unrecognised or unsupported format): {uri} "
                       f"(opened formats: {', '.join(FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(f"image too large (more than {MAX_PIXELS} pixels): {uri}: {e}") from None
    if img.width * img.height > MAX_PIXELS:
        raise BadImage(f"image too large: {img.width}x{img.height} pixels, more than {MAX_PIXELS}: {uri}")
    return img


def identify(data: bytes, uri: str = "") -> str:
    """The image format from the header alone (no pixel decode): rejects what is not an image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open(data, uri) as img:
                return img.format or "unknown"
    except BadImage:
        raise
    except Exception as e:  # whatever a malformed header makes a plugin raise
        raise BadImage(f"corrupt or truncated image: {uri}: {type(e).__name__}: {e}") from None


def decode(data: bytes, uri: str = "", at_most: int | None = None) -> Image.Image:
    """The image as RGB (``BadImage`` when it cannot be). ``at_most``: a JPEG may be decoded at
    a reduced scale that still covers that many pixels on each side (much faster)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = _open(data, uri)
            if at_most:
                img.draft("RGB", (at_most, at_most))
            img.load()  # forces a full decode: truncated files fail here, not later
            return as_rgb(img)
    except BadImage:
        raise
    except Exception as e:  # OSError, SyntaxError, ValueError, plugin bugs (NotImplementedError...)
        raise BadImage(f"corrupt or truncated image: {uri}: {type(e).__name__}: {e}") from None


def as_rgb(img: Image.Image) -> Image.Image:
    """A decoded image as the VLM and the thumbnails should see it, in RGB: turned upright by
    its EXIF orientation (a phone photo stored sideways), 16- and 32-bit greyscale scaled to 8
    bits (a plain conversion clips them: a 16-bit PNG became white) and a transparent
    background laid on white (a plain conversion makes it black: "a black top")."""
    img = ImageOps.exif_transpose(img)
    if img.mode in DEEP_GREY:
        values = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16") or values.max(initial=0.0) > 255:  # 16 bits by the mode, else by the values
            values = values / 257.0  # 16-bit range to 8 (a dark 16-bit image stays dark)
        img = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:  # a tRNS colour key too
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img.convert("RGB")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load(uri: str | None) -> LoadedImage:
    data = read_bytes(uri)
    return LoadedImage(sha256=sha256(data), image=decode(data, uri or ""))
