"""Seeing where the agent looked: a trace's search drawn on its picture.

``draw_looks`` draws the box of every look on a copy of the picture, numbered in the order the
answerer was asked about it, the best view (the one the main question was asked of) in a
colour of its own, and where a detector found the target (``Look.found``) in another.
``write_looks`` loads the picture a trace names, draws and saves it; ``check_looks_path``
refuses a file that could not be written before anything runs, and ``no_look_reason`` says
why a trace has no search to draw.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from idealagent.errors import InputError, one_line
from idealagent.images import load_image
from idealagent.looking.boxes import Box
from idealagent.looking.closer import DETAIL_FACTOR
from idealagent.trace import Search, Trace

LOOK_COLOUR = (255, 170, 0)  # amber: a view the answerer was asked about
BEST_COLOUR = (0, 200, 255)  # cyan: the best view, the one the main question was asked of
FAILED_COLOUR = (160, 160, 160)  # grey: a look the answerer failed on
FOUND_COLOUR = (255, 0, 200)  # magenta: where a detector found the target in a view (``detect`` looks)
LABEL_TEXT = (0, 0, 0)


def draw_looks(image: Image.Image, search: Search) -> Image.Image:
    """A copy of ``image`` with each look's box drawn (scaled from ``search.size`` to the image's
    size) and numbered from 1 at its upper left corner; the best view in ``BEST_COLOUR``."""
    drawn = image.convert("RGB")  # a copy, whatever the mode
    width, height = drawn.size
    factor_x, factor_y = width / search.size[0], height / search.size[1]
    line = max(2, round(max(width, height) / 300))
    pen = ImageDraw.Draw(drawn)

    def corners(box: list[int]) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = Box(*box).scaled(factor_x, factor_y)
        right, bottom = min(width, round(x1)) - 1, min(height, round(y1)) - 1
        left, top = max(0, round(x0)), max(0, round(y0))
        return left, top, max(left, right), max(top, bottom)

    best = tuple(search.best) if search.best else None
    colours = [FAILED_COLOUR if look.error else BEST_COLOUR if tuple(look.box) == best else LOOK_COLOUR
               for look in search.looks]
    for look, colour in zip(search.looks, colours):
        if colour != BEST_COLOUR:
            pen.rectangle(corners(look.box), outline=colour, width=line)
    for look in search.looks:
        if look.found and not look.error:
            pen.rectangle(corners(look.found), outline=FOUND_COLOUR, width=line)
    if best is not None:  # on top of the others
        pen.rectangle(corners(list(best)), outline=BEST_COLOUR, width=line)
    font = _font(max(12, 5 * line))
    shifted: dict[tuple[int, int], int] = {}  # how far along a corner the labels already there reach
    for number, (look, colour) in enumerate(zip(search.looks, colours), start=1):
        left, top, right, bottom = corners(look.box)
        text = str(number)
        x0, y0, x1, y1 = pen.textbbox((0, 0), text, font=font)
        label_w, label_h = x1 - x0 + 2 * line, y1 - y0 + 2 * line
        x = min(left + shifted.get((left, top), 0), max(0, width - label_w))
        y = min(top, max(0, height - label_h))
        pen.rectangle([x, y, x + label_w - 1, y + label_h - 1], fill=colour)
        pen.text((x + line - x0, y + line - y0), text, fill=LABEL_TEXT, font=font)
        shifted[(left, top)] = shifted.get((left, top), 0) + label_w
    return drawn


def _font(size: int) -> Any:
    """Pillow's own font at ``size`` pixels (its small bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1, or no FreeType
        return ImageFont.load_default()


def check_looks_path(path: Path, option: str = "--show-looks") -> None:
    """Raise InputError, naming ``option``, if ``path`` is no image file that can be written."""
    suffix = path.suffix.lower()
    if suffix not in Image.registered_extensions():
        raise InputError(f"{option} {path}: not an image file name; end it in .png or .jpg")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or path.is_dir():
        raise InputError(f"{option} {path}: cannot write there")


def write_looks(picture: Any, search: Search, path: Path, option: str = "--show-looks") -> Path:
    """Draw ``search`` on ``picture`` (a path, URL or image: loaded as ``load_image`` does) and save
    it to ``path``; ImageError if the picture cannot be read, InputError if ``path`` cannot be written."""
    drawn = draw_looks(load_image(picture), search)
    try:
        drawn.save(path)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else one_line(exc)
        raise InputError(f"{option} {path}: cannot write it ({reason})") from None
    return path


def no_look_reason(trace: Trace, picture_size: tuple[int, int] | None = None,
                   input_side: float | None = None) -> str:
    """Why ``trace`` has no search, as far as the trace (and, where given, the picture's size and
    the side of the answerer's input) tells."""
    settings = trace.settings
    if settings.get("zoom") == "off":
        return "zoom is off (--zoom off)"
    if settings.get("direct_answer") is False:
        return "the direct answer is off (--no-direct-answer), and the closer look follows it"
    if trace.stop_reason in ("error", "infrastructure"):
        return f"the sample failed ({trace.error})" if trace.error else "the sample failed"
    if trace.answer_source == "direct" and not trace.rounds and settings.get("zoom") != "on":
        return "the direct answer was confident enough (--zoom on looks closer anyway)"
    if settings.get("zoom") == "auto":
        sizes = ""
        if picture_size is not None and input_side is not None:
            sizes = f" ({picture_size[0]}x{picture_size[1]} against about {round(input_side)} px)"
        return (f"the picture is not {DETAIL_FACTOR} times larger than what the answerer takes in{sizes}; "
                "--zoom on looks closer anyway")
    return "the agent did not look closer"
