"""Boxes in original-picture pixels: where a view is, in words, and boxes a model named in text.

Every box the search, the views and the trace handle is a ``Box`` in the coordinates of the
ORIGINAL picture (its full-resolution, upright pixels), whatever size the model was shown. A
box a model names in its reply is in the model's own convention, converted by ``parse_box``:

- ``pixels``: absolute pixels of the image the model was shown (Qwen2.5-VL), so the shown
  size is needed to map it back (the size sent: a processor that resizes it, as Qwen2.5-VL's
  does to multiples of 28 within its pixel budget, shifts the frame by that much);
- ``norm1000``: 0-1000 on each axis (Qwen2-VL, CogVLM, Kosmos and most grounding models);
- ``norm1``: 0-1 floats on each axis.

A malformed reply, or a box wholly outside the picture, gives None, never an exception.
"""

from __future__ import annotations

import json
import math
import re
from typing import Literal, NamedTuple

BoxConvention = Literal["pixels", "norm1000", "norm1"]
BOX_CONVENTIONS: tuple[str, ...] = ("pixels", "norm1000", "norm1")
Size = tuple[int, int]  # (width, height) in pixels

# Model families that name boxes in their own convention, by a piece of their name or model type
# (lower case, "_" read as "-"); the first that matches wins. Other models: none declared.
MODEL_BOXES: tuple[tuple[str, BoxConvention], ...] = (
    ("qwen2.5-vl", "pixels"), ("qwen2-5-vl", "pixels"), ("qwen2-vl", "norm1000"))

# How far past the picture's edge a named box may reach and still be meant for this picture
# (models overshoot by a few pixels; a box twice the picture's size is a misread convention).
OVERSHOOT = 0.25


def box_convention_of(name: str) -> BoxConvention | None:
    """How a model writes boxes, from its hub id, served name or config ``model_type``:
    Qwen2.5-VL in pixels of its input, Qwen2-VL in 0-1000; None for a model not known to."""
    key = name.lower().replace("_", "-")
    return next((convention for piece, convention in MODEL_BOXES if piece in key), None)


