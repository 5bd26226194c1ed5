"""idealagent: iterative visual reasoning in the style of IdealGPT.

Public API: ``IdealAgent``, ``Sample``, ``Trace`` and ``load_preset``. Heavy dependencies
(torch, transformers) load only when a preset or backend that needs them is built, and
LangChain only when one of these names is first used, so that ``idealagent --help`` and a
mistyped argument answer at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from idealagent.lazy import lazy_exports

if TYPE_CHECKING:
    from idealagent.agent import IdealAgent
    from idealagent.presets import load_preset
    from idealagent.trace import Sample, Trace

__all__ = ["IdealAgent", "Sample", "Trace", "load_preset"]
__version__ = "0.1.0"

# Each public name and the module that defines it, imported on first use.
_HOMES = {"IdealAgent": "idealagent.agent", "load_preset": "idealagent.presets",
          "Sample": "idealagent.trace", "Trace": "idealagent.trace"}
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, __all__)
