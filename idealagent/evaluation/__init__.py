"""Accuracy evaluation on standard VQA benchmarks: datasets, metrics, runs and reports.

Names load on first use so that ``import idealagent.evaluation`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    **dict.fromkeys(
        ["BENCHMARKS", "Benchmark", "EvalItem", "LoadResult", "Metric", "benchmark_names", "get_benchmark",
         "load_benchmark"],
        "datasets",
    ),
    **dict.fromkeys(["vqa_score", "exact_match", "choice_accuracy", "score"], "scoring"),
    **dict.fromkeys(["expected_calibration_error", "accuracy_at_coverage"], "trust"),
    **dict.fromkeys(["agent_stats"], "loop_stats"),
    **dict.fromkeys(["read_results", "summarize", "write_plots"], "report"),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
