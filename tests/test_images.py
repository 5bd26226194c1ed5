"""Loading images from paths, URLs and PIL objects, and the one-line errors for bad ones."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest
from PIL import Image

from idealagent.errors import ImageError
from idealagent.examples import example_image
from idealagent.images import load_image


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
