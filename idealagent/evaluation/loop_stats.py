"""What the loop did: what it spent, how it stopped, what it changed, and whether it parrots
its prompts' few-shot exemplars. Every function reads finished traces."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from idealagent.answers import normalize_answer
from idealagent.errors import InputError
from idealagent.evaluation.trust import RIGHT_AT
from idealagent.machine import Step
from idealagent.parsing import is_undecided

if TYPE_CHECKING:
    from idealagent.trace import Trace

# A finished sample whose answer came from one of these did not end on a confident verdict.
FALLBACK_STOP_REASONS = frozenset({"questioner_failed", "reasoner_failed", "answerer_failed", "error"})
MIN_EXEMPLAR_WORDS = 4  # shorter exemplar sentences ("Is it red?") are asked for their own sake
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def is_fallback(trace: Trace) -> bool:
    """Whether a finished trace's answer did not come from the loop's normal course.

    True when the run stopped because a role failed (``questioner_failed``, ``reasoner_failed``,
    ``answerer_failed``)
    or the sample errored, or when it hit ``max_rounds`` and the answer it kept is the forced
    last round's (the reasoner had to commit). ``max_rounds`` keeping an earlier, unforced verdict
    and ``no_new_questions`` are not fallbacks: those answers were given freely, just below the
    threshold.
    """
    if trace.stop_reason in FALLBACK_STOP_REASONS:
        return True
    if trace.stop_reason != "max_rounds":
        return False
    if trace.answer_source is not None:  # the trace says which candidate it kept
        return trace.answer_source == "round" and any(r.forced and r.index == trace.answer_round
                                                       for r in trace.rounds)
    best = trace.best_verdict  # written before candidates: the most confident verdict was kept
    return any(r.forced and r.verdict is best for r in trace.rounds) if best is not None else False


def agent_stats(traces: Sequence[Trace]) -> dict[str, Any]:
    """What the agent spent and how it stopped, over finished traces (JSON-able).

    Means are per sample. ``unknown_rate``: samples that ran (no error) but ended without an
    answer or with a non-answer such as "unknown"; errored samples count in ``error_rate``
    instead, so the two add up to the share with no usable answer. ``fallback_rate``: see
    ``is_fallback``. Latency percentiles cover every sample, errored ones included.
    """
    n = len(traces)
    stats: dict[str, Any] = {"n": n}
    if n == 0:
        return stats

    def mean(values: Sequence[float]) -> float:
        return sum(values) / n

    for name in ("llm_calls", "llm_input_tokens", "llm_output_tokens", "answerer_calls", "answerer_input_tokens",
                 "answerer_output_tokens"):
        values = [getattr(t.usage, name) for t in traces]
        stats[f"total_{name}"] = sum(values)
        stats[f"mean_{name}"] = mean(values)
    steps = sorted({step for t in traces for step in t.usage.steps},
                   key=lambda step: (_STEP_ORDER.index(step) if step in _STEP_ORDER else len(_STEP_ORDER), step))
    stats["mean_calls_by_step"] = {step: mean([t.usage.steps.get(step, 0) for t in traces]) for step in steps}
    latencies = [t.latency_s for t in traces]
    errored = [t.stop_reason == "error" or t.error is not None for t in traces]
    stats.update(
        mean_rounds=mean([t.judged_rounds for t in traces]),
        mean_sub_questions=mean([len(t.sub_questions) for t in traces]),
        stop_reasons=dict(Counter(t.stop_reason or "unfinished" for t in traces).most_common()),
        error_rate=mean([float(e) for e in errored]),
        unknown_rate=mean([float(not e and is_undecided(t.answer)) for t, e in zip(traces, errored)]),
        fallback_rate=mean([float(is_fallback(t)) for t in traces]),
        latency_mean_s=mean(latencies),
        latency_p50_s=_percentile(latencies, 50),
        latency_p90_s=_percentile(latencies, 90),
    )
    return stats


_STEP_ORDER = [step.value for step in Step]  # the loop's order


def _percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation (numpy's default method)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def loop_changes(
    traces: Sequence[Trace], scores: Sequence[float], direct_scores: Sequence[float | None]
) -> dict[str, Any] | None:
    """How often the loop's final answer differs from the direct answer, and who was right.

    Only traces with a direct answer count (None if there are none). An answer is changed when
    the final answer differs from the direct one after ``normalize_answer`` (no final answer
    counts as a change). Of the changed, ``agent_right`` counts those whose final answer is right
    (score >= 0.5) and ``direct_right`` those whose direct answer was (``direct_scores``, None
    where it could not be scored: then it is not counted, and ``direct_scored`` says how many were).
    """
    if not len(traces) == len(scores) == len(direct_scores):
        raise InputError("pass one score and one direct score per trace")
    n = changed = agent_right = direct_right = direct_scored = 0
    for trace, value, direct in zip(traces, scores, direct_scores):
        if trace.direct is None or trace.direct.answer is None:
            continue
        n += 1
        final = None if trace.answer is None else normalize_answer(trace.answer)
        if final == normalize_answer(trace.direct.answer):
            continue
        changed += 1
        agent_right += value >= RIGHT_AT
        if direct is not None:
            direct_scored += 1
            direct_right += direct >= RIGHT_AT
    if n == 0:
        return None
    return {
        "n": n, "changed": changed, "changed_rate": changed / n,
        "agent_right": agent_right, "agent_right_rate": agent_right / changed if changed else None,
        "direct_scored": direct_scored, "direct_right": direct_right,
        "direct_right_rate": direct_right / direct_scored if direct_scored else None,
    }  # fmt: skip


def answer_sources(traces: Sequence[Trace]) -> dict[str, int] | None:
    """Where the final answers came from: ``direct``, ``look`` or ``round N``, with counts (most
    first); None when no trace records it (results written before the direct answer existed)."""
    sources = Counter(
        t.answer_source if t.answer_source in ("direct", "look") else f"round {t.answer_round}"
        for t in traces if t.answer_source is not None
    )  # fmt: skip
    return dict(sorted(sources.items(), key=lambda item: (-item[1], item[0]))) if sources else None


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``: split after ``.``, ``!`` or ``?`` followed by whitespace."""
    return [s for s in (part.strip() for part in _SENTENCE_END.split(text)) if s]


