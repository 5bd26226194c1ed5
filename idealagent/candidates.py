"""A sample's candidates and costs, as its trace records them: which candidate is the best
(the direct answer, the closer look's answer or a round's verdict, by calibrated confidence),
and the model calls and tokens each step adds (machine.py calls these after each step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from idealagent.answerers import Reply, tokens_of
from idealagent.roles import Outcome
from idealagent.trace import Round, Trace

if TYPE_CHECKING:
    from idealagent.calibration import CandidateKind
    from idealagent.settings import AgentSettings


@dataclass(frozen=True)
class Candidate:
    """A possible final answer: the direct answer, or a round's verdict."""

    answer: str
    confidence: float  # calibrated
    measured: bool  # False: the confidence is only the calibration's prior (no signal)
    source: Literal["direct", "look", "round"]
    round: int | None = None
    choice_index: int | None = None


def best_candidate(trace: Trace, settings: AgentSettings) -> Candidate | None:
    """The candidate with the highest calibrated confidence (the later one on a tie); one whose
    confidence is only the calibration's prior ranks below every measured one."""
    found: list[tuple[bool, float, float, Candidate]] = []
    direct = trace.direct
    if direct is not None and direct.answer is not None:
        value, measured = _calibrated(settings, "direct", direct.calibrated, direct.signals)
        found.append((measured, value, 0, Candidate(direct.answer, value, measured, "direct", None,
                                                    direct.choice_index)))
    looked = trace.search.answer if trace.search is not None else None
    if looked is not None and looked.answer is not None:
        value, measured = _calibrated(settings, "look", looked.calibrated, looked.signals)
        found.append((measured, value, 0.5, Candidate(looked.answer, value, measured, "look", None,
                                                    looked.choice_index)))
    for round_ in trace.rounds:
        verdict = round_.verdict
        if verdict is not None and verdict.answer is not None:
            value, measured = _calibrated(settings, "verdict", verdict.calibrated, verdict.signals)
            found.append((measured, value, round_.index, Candidate(verdict.answer, value, measured, "round",
                                                                   round_.index, verdict.choice_index)))
    return max(found, key=lambda c: c[:3])[3] if found else None


def _calibrated(settings: AgentSettings, kind: CandidateKind, value: float | None,
                signals: dict[str, float]) -> tuple[float, bool]:
    """(confidence, measured): the calibrated value, or the calibration's prior for ``kind``."""
    if value is not None:
        return value, settings.calibration.measures(kind, signals)
    return settings.calibration.prior(kind), False


def account(trace: Trace, outcome: Outcome[Any], round_: Round | None = None) -> None:
    """Add a role's model calls, tokens and (to its round) failures to the trace, and which
    structured-output form its model took."""
    if outcome.form:
        trace.settings.setdefault("structured_form", {})[outcome.role] = outcome.form
    if outcome.shown:
        trace.shown[outcome.role] = outcome.shown
    if round_ is not None:
        round_.failures += outcome.failures
    trace.usage.llm_calls += outcome.calls
    trace.usage.llm_input_tokens += outcome.input_tokens
    trace.usage.llm_output_tokens += outcome.output_tokens


def count_answerer_tokens(trace: Trace, answer: Reply) -> None:
    """Add the answerer model's tokens behind ``answer`` (0 for a plain string) to the trace."""
    input_tokens, output_tokens = tokens_of(answer)
    trace.usage.answerer_input_tokens += input_tokens
    trace.usage.answerer_output_tokens += output_tokens


def sub_answers(trace: Trace) -> list[str]:
    """Every sub-answer given so far."""
    return [qa.answer for r in trace.rounds for qa in r.sub_qas if qa.answer]
