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


def _encoded(fmt: str, size=(24, 16), mode="RGB") -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size, 128).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt,mode", [("DDS", "RGB"), ("SPIDER", "F")])
def test_formats_a_catalog_does_not_use_are_refused_not_parsed(tmp_path, fmt, mode):
    p = tmp_path / "crafted.jpg"  # the attack: Pillow opens these whatever the name says
    p.write_bytes(_encoded(fmt, mode=mode))
    with pytest.raises(images.BadImage, match="unsupported format"):
        images.identify(p.read_bytes(), str(p))
    with pytest.raises(images.BadImage, match="unsupported format"):
        images.load(str(p))


def test_a_huge_image_is_refused_from_its_header(tmp_path):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buf, format="PNG")  # ~100 KB on disk, 100 M pixels
    assert len(buf.getvalue()) < 200_000
    with pytest.raises(images.BadImage, match="too large"):
        images.identify(buf.getvalue(), "big.png")


def test_a_refused_connection_is_reported_as_such():
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(images.BadImage, match="cannot connect"):
        images.read_bytes(f"http://127.0.0.1:{port}/a.jpg")


def test_a_server_trickling_an_image_is_cut_at_the_timeout_for_the_whole_image(monkeypatch):
    """httpx's timeout bounds each read: a server sending a byte every 0.3 s would never hit it."""
    import socket
    import threading
    import time

    monkeypatch.setattr(images, "REMOTE_TIMEOUT_S", 1.0)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    stop = threading.Event()

    def trickle():
        conn, _ = server.accept()
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        while not stop.is_set():
            try:
                conn.sendall(b"x")
            except OSError:
                break
            time.sleep(0.3)
        conn.close()

    threading.Thread(target=trickle, daemon=True).start()
    started = time.monotonic()
    try:
        with pytest.raises(images.BadImage, match="timed out"):
            images.read_bytes(f"http://127.0.0.1:{server.getsockname()[1]}/slow.jpg")
        assert time.monotonic() - started < 3  # not the 30 s the 100 bytes take
    finally:
        stop.set()
        server.close()


SEEDS = {"jpeg": _encoded("JPEG", (40, 30)), "png": _encoded("PNG", (40, 30)), "gif": _encoded("GIF", (40, 30)),
         "webp": _encoded("WEBP", (40, 30)), "bmp": _encoded("BMP", (20, 10))}


def test_mutated_real_images_never_raise_anything_but_bad_image():
    """Fuzz: flipped bytes, cuts and splices of real encoded images go through the job's
    header check and decode; each either decodes or becomes a BadImage (a skip reason)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
    @given(st.sampled_from(sorted(SEEDS)), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
           st.integers(0, 10_000), st.binary(max_size=64))
    def check(name, flips, cut, splice):
        data = bytearray(SEEDS[name])
        for pos, value in flips:
            data[pos % len(data)] = value
        data = bytes(data[: max(1, cut % (len(data) + 1))]) + splice
        try:
            images.identify(data, "fuzz")
            img = images.decode(data, "fuzz")
        except images.BadImage:
            return
        assert img.mode == "RGB" and img.width * img.height <= images.MAX_PIXELS

    check()


def test_the_hash_stage_records_a_crafted_file_as_a_skip_reason(tmp_path):
    import numpy as np

    from groundrec.offline.ground import HashImages

    (tmp_path / "ok.jpg").write_bytes(_encoded("JPEG"))
    (tmp_path / "dds.jpg").write_bytes(_encoded("DDS"))
    out = HashImages()({"item_id": np.array(["ok", "dds"], dtype=object),
                        "image_uri": np.array([str(tmp_path / "ok.jpg"), str(tmp_path / "dds.jpg")], dtype=object)})
    assert out["image_error"][0] == "" and len(out["image_sha256"][0]) == 64
    assert "unsupported format" in out["image_error"][1] and out["image_sha256"][1] == ""


@pytest.mark.parametrize("uri", ["http://example.com:8o/x.jpg", "http://[::1/a.jpg", "https://exa mple.com/\x01.jpg"])
def test_a_malformed_image_url_is_a_bad_image_not_a_crash(uri):
    """httpx refuses such URLs with InvalidURL (not an HTTPError): recorded as the item's skip."""
    with pytest.raises(images.BadImage, match="not a valid image URL"):
        images.read_bytes(uri)


def _png(img, **kw) -> bytes:
    import io

    out = io.BytesIO()
    img.save(out, "PNG", **kw)
    return out.getvalue()


def test_deep_greyscale_transparency_and_exif_orientation_are_decoded_as_a_person_sees_them():
    """A 16-bit greyscale PNG came out 99.6% white (clipped), a transparent background black
    (the VLM: "a black top"), and a phone photo tagged to be turned stayed sideways."""
    import io

    import numpy as np
    from PIL import Image

    ramp = Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16))  # 0 .. 65,520
    grey = np.asarray(images.decode(_png(ramp)))
    assert grey.shape == (64, 64, 3) and grey.min() == 0 and (grey == 255).mean() < 0.01 and 120 < grey.mean() < 135
    dark = Image.fromarray(np.full((8, 8), 200, np.uint16))  # nearly black in 16 bits: was read as 8-bit 200
    assert images.decode(_png(dark)).getpixel((0, 0)) == (1, 1, 1)
    cut_out = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    cut_out.putpixel((0, 0), (200, 10, 10, 255))
    flat = np.asarray(images.decode(_png(cut_out)))
    assert flat[5, 5].tolist() == [255, 255, 255] and flat[0, 0].tolist() == [200, 10, 10]
    assert images.decode(_png(Image.new("P", (4, 4)), transparency=0)).getpixel((1, 1)) == (255, 255, 255)
    keyed = Image.new("RGB", (4, 4), (0, 0, 0))  # an optimiser's cut-out: RGB with a transparent colour (tRNS)
    keyed.putpixel((0, 0), (200, 10, 10))
    keyed_rgb = images.decode(_png(keyed, transparency=(0, 0, 0)))
    assert keyed_rgb.getpixel((1, 1)) == (255, 255, 255) and keyed_rgb.getpixel((0, 0)) == (200, 10, 10)
    photo = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = photo.getexif()
    exif[0x0112] = 6  # stored sideways: turn 90 degrees to view
    data = io.BytesIO()
    photo.save(data, "JPEG", exif=exif)
    assert images.decode(data.getvalue()).size == (20, 40)


def test_a_transient_http_error_is_tried_again_and_a_lasting_one_recorded(monkeypatch):
    """One 503 from a CDN left an item ungrounded for a night (its hash, hence its cached
    grounding, unknown); a 503 on every try is recorded with how often it was tried."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    monkeypatch.setattr(images, "HTTP_BACKOFF_S", 0.01)
    body, asked = jpeg_bytes(), []

    class Flaky(BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            fail = self.path == "/always.jpg" or asked.count(self.path) == 1
            self.send_response(503 if fail else 200)
            self.send_header("Content-Length", "0" if fail else str(len(body)))
            self.end_headers()
            if not fail:
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert images.read_bytes(url + "/once.jpg") == body and asked.count("/once.jpg") == 2
        with pytest.raises(images.BadImage, match=r"HTTP 503 \(tried 3 times\)"):
            images.read_bytes(url + "/always.jpg")
        assert asked.count("/always.jpg") == 3
    finally:
        server.shutdown()
