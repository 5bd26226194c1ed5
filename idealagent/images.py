"""Turning what the user gave (a path, a URL, a PIL image) into an RGB PIL image.

Every problem with an image is one ``ImageError`` line naming it, whatever the decoder raised:
a batch then fails that sample alone and goes on.

What comes out is always RGB, upright and bounded in size:

- EXIF orientation is applied, so a phone photo reaches the model the right way up;
- transparency is composited on white; CMYK, 16-bit, grey, bilevel and palette images are
  converted (16-bit values are scaled down, not clipped); an animation gives its first frame;
- an image of more than ``MAX_PIXELS`` pixels is downscaled to about that many at load (JPEGs
  are decoded at a reduced scale already, so a large photo never exists at full size);
- an image that would need more than ``MAX_DECODED_PIXELS`` pixels decoded at once is refused
  (Pillow refuses more than twice its ``MAX_IMAGE_PIXELS`` even earlier, at open).

URLs: http and https only; at most ``MAX_REDIRECTS`` redirects, each to http(s) again; one
deadline of ``URL_DEADLINE_S`` seconds for the whole download (connection, redirects and every
byte); at most ``MAX_DOWNLOAD_BYTES``, checked while the body streams in. Tests shrink these.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from idealagent.errors import ImageError, one_line

log = logging.getLogger(__name__)

MAX_PIXELS = 4096 * 4096  # larger images are downscaled to about this many pixels at load
MAX_DECODED_PIXELS = 8192 * 8192  # the most pixels decoded at once (after JPEG's reduced decoding)
URL_DEADLINE_S = 20.0  # for a whole download: connecting, redirects and reading the body
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
MAX_REDIRECTS = 5
DOWNLOAD_CHUNK = 64 * 1024
URL_SCHEMES = ("http", "https")

# EXIF orientation -> the transpose that makes the picture upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def is_url(ref: str) -> bool:
    """Whether ``ref`` is an http(s) URL rather than a path."""
    return ref.startswith(("http://", "https://"))


def load_image(ref: Any, *, max_pixels: int | None = None) -> Image.Image:
    """Decode ``ref`` into an upright RGB image of at most about ``max_pixels`` (``MAX_PIXELS``)
    pixels, or raise ImageError with a one-line reason. (The full-resolution views of
    ``idealagent.looking`` ask for up to ``MAX_DECODED_PIXELS``.)"""
    if isinstance(ref, Image.Image):
        try:
            return _normalise(ref, reduce_at_decode=False, limit=max_pixels)
        except ImageError as exc:
            raise ImageError(f"in-memory image: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - a lazily opened image can still fail to decode here
            raise ImageError(f"in-memory image: {_decode_problem(exc)}") from exc
    if isinstance(ref, Path):
        ref = str(ref)
    if not isinstance(ref, str) or not ref.strip():
        raise ImageError("no image given: pass a file path, an http(s) URL or a PIL image")
    scheme = _SCHEME.match(ref)
    if scheme and scheme.group(1).lower() not in URL_SCHEMES:
        raise ImageError(f"{ref}: unsupported URL scheme {scheme.group(1)!r}; use http(s) or a file path")
    data = _fetch(ref) if scheme else _read(ref)
    if not data:
        raise ImageError(f"{ref}: empty (0 bytes), not an image")
    try:
        with warnings.catch_warnings():
            # Pillow warns (once per process) between its two size limits; ours decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return _normalise(image, reduce_at_decode=True, limit=max_pixels)
    except ImageError as exc:
        raise ImageError(f"{ref}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this image's problem only
        raise ImageError(f"{ref}: {_decode_problem(exc, data)}") from exc


def upright_size(ref: Any) -> tuple[int, int] | None:
    """The (width, height) ``ref`` has upright at full resolution, read from the file's header
    without decoding it; None for a URL or anything unreadable (what ``load_image`` gave is then
    all there is)."""
    if isinstance(ref, Image.Image):
        width, height = ref.size
        return (height, width) if _orientation(ref) in (5, 6, 7, 8) else (width, height)
    if not isinstance(ref, (str, Path)) or (isinstance(ref, str) and _SCHEME.match(ref)):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(Path(ref).expanduser()) as image:
                width, height = image.size
                return (height, width) if _orientation(image) in (5, 6, 7, 8) else (width, height)
    except Exception as exc:  # noqa: BLE001 - load_image reports what is wrong with the file
        log.debug("no size for %s: %s", ref, exc)
        return None


def _decode_problem(exc: Exception, data: bytes = b"") -> str:
    """What went wrong decoding, in words (the decoders' own messages are often all we have)."""
    if isinstance(exc, Image.DecompressionBombError):
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(pixels.group(1)) / 1e6:.0f} megapixels" if pixels else "too many pixels"
        return f"refused, a possible decompression bomb ({size})"
    if isinstance(exc, UnidentifiedImageError):
        return f"not a readable image ({_what_it_is(data)})"
    detail = one_line(exc, 160)
    return f"not a readable image ({type(exc).__name__}{': ' + detail if detail else ''})"


