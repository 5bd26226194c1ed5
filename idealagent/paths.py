"""Where idealagent keeps what it makes once and reads again: converted weights, dataset
images, model replies. ``$IDEALAGENT_CACHE`` moves all of it."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$IDEALAGENT_CACHE``, or the user cache dir (``~/.cache/idealagent`` on Linux)."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get("IDEALAGENT_CACHE") or user_cache_dir("idealagent"))
