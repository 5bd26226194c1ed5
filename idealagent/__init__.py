"""idealagent: iterative visual reasoning in the style of IdealGPT.

Public API: ``IdealAgent``, ``Sample``, ``Trace`` and ``load_preset``. Heavy dependencies
(torch, transformers) load only when a preset or backend that needs them is built.
"""

from idealagent.agent import IdealAgent
from idealagent.presets import load_preset
from idealagent.trace import Sample, Trace

__all__ = ["IdealAgent", "Sample", "Trace", "load_preset"]
__version__ = "0.1.0"
