"""Turning what the user gave (a path, a URL, a PIL image) into an RGB PIL image."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from idealagent.errors import ImageError

URL_TIMEOUT_S = 20.0
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024


def is_url(ref: str) -> bool:
    """Whether ``ref`` is an http(s) URL rather than a path."""
    return ref.startswith(("http://", "https://"))


def load_image(ref: Any) -> Image.Image:
    """Decode ``ref`` into an RGB image, or raise ImageError with a one-line reason."""
    if isinstance(ref, Image.Image):
        return ref.convert("RGB")
    if isinstance(ref, Path):
        ref = str(ref)
    if not isinstance(ref, str) or not ref.strip():
        raise ImageError("no image given: pass a file path, an http(s) URL or a PIL image")
    data = _fetch(ref) if is_url(ref) else _read(ref)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{ref}: not a readable image ({type(exc).__name__})") from exc


def _read(path: str) -> bytes:
    p = Path(path).expanduser()
    if not p.exists():
        raise ImageError(f"{path}: no such file")
    if p.is_dir():
        raise ImageError(f"{path}: is a directory, not an image")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def _fetch(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "idealagent"})
    try:
        with urllib.request.urlopen(request, timeout=URL_TIMEOUT_S) as response:
            data = response.read(MAX_DOWNLOAD_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise ImageError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ImageError(f"{url}: unreachable ({reason})") from exc
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise ImageError(f"{url}: larger than {MAX_DOWNLOAD_BYTES // 2**20} MiB")
    return data
