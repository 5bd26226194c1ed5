"""idealagent: iterative visual reasoning in the style of IdealGPT.

Public API: ``IdealAgent``, ``Sample``, ``Trace`` and ``load_preset``. Heavy dependencies
(torch, transformers) load only when a preset or backend that needs them is built, and
LangChain only when one of these names is first used, so that ``idealagent --help`` and a
mistyped argument answer at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from idealagent.agent import IdealAgent
    from idealagent.presets import load_preset
    from idealagent.trace import Sample, Trace

# Each public name and the module that defines it, imported on first use (PEP 562).
_HOMES = {"IdealAgent": "idealagent.agent", "load_preset": "idealagent.presets",
          "Sample": "idealagent.trace", "Trace": "idealagent.trace"}

__all__ = ["IdealAgent", "Sample", "Trace", "load_preset"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'idealagent' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
