"""A flat-coloured shape that stands out: the perception answerer's third look at a picture.

The ImageNet classifier knows no circles or triangles, and counting colours over a whole
picture loses a small object among the background's pixels. This finds the one patch of a
single flat colour (its pixels close to one of the palette's prototypes) that is compact,
does not touch the picture's edge, covers between 0.8% and a quarter of the thumbnail,
and differs clearly from what surrounds it; its fill of its bounding box says which shape it
resembles (a rectangle fills it, a circle about 79%, a triangle about half).

Plain numpy and a flood fill on a thumbnail of at most ``SHAPE_SIDE`` pixels a side: a few
milliseconds for a simple picture, up to about a tenth of a second for a busy photo, on a CPU.
It is a heuristic, built for pictures like easy-VQA's and the generated zoom set's (a shape of
a named colour on a plain or photographic background), and says nothing where it finds none.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

SHAPE_SIDE = 96  # the thumbnail the shape is looked for on
FLAT = 8.0  # a pixel this close (CIELAB distance) to a palette prototype has a flat, named colour
# Of the thumbnail: smaller patches are a photo's eyes, holes and highlights more often than
# objects (and a shape this small in a whole picture is for a closer look to find).
MIN_SHARE = 0.008
MAX_SHARE = 0.25  # a patch larger than this share of the thumbnail is background, not an object
MIN_FILL = 0.35  # of its bounding box: thinner patches are strokes and outlines
MIN_CONTRAST = 25.0  # CIELAB distance between the patch and the ring around it
RING = 2  # thumbnail pixels around the patch that count as its surroundings
# Where a search asks whether a shape is in a view (``PerceptionAnswerer.detect``): a larger
# thumbnail and a smaller least share, so a shape a tenth of a view's width is still found. On
# the generated zoom set's train split this put the object in the strongest quarter of 45 of 60
# pictures (docs/benchmarks.md); the describing thumbnail above, in 18 of 40.
LOCATE_SIDE = 160
LOCATE_MIN_SHARE = 0.003
# A patch's fill of its bounding box, and the shape it suggests (from the fullest).
FILLS = ((0.9, "rectangle"), (0.68, "circle"), (0.0, "triangle"))


class Shape(NamedTuple):
    """The patch that stands out most: its colour, the shape it resembles, and how clearly."""

    colour: str
    shape: str
    share: float  # of the thumbnail's pixels
    contrast: float  # CIELAB distance to its surroundings
    centre: tuple[float, float]  # (x, y), each 0..1 of the picture's width and height
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) of its pixels, each 0..1 likewise

    @property
    def strength(self) -> float:
        """How clearly it stands out: its contrast, discounted for a patch of only a few pixels."""
        return self.contrast * min(1.0, self.share * SHAPE_SIDE * SHAPE_SIDE / 30)


def find_shape(names: np.ndarray, lab: np.ndarray, flatness: np.ndarray, colour_names: tuple[str, ...],
               min_share: float = MIN_SHARE) -> Shape | None:
    """The flat-coloured patch that stands out most in a thumbnail, or None.

    ``names`` (H, W) are palette indices into ``colour_names``, ``lab`` (H, W, 3) the CIELAB
    values and ``flatness`` (H, W) each pixel's distance to its nearest prototype. Patches
    under ``min_share`` of the thumbnail are passed over (smaller when searching: ``LOCATE``).
    """
    height, width = names.shape
    flat = flatness < FLAT
    best: Shape | None = None
    for colour in np.unique(names[flat]):
        labels, count = _components(flat & (names == colour))
        for index in range(1, count + 1):
            ys, xs = np.nonzero(labels == index)
            area = len(ys)
            if area < min_share * height * width or area > MAX_SHARE * height * width:
                continue
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            if y0 == 0 or x0 == 0 or y1 == height or x1 == width:
                continue  # touches the edge: part of something larger
            fill = area / ((y1 - y0) * (x1 - x0))
            if fill < MIN_FILL:
                continue
            ring = np.zeros((height, width), dtype=bool)
            ring[max(0, y0 - RING) : y1 + RING, max(0, x0 - RING) : x1 + RING] = True
            ring &= labels != index
            if not ring.any():
                continue
            contrast = float(np.linalg.norm(lab[ys, xs].mean(axis=0) - lab[ring].mean(axis=0)))
            if contrast < MIN_CONTRAST:
                continue
            shape = next(name for floor, name in FILLS if fill >= floor)
            found = Shape(colour_names[int(colour)], shape, area / (height * width), contrast,
                          ((x0 + x1) / 2 / width, (y0 + y1) / 2 / height),
                          (x0 / width, y0 / height, x1 / width, y1 / height))
            if best is None or found.strength > best.strength:
                best = found
    return best


def say_shape(shape: Shape | None) -> str:
    """The description's sentence about it ("" when none was found)."""
    if shape is None:
        return ""
    size = "A small" if shape.share < 0.05 else "A"
    return f"{size} {shape.colour} shape stands out {_where(shape.centre)}; it looks like a {shape.shape}."


def _where(centre: tuple[float, float]) -> str:
    x, y = centre
    column = ("left", "centre", "right")[min(2, int(3 * x))]
    row = ("top", "middle", "bottom")[min(2, int(3 * y))]
    if row == "middle":
        return "in the centre" if column == "centre" else f"on the {column}"
    return f"at the {row}" if column == "centre" else f"at the {row} {column}"


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of ``mask``: (labels, count), labels 1..count, 0 off the mask."""
    height, width = mask.shape
    labels = np.zeros((height, width), dtype=np.int32)
    count = 0
    for y, x in zip(*np.nonzero(mask)):
        if labels[y, x]:
            continue
        count += 1
        labels[y, x] = count
        stack = [(y, x)]
        while stack:
            cy, cx = stack.pop()
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = count
                    stack.append((ny, nx))
    return labels, count
