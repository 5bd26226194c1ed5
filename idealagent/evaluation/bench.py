"""Throughput of a preset: the whole loop and the direct-answer baseline, at several batch sizes.

The same benchmark questions (by default 8 seeded easy-VQA test questions, which ship in a
package, so this runs offline) go through the agent (``run_batch``) and through the answerer
alone (one call per question, what ``idealagent eval`` puts beside the agent). One warm-up
sample first pays the one-time costs (grammar compilation, caches, CUDA kernels).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from idealagent.errors import InputError
from idealagent.evaluation.baseline import load_images, run_baseline
from idealagent.evaluation.loop_stats import agent_stats

if TYPE_CHECKING:
    from idealagent.agent import IdealAgent
    from idealagent.evaluation.items import EvalItem

Mode = Literal["agent", "baseline"]
MODES: tuple[Mode, ...] = ("agent", "baseline")


def run_bench(agent: IdealAgent, items: Sequence[EvalItem], batch_sizes: Sequence[int],
              modes: Sequence[Mode] = MODES) -> Iterator[dict[str, Any]]:
    """One measurement per (mode, batch size), as soon as it is done."""
    if not items:
        raise InputError("nothing to measure: the benchmark gave no samples")
    if any(size < 1 for size in batch_sizes):
        raise InputError(f"batch sizes must be at least 1, got {list(batch_sizes)}")
    samples = [item.to_sample() for item in items]
    agent.run_batch(samples[:1])
    for mode in modes:
        for batch_size in batch_sizes:
            _reset_peak_memory()
            started = time.perf_counter()
            if mode == "agent":
                agent.settings = agent.settings.replace(batch_size=batch_size)
                traces = agent.run_batch(samples)
            else:
                results = {}
                for start in range(0, len(items), batch_size):
                    chunk = items[start : start + batch_size]
                    results.update(run_baseline(agent.answerer, chunk, load_images(chunk),
                                                agent.settings.option_scoring))
            seconds = time.perf_counter() - started
            line: dict[str, Any] = {"mode": mode, "samples": len(items), "batch_size": batch_size,
                                    "seconds": round(seconds, 2), "samples_per_s": round(len(items) / seconds, 3)}
            if mode == "agent":
                usage = [trace.usage for trace in traces]
                line |= {
                    "sub_questions_per_s": round(sum(len(t.sub_questions) for t in traces) / seconds, 2),
                    "llm_output_tokens_per_s": round(sum(u.llm_output_tokens for u in usage) / seconds, 1),
                    "answerer_output_tokens_per_s": round(sum(u.answerer_output_tokens for u in usage) / seconds, 1),
                    "mean_rounds": round(sum(t.judged_rounds for t in traces) / len(traces), 2),
                    "failures": sum(t.error is not None for t in traces),
                    # Model calls per sample by step (caption, direct, look, ...): where the time went.
                    "calls_by_step": {step: round(mean, 2) for step, mean
                                      in agent_stats(traces).get("mean_calls_by_step", {}).items()},
                }
            else:
                line["failures"] = sum(r.error is not None for r in results.values())
            peak = _peak_memory_gib()
            if peak is not None:
                line["peak_gpu_memory_gib"] = peak
            yield line


def _reset_peak_memory() -> None:
    torch = _torch_with_cuda()
    if torch is not None:
        torch.cuda.reset_peak_memory_stats()


def _peak_memory_gib() -> float | None:
    torch = _torch_with_cuda()
    return None if torch is None else round(torch.cuda.max_memory_allocated() / 2**30, 2)


def _torch_with_cuda() -> Any:
    """torch if it is already imported (a local model is loaded) and sees a GPU, else None."""
    import sys

    torch = sys.modules.get("torch")
    return torch if torch is not None and torch.cuda.is_available() else None