# Signatures of the common formats, to tell a damaged image from something else entirely.
_SIGNATURES = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"RIFF": "WebP", b"BM": "BMP",
               b"II*\0": "TIFF", b"MM\0*": "TIFF"}


def _what_it_is(data: bytes) -> str:
    """A guess at what bytes Pillow could not identify are: a damaged image, a web page, text."""
    kind = next((name for magic, name in _SIGNATURES.items() if data.startswith(magic)), None)
    if kind:
        return f"damaged or unsupported {kind} data"
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "an HTML page"
    printable = sum(32 <= byte < 127 or byte in b"\t\n\r" for byte in head)
    return "text" if head and printable > 0.95 * len(head) else "an unknown format"


def encode_image(image: Image.Image, image_format: Literal["jpeg", "png"] = "jpeg", quality: int = 90) -> str:
    """A ``data:image/...;base64,`` URI of ``image`` (RGB; PNG is lossless, JPEG smaller): how
    an image travels to a model server, and in a chat message's image block."""
    buffer = io.BytesIO()
    rgb = image.convert("RGB")
    if image_format == "png":
        rgb.save(buffer, format="PNG")
    else:
        rgb.save(buffer, format="JPEG", quality=quality)
    return f"data:image/{image_format};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def decode_base64_image(data: str) -> Image.Image:
    """The RGB image in base64 ``data`` (an image block's bytes, or a ``data:`` URI)."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        with Image.open(io.BytesIO(base64.b64decode(data))) as image:
            return image.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this image's problem only
        raise ImageError(f"an image block that is not an image: {_decode_problem(exc)}") from exc


def _normalise(image: Image.Image, *, reduce_at_decode: bool, limit: int | None = None) -> Image.Image:
    """Decode ``image`` (frame 0) within the pixel limits (``limit``, else ``MAX_PIXELS``, after
    resizing), upright, in RGB."""
    target = _fit(image.size, min(limit or MAX_PIXELS, MAX_DECODED_PIXELS))
    if reduce_at_decode and target != image.size:
        image.draft(None, target)  # JPEG decodes at 1/2, 1/4 or 1/8 scale; other formats ignore it
    width, height = image.size
    if width * height > MAX_DECODED_PIXELS:
        raise ImageError(f"too large to decode ({width}x{height} = {width * height / 1e6:.0f} megapixels; "
                         f"the limit is {MAX_DECODED_PIXELS / 1e6:.0f})")
    image.load()
    orientation = _orientation(image)
    # Into a mode that resizes well first, then down to size, then to RGB: the costly steps
    # (compositing, conversions) run on the small image.
    small = _resizable(image)
    if small.size != target:
        small = small.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    rgb = _flatten(small)
    if orientation in _UPRIGHT:
        rgb = rgb.transpose(_UPRIGHT[orientation])
    rgb.info.pop("exif", None)  # the pixels are upright now: never turn them twice
    return rgb


def _fit(size: tuple[int, int], limit: int) -> tuple[int, int]:
    """``size`` scaled down, keeping its aspect ratio, to at most ``limit`` pixels."""
    width, height = size
    if width * height <= limit:
        return size
    scale = math.sqrt(limit / (width * height))
    return max(1, int(width * scale)), max(1, int(height * scale))


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception as exc:  # noqa: BLE001 - broken EXIF leaves the picture as stored, not unreadable
        log.debug("ignoring unreadable EXIF: %s", exc)
        return 1


def _resizable(image: Image.Image) -> Image.Image:
    """``image`` in a mode Pillow resizes smoothly: palette, bilevel and colour-keyed images
    become RGB(A); 16-bit and float ones 8-bit grey, scaled rather than clipped."""
    mode = image.mode
    if "transparency" in image.info or mode == "PA":
        return image.convert("RGBA")
    if mode in ("1", "P"):
        return image.convert("RGB")
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image).astype(np.float32)
        top = float(values.max()) if values.size else 0.0
        if mode == "F" and top <= 1.0:
            values *= 255.0  # float images are usually in [0, 1]
        elif mode.startswith("I;16") or top > 255:
            values /= 257.0  # 16-bit: 65535 -> 255 (Pillow's own convert would clip at 255)
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    return image


def _flatten(image: Image.Image) -> Image.Image:
    """RGB, with any alpha composited on white (what a transparent area looks like on a page)."""
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image.convert("RGB")


# -- bytes from a file or a URL ----------------------------------------------------------------


def _read(path: str) -> bytes:
    p = Path(path).expanduser()
    if not p.exists():
        raise ImageError(f"{path}: no such file")
    if p.is_dir():
        raise ImageError(f"{path}: is a directory, not an image")
    try:
        size = p.stat().st_size
        if size > MAX_DOWNLOAD_BYTES:
            raise ImageError(f"{path}: larger than {MAX_DOWNLOAD_BYTES / 2**20:g} MiB")
        return p.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from exc


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Hands 3xx answers back as errors, so that _fetch follows (and checks) each hop itself."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def _fetch(url: str) -> bytes:
    """The body at ``url``, within the redirect, time and size limits; else a one-line ImageError."""
    deadline = time.monotonic() + URL_DEADLINE_S
    current = url
    try:
        for _ in range(MAX_REDIRECTS + 1):
            location = _get(current, deadline)
            if isinstance(location, bytes):
                return location
            current = urllib.parse.urljoin(current, location)
            scheme = urllib.parse.urlsplit(current).scheme.lower()
            if scheme not in URL_SCHEMES:
                raise ImageError(f"{url}: redirected to an unsupported URL scheme {scheme!r} ({current})")
    except TimeoutError as exc:
        raise ImageError(f"{url}: took longer than {URL_DEADLINE_S:g} s to download") from exc
    raise ImageError(f"{url}: more than {MAX_REDIRECTS} redirects (a redirect loop?)")


def _get(url: str, deadline: float) -> bytes | str:
    """One request: the body, or a redirect's Location."""
    request = urllib.request.Request(url, headers={"User-Agent": "idealagent"})
    try:
        response = _OPENER.open(request, timeout=_remaining(deadline))
    except urllib.error.HTTPError as exc:
        location = exc.headers.get("Location") if exc.headers else None
        if getattr(exc, "fp", None) is not None:
            exc.close()  # its body is not needed: free the connection
        if 300 <= exc.code < 400 and location:
            return location
        raise ImageError(f"{url}: HTTP {exc.code} {' '.join(str(exc.reason).split())}") from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise exc.reason from exc
        raise ImageError(f"{url}: unreachable ({' '.join(str(exc.reason).split())})") from exc
    except OSError as exc:
        if isinstance(exc, TimeoutError):
            raise
        raise ImageError(f"{url}: unreachable ({exc})") from exc
    with response:
        return _read_body(url, response, deadline)


def _read_body(url: str, response: Any, deadline: float) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > MAX_DOWNLOAD_BYTES:
        raise ImageError(f"{url}: larger than {MAX_DOWNLOAD_BYTES / 2**20:g} MiB ({int(declared)} bytes)")
    # The socket's timeout bounds one read; setting it to what is left before each read makes
    # the deadline hold for the whole body, even against a server that sends a byte at a time.
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    chunks, size = [], 0
    try:
        while True:
            remaining = _remaining(deadline)
            if sock is not None:
                sock.settimeout(remaining)
            chunk = response.read1(DOWNLOAD_CHUNK)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > MAX_DOWNLOAD_BYTES:
                raise ImageError(f"{url}: larger than {MAX_DOWNLOAD_BYTES / 2**20:g} MiB")
            chunks.append(chunk)
    except (TimeoutError, ImageError):
        raise
    except Exception as exc:  # noqa: BLE001 - a dropped connection, http.client's IncompleteRead...
        raise ImageError(f"{url}: download failed ({type(exc).__name__})") from exc


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("download deadline passed")
    return left