class Box(NamedTuple):
    """A pixel box ``[x0, x1) x [y0, y1)`` in original-picture coordinates."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        return max(0, self.width) * max(0, self.height)

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    @classmethod
    def whole(cls, size: Size) -> Box:
        """The whole picture of ``size``."""
        return cls(0, 0, size[0], size[1])

    @classmethod
    def clamped(cls, x0: float, y0: float, x1: float, y1: float, size: Size) -> Box | None:
        """The box with these corners (in either order), rounded outwards and clamped to a
        picture of ``size``; None when nothing of it is inside."""
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            return None
        left, right = sorted((x0, x1))
        top, bottom = sorted((y0, y1))
        box = cls(max(0, math.floor(left)), max(0, math.floor(top)),
                  min(size[0], math.ceil(right)), min(size[1], math.ceil(bottom)))
        return box if box.width > 0 and box.height > 0 else None

    def expanded(self, min_side: int, size: Size) -> Box:
        """At least ``min_side`` on each side (or the picture's side, if smaller), grown about the
        centre and shifted to stay inside ``size``: a small box is looked at with its context."""
        return self.grown(min_side, min_side, size)

    def grown(self, min_width: int, min_height: int, size: Size) -> Box:
        """At least ``min_width`` by ``min_height`` (each at most the picture's side), grown about
        the centre and shifted to stay inside ``size``."""
        x0, x1 = _grow(self.x0, self.x1, min_width, size[0])
        y0, y1 = _grow(self.y0, self.y1, min_height, size[1])
        return Box(x0, y0, x1, y1)

    def scaled(self, factor_x: float, factor_y: float) -> tuple[float, float, float, float]:
        """The corners multiplied by the factors (to another image's pixels), unrounded."""
        return self.x0 * factor_x, self.y0 * factor_y, self.x1 * factor_x, self.y1 * factor_y

    def contains(self, other: Box) -> bool:
        """Whether ``other`` lies wholly inside this box."""
        return self.x0 <= other.x0 and self.y0 <= other.y0 and other.x1 <= self.x1 and other.y1 <= self.y1

    def overlap(self, other: Box) -> float:
        """Intersection over union with ``other`` (0 when apart)."""
        inner = Box(max(self.x0, other.x0), max(self.y0, other.y0), min(self.x1, other.x1), min(self.y1, other.y1))
        union = self.area + other.area - inner.area
        return inner.area / union if union else 0.0


def _grow(start: int, end: int, minimum: int, limit: int) -> tuple[int, int]:
    """``[start, end)`` grown about its middle to ``minimum`` long, kept within ``[0, limit)``."""
    length = min(max(end - start, minimum), limit)
    begin = round((start + end - length) / 2)
    begin = min(max(0, begin), limit - length)
    return begin, begin + length


# --- where a box is, in words ---------------------------------------------------------------------

# Shares of a side, and how they are said; a box's share is said as the nearest of these.
_SHARES = ((1 / 20, "a twentieth"), (1 / 10, "a tenth"), (1 / 5, "a fifth"), (1 / 4, "a quarter"),
           (1 / 3, "a third"), (1 / 2, "half"), (2 / 3, "two thirds"), (3 / 4, "three quarters"),
           (1.0, "all"))


def describe_box(box: Box, size: Size) -> str:
    """Where ``box`` is in a picture of ``size``, in words: "upper left, about a tenth of the width"."""
    x, y = box.centre
    column = ("left", "centre", "right")[min(2, int(3 * x / size[0]))]
    row = ("upper", "middle", "lower")[min(2, int(3 * y / size[1]))]
    if row == "middle":
        place = "centre" if column == "centre" else f"middle {column}"
    else:
        place = f"{row} {'middle' if column == 'centre' else column}"
    share = box.width / size[0]
    if share >= 0.95:
        return f"{place}, the whole width"
    name = min(_SHARES, key=lambda s: abs(math.log(s[0]) - math.log(max(share, 1e-6))))[1]
    return f"{place}, about {name} of the width"


# --- boxes named in text --------------------------------------------------------------------------

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_SEP = r"\s*[,;\s]\s*"
# The forms in the order they are tried: JSON keys first (the most explicit), then tagged and
# bracketed quadruples, then two corner points.
_JSON_KEY = re.compile(r'"(?:bbox_2d|bbox|box|box_2d)"\s*:\s*(\[[^\]]*\])', re.IGNORECASE)
_TAGGED = re.compile(r"<(?:box|\|box_start\|)>(.*?)<(?:/box|\|box_end\|)>", re.IGNORECASE | re.DOTALL)
_QUADRUPLE = re.compile(rf"[\[(]\s*({_NUMBER}){_SEP}({_NUMBER}){_SEP}({_NUMBER}){_SEP}({_NUMBER})\s*[\])]")
_CORNERS = re.compile(rf"\(\s*({_NUMBER}){_SEP}({_NUMBER})\s*\)\s*,?\s*(?:to|-)?\s*\(\s*({_NUMBER}){_SEP}({_NUMBER})\s*\)")


def find_box_numbers(text: str) -> tuple[float, float, float, float] | None:
    """The four numbers of the first box written in ``text`` (JSON ``bbox_2d``, ``<box>``,
    ``[x0, y0, x1, y1]`` or ``(x0,y0),(x1,y1)``), or None."""
    if not isinstance(text, str):
        return None
    for match in _JSON_KEY.finditer(text):
        try:
            values = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        if isinstance(values, list) and len(values) == 4 and all(_is_number(v) for v in values):
            return tuple(float(v) for v in values)  # type: ignore[return-value]
    for tagged in _TAGGED.finditer(text):
        found = _numbers_in(tagged.group(1))
        if found:
            return found
    return _numbers_in(text)


def _numbers_in(text: str) -> tuple[float, float, float, float] | None:
    for pattern in (_QUADRUPLE, _CORNERS):
        match = pattern.search(text)
        if match:
            return tuple(float(v) for v in match.groups())  # type: ignore[return-value]
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_box(text: str, convention: BoxConvention, size: Size, shown: Size | None = None) -> Box | None:
    """The first box named in ``text``, converted from ``convention`` to pixels of the original
    picture of ``size``; ``shown`` is the size of the image the model saw (for ``pixels``; the
    original size if omitted). Malformed, degenerate or far out-of-range boxes give None."""
    if convention not in BOX_CONVENTIONS:
        raise ValueError(f"unknown box convention {convention!r}; choose one of: {', '.join(BOX_CONVENTIONS)}")
    numbers = find_box_numbers(text)
    if numbers is None:
        return None
    if convention == "pixels":
        frame = shown or size
    elif convention == "norm1000":
        frame = (1000, 1000)
    else:
        frame = (1, 1)
    x0, y0, x1, y1 = numbers
    # A box reaching well past the frame is in another convention or invented: not a place.
    low_x, high_x = -OVERSHOOT * frame[0], (1 + OVERSHOOT) * frame[0]
    low_y, high_y = -OVERSHOOT * frame[1], (1 + OVERSHOOT) * frame[1]
    if not all(low_x <= v <= high_x for v in (x0, x1)) or not all(low_y <= v <= high_y for v in (y0, y1)):
        return None
    scale_x, scale_y = size[0] / frame[0], size[1] / frame[1]
    return Box.clamped(x0 * scale_x, y0 * scale_y, x1 * scale_x, y1 * scale_y, size)