def _flat(text: str) -> str:
    return " ".join(text.lower().split())


def exemplar_echo(traces: Sequence[Trace], exemplar_sentences: Sequence[str]) -> dict[str, Any]:
    """How many of the generated texts (every sub-question and every verdict analysis) repeat a
    few-shot exemplar sentence verbatim.

    Texts and sentences are compared lower-cased with whitespace collapsed; a text echoes when a
    sentence, less its final ``.``, ``!`` or ``?``, occurs in it. Sentences shorter than
    ``MIN_EXEMPLAR_WORDS`` words are ignored. ``rate`` is None when there are no texts;
    ``echoed`` names the sentences that were repeated, with how many texts repeat each.
    """
    sentences = sorted({_flat(s).rstrip(".!?") for s in exemplar_sentences
                        if len(s.split()) >= MIN_EXEMPLAR_WORDS})  # fmt: skip
    texts = [qa.question for t in traces for r in t.rounds for qa in r.sub_qas]
    texts += [r.verdict.analysis for t in traces for r in t.rounds if r.verdict and r.verdict.analysis]
    echoed: Counter[str] = Counter()
    echoes = 0
    for text in map(_flat, texts):
        found = [s for s in sentences if s in text]
        echoes += bool(found)
        echoed.update(found)
    return {
        "texts": len(texts), "echoes": echoes, "rate": echoes / len(texts) if texts else None,
        "echoed": dict(echoed.most_common()),
    }  # fmt: skip
