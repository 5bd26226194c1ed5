"""Real example photos shipped with the package, for the demo, tests and notebooks.

They come from scikit-image's sample data; see CREDITS.md beside this file.
"""

from __future__ import annotations

from pathlib import Path

from idealagent.errors import InputError

_DIRECTORY = Path(__file__).resolve().parent

EXAMPLES: tuple[str, ...] = ("cat", "coffee", "astronaut", "rocket")


def example_image(name: str) -> Path:
    """The path of the example photo called ``name`` (one of ``EXAMPLES``)."""
    if name not in EXAMPLES:
        raise InputError(f"no example image named {name!r}; have: {', '.join(EXAMPLES)}")
    return _DIRECTORY / f"{name}.jpg"
