"""Loading images from paths, URLs and PIL objects, and the one-line errors for bad ones."""

from __future__ import annotations

import functools
import http.server
import threading
import time
import warnings
from pathlib import Path

import pytest
from PIL import Image

from idealagent import images
from idealagent.errors import ImageError
from idealagent.examples import example_image
from idealagent.images import load_image
from tests.image_files import ORIENTATION, VALID_SIZES, broken_images, png_header, valid_images
from tests.image_server import ImageServer, closed_port_url


@pytest.fixture(scope="module")
def server():
    """A local HTTP server over the example photos (127.0.0.1 only)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(example_image("cat").parent))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_path_url_and_pil_give_the_same_pixels(server):
    from_path = load_image(example_image("cat"))
    from_url = load_image(f"{server}/cat.jpg")
    assert from_path.mode == "RGB" and from_path.size == from_url.size
    assert from_path.tobytes() == from_url.tobytes()
    assert load_image(Image.new("L", (4, 4))).mode == "RGB"


def test_bad_urls_are_one_line_image_errors(server):
    with pytest.raises(ImageError, match="HTTP 404"):
        load_image(f"{server}/nope.jpg")
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(f"{server}/CREDITS.md")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.png", "no such file"),
        (lambda d: d, "is a directory"),
        (lambda d: (d / "notes.jpg").write_text("hello") and d / "notes.jpg", "not a readable image"),
        (lambda d: (d / "cut.jpg").write_bytes(example_image("cat").read_bytes()[:300]) and d / "cut.jpg", "not a readable image"),
    ],
    ids=["missing", "directory", "text", "truncated"],
)
def test_bad_files_are_one_line_image_errors(tmp_path, make, message):
    with pytest.raises(ImageError, match=message) as error:
        load_image(str(make(tmp_path)))
    assert "\n" not in str(error.value)


def test_nothing_is_not_an_image():
    with pytest.raises(ImageError, match="no image given"):
        load_image(None)


# -- unusual but valid images ------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return valid_images(tmp_path_factory.mktemp("valid"))


@pytest.mark.parametrize("name", sorted(VALID_SIZES))
def test_unusual_images_load_as_rgb_of_the_right_size(valid: dict[str, Path], name: str) -> None:
    image = load_image(valid[name])
    assert image.mode == "RGB" and image.size == VALID_SIZES[name]


def test_exif_orientation_is_applied(valid: dict[str, Path]) -> None:
    with Image.open(valid["rotated.jpg"]) as stored:
        assert stored.size == (40, 30) and stored.getexif()[ORIENTATION] == 6
    upright = load_image(valid["rotated.jpg"])
    assert upright.size == (30, 40)
    assert load_image(upright).size == (30, 40)  # loading the result again turns nothing twice


def test_pixels_come_out_as_they_look(valid: dict[str, Path]) -> None:
    def pixel(name: str, xy: tuple[int, int]) -> tuple[int, ...]:
        return load_image(valid[name]).getpixel(xy)

    assert pixel("cmyk.jpg", (20, 15))[0] > 200 > 60 > max(pixel("cmyk.jpg", (20, 15))[1:])  # red
    assert pixel("rgba.png", (5, 5)) == (255, 255, 255)  # transparent: white, not the black underneath
    assert pixel("rgba.png", (35, 5)) == (255, 0, 0)
    assert pixel("grey_alpha.png", (5, 5)) == (255, 255, 255)
    assert pixel("palette_transparent.png", (5, 5)) == (255, 255, 255)
    assert pixel("palette.gif", (5, 5)) == (255, 0, 0)  # the first frame (the second is blue)
    # 16-bit values are scaled to 8 bits, not clipped: a 0..65535 ramp stays a ramp
    ramp = [pixel("sixteen_bit.png", (x, 0))[0] for x in range(40)]
    assert ramp == sorted(ramp) and ramp[0] == 0 and ramp[-1] == 255 and 100 < ramp[20] < 155


@pytest.mark.parametrize(
    ("mode", "suffix", "colour"),
    [("RGB", "png", (255, 0, 0)), ("RGBA", "png", (255, 0, 0, 255)), ("LA", "png", (0, 0)),
     ("I;16", "png", 65535), ("P", "gif", 1), ("CMYK", "jpg", (0, 255, 255, 0)), ("L", "webp", 0)],
)
def test_large_images_are_downscaled_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str,
                                             suffix: str, colour) -> None:
    monkeypatch.setattr(images, "MAX_PIXELS", 2500)
    path = tmp_path / f"wide.{suffix}"
    Image.new(mode, (400, 100), colour).save(path)
    wide = load_image(path)
    assert wide.mode == "RGB" and wide.size == (100, 25)  # 2500 pixels, the aspect kept
    assert load_image(Image.new(mode, (400, 100), colour)).size == wide.size  # in-memory images too


def test_jpegs_are_decoded_at_reduced_scale_and_the_rest_refused_beyond_the_decode_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images, "MAX_PIXELS", 2500)
    monkeypatch.setattr(images, "MAX_DECODED_PIXELS", 10_000)  # 200x200 = 40,000 is over
    Image.new("RGB", (200, 200), "blue").save(tmp_path / "big.jpg")
    Image.new("RGB", (200, 200), "blue").save(tmp_path / "big.png")
    assert load_image(tmp_path / "big.jpg").size == (50, 50)  # libjpeg decoded it at 1/4 scale
    with pytest.raises(ImageError, match=r"big.png: too large to decode \(200x200") as error:
        load_image(tmp_path / "big.png")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("empty.png", "empty"),
        ("truncated.png", "truncated"),
        ("text.jpg", r"not a readable image \(text\)"),
        ("page.png", "HTML page"),
        ("bad_crc.png", "damaged or unsupported PNG"),
        ("bomb.png", "decompression bomb .400 megapixels"),
        ("a_folder.png", "is a directory"),
        ("missing.png", "no such file"),
    ],
)
def test_each_broken_file_is_one_line_naming_its_problem(tmp_path: Path, name: str, message: str) -> None:
    path = broken_images(tmp_path)[name]
    with pytest.raises(ImageError, match=message) as error:
        load_image(path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_any_decoder_exception_is_an_image_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")

    def explode(self: Image.Image) -> None:
        raise RuntimeError("the decoder fell over")

    monkeypatch.setattr(Image.Image, "load", explode)
    expected = r"ok.png: not a readable image \(RuntimeError: the decoder fell over\)"
    with pytest.raises(ImageError, match=expected):
        load_image(tmp_path / "ok.png")


def test_a_bomb_between_pillows_two_limits_is_refused_without_a_warning(tmp_path: Path) -> None:
    (tmp_path / "big.png").write_bytes(png_header(10_000, 10_000))  # 100 MP: Pillow only warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError, match="too large to decode"):
            load_image(tmp_path / "big.png")


# -- URLs --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def misbehaving(valid: dict[str, Path]):
    folder = valid["rotated.jpg"].parent
    with ImageServer(folder) as server:
        yield server


@pytest.mark.parametrize("ref", ["ftp://127.0.0.1/cat.jpg", "file:///etc/hosts", "FILE:///etc/hosts",
                                 "gopher://127.0.0.1/x"])
def test_only_http_and_https_urls_are_fetched(ref: str) -> None:
    with pytest.raises(ImageError, match="unsupported URL scheme") as error:
        load_image(ref)
    assert "no such file" not in str(error.value)


def test_a_few_redirects_are_followed(misbehaving: ImageServer) -> None:
    assert load_image(misbehaving.url(f"redirect/{images.MAX_REDIRECTS}/rotated.jpg")).size == (30, 40)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("to-ftp", "redirected to an unsupported URL scheme 'ftp'"),
        ("to-file", "redirected to an unsupported URL scheme 'file'"),
        ("loop", "more than 5 redirects"),
        ("redirect/6/rotated.jpg", "more than 5 redirects"),
        ("nope.jpg", "HTTP 404"),
    ],
)
def test_bad_redirects_and_missing_pages_are_one_line(misbehaving: ImageServer, path: str,
                                                      message: str) -> None:
    with pytest.raises(ImageError, match=message) as error:
        load_image(misbehaving.url(path))
    assert "\n" not in str(error.value)


def test_one_deadline_covers_the_whole_download(misbehaving: ImageServer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "URL_DEADLINE_S", 0.5)
    start = time.monotonic()
    with pytest.raises(ImageError, match=r"drip: took longer than 0.5 s"):
        load_image(misbehaving.url("drip"))  # a byte every 50 ms: no single read ever times out
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize("path", ["big/5000", "big-unsized/5000"])
def test_the_size_cap_holds_with_and_without_a_content_length(misbehaving: ImageServer, path: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "MAX_DOWNLOAD_BYTES", 4096)
    monkeypatch.setattr(images, "DOWNLOAD_CHUNK", 1024)
    with pytest.raises(ImageError, match="larger than"):
        load_image(misbehaving.url(path))
    monkeypatch.setattr(images, "MAX_DOWNLOAD_BYTES", 5000)  # exactly at the cap is fine (and not an image)
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(misbehaving.url(path))


def test_a_closed_port_is_one_line() -> None:
    url = closed_port_url()
    with pytest.raises(ImageError, match="unreachable") as error:
        load_image(url)
    assert str(error.value).startswith(url) and "\n" not in str(error.value)
