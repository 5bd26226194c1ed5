"""Answerers: the part of the loop that looks at the image.

An answerer is anything with these two batched methods. Backends live in this package and
import their heavy dependencies (torch, transformers) inside themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from PIL.Image import Image


@runtime_checkable
class Answerer(Protocol):
    """Answers short questions about images, many at a time."""

    def answer(self, requests: Sequence[tuple[Image, str]]) -> list[str]:
        """One short answer per (image, question) pair, in order."""
        ...

    def caption(self, images: Sequence[Image]) -> list[str]:
        """One short description per image, in order."""
        ...
