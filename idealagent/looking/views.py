"""Views: a box of the picture, cut from the full-resolution original and sized for the answerer.

``load_image`` gives the agent a copy of at most ``MAX_PIXELS`` (about 16.8 megapixels): an 8K
photo (33 megapixels) is halved at load, and a small object loses detail the zoom is for. A
``Picture`` keeps that copy for coarse views and decodes the original only when a view needs
more detail than the copy has, once, within ``MAX_DECODED_PIXELS``; ``release()`` frees it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from PIL import Image

from idealagent import images
from idealagent.images import load_image, upright_size
from idealagent.looking.boxes import Box, Size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ViewSize:
    """What size of image the answerer wants (Qwen2-VL's ``smart_resize`` rules, or a side)."""

    max_side: int | None = None  # the longest side after resizing (LLaVA: its 336, a classifier's 224)
    min_pixels: int | None = None  # upscale smaller views to about this many pixels (Qwen2-VL)
    max_pixels: int | None = None  # downscale larger views to about this many pixels
    multiple: int = 1  # each side a multiple of this (Qwen2-VL: patch 14 x merge 2 = 28)
    min_side: int = 224  # the smallest box looked at, in original pixels; smaller boxes get context

    def fit(self, width: int, height: int) -> Size:
        """The (width, height) a view of ``width`` x ``height`` pixels is resized to."""
        scale = 1.0
        if self.max_pixels and width * height > self.max_pixels:
            scale = math.sqrt(self.max_pixels / (width * height))
        elif self.min_pixels and width * height < self.min_pixels:
            scale = math.sqrt(self.min_pixels / (width * height))
        if self.max_side and max(width, height) * scale > self.max_side:
            scale = self.max_side / max(width, height)
        step = max(1, self.multiple)
        w, h = (max(step, round(width * scale / step) * step), max(step, round(height * scale / step) * step))
        # Rounding to the multiple can cross a bound again; step back inside it, as smart_resize does.
        if self.max_pixels and w * h > self.max_pixels and (w > step or h > step):
            w, h = max(step, math.floor(width * scale / step) * step), max(step, math.floor(height * scale / step) * step)
        elif self.min_pixels and w * h < self.min_pixels:
            w, h = math.ceil(width * scale / step) * step, math.ceil(height * scale / step) * step
        return w, h

    @classmethod
    def from_processor(cls, image_processor: Any, min_side: int | None = None) -> ViewSize:
        """The sizes a transformers image processor resizes to: Qwen2-VL's pixel range and 28-pixel
        grid, or a fixed input (LLaVA, SigLIP) as the longest side; ``ViewSize()`` if unknown."""
        size = getattr(image_processor, "size", None)
        get = (lambda key: size.get(key)) if isinstance(size, dict) else (lambda key: getattr(size, key, None))
        patch = getattr(image_processor, "patch_size", None)
        merge = getattr(image_processor, "merge_size", None)
        low = getattr(image_processor, "min_pixels", None)
        high = getattr(image_processor, "max_pixels", None)
        if merge and patch:  # Qwen2-VL family: size holds a pixel range
            low, high = low or get("shortest_edge"), high or get("longest_edge")
            side = int(patch) * int(merge)
            return cls(min_pixels=low, max_pixels=high, multiple=side, min_side=min_side or side * 8)
        fixed = get("height") or get("shortest_edge") if size is not None else None
        crop = getattr(image_processor, "crop_size", None)
        if isinstance(crop, dict) and crop.get("height"):
            fixed = crop["height"]
        if fixed:
            return cls(max_side=int(fixed), min_side=min_side or int(fixed))
        return cls(min_side=min_side or 224)


class Picture:
    """The picture a sample is about: the copy the agent loaded, and its original, for views."""

    def __init__(self, ref: Any, shown: Image.Image | None = None) -> None:
        self.ref = ref
        self.shown = shown if shown is not None else load_image(ref)
        # The original's upright size; a URL's or an unreadable header's is the loaded copy's.
        self.size: Size = upright_size(ref) or self.shown.size
        if self.size[0] * self.size[1] > images.MAX_DECODED_PIXELS:
            self.size = self.shown.size  # never decoded whole: the loaded copy is the original
        self._full: Image.Image | None = None

    @property
    def downscaled(self) -> bool:
        """Whether the loaded copy has fewer pixels than the original."""
        return self.shown.size != self.size

    def view(self, box: Box, want: ViewSize) -> Image.Image:
        """The part of the picture in ``box`` (original pixels), grown to ``want.min_side`` if
        smaller, resized to ``want.fit``; from the loaded copy if it has detail enough."""
        box = box.expanded(want.min_side, self.size)
        target = want.fit(box.width, box.height)
        scale_x, scale_y = self.shown.size[0] / self.size[0], self.shown.size[1] / self.size[1]
        # The loaded copy is enough when it holds at least as many pixels of the box as the view has.
        if box.width * scale_x >= target[0] - 0.5 or not self.downscaled:
            source, corners = self.shown, box.scaled(scale_x, scale_y)
        else:
            source = self._original()
            corners = box.scaled(source.size[0] / self.size[0], source.size[1] / self.size[1])
        cut = source.crop(tuple(round(v) for v in corners))
        return cut if cut.size == target else cut.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)

    def _original(self) -> Image.Image:
        if self._full is None:
            log.debug("decoding the full-resolution %dx%d original for a view", *self.size)
            self._full = load_image(self.ref, max_pixels=images.MAX_DECODED_PIXELS)
        return self._full

    def release(self) -> None:
        """Free the decoded original (a later detailed view decodes it again)."""
        self._full = None
