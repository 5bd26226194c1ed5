"""The five steps of the loop, each split in two: the *call* (the model work for a batch of
samples, safe to run on a worker thread, touching no trace) and the *apply* (what the result
means for each sample's trace, run by the loop itself). agent.py decides when each runs.

A sample's step that fails because of the infrastructure (retries exhausted, out of memory)
leaves the sample at that step to try again, a bounded number of times (``infra_retries``);
its own failure (an unreadable reply, a rejected image) is its result; a service that is down
stops the run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from idealagent import confidence
from idealagent.answerers import Reply, answer_each, caption_each, probability_of, text_of, tokens_of
from idealagent.direct import direct_question, read_direct_reply
from idealagent.errors import IdealAgentError, ServiceDownError, failure_kind, one_line
from idealagent.parsing import choice_letter
from idealagent.roles import Outcome, RepeatedQuestionsError
from idealagent.trace import DirectAnswer, Round, SubQA, Trace, Verdict

if TYPE_CHECKING:
    from PIL.Image import Image

    from idealagent.agent import IdealAgent

log = logging.getLogger(__name__)

Step = Literal["caption", "direct", "ask", "answer", "judge"]
STEPS: tuple[Step, ...] = ("caption", "direct", "ask", "answer", "judge")
# The name each step's time and failures go under in the trace.
PHASE: dict[str, str] = {"caption": "caption", "direct": "direct", "ask": "questioner", "answer": "answerer",
                         "judge": "reasoner"}


@dataclass
class Job:
    """A sample in flight: its trace plus what the trace does not store."""

    trace: Trace
    image: Image | None = None
    index: int = 0  # position in the caller's input, to restore order
    started: float = field(default_factory=time.perf_counter)
    step: Step = "caption"  # what the sample needs next
    infra_failures: int = 0  # steps that failed on the infrastructure so far
    queued: bool = False  # waiting for, or in, a model call (the pipelined loop)


@dataclass
class Health:
    """Watches for a service that is down although each request looks transient: many distinct
    requests failing in a row, with no success in between, stop the run."""

    down_after: int
    streak: int = 0

    def record(self, failures: list[Exception], successes: int) -> None:
        """Count one call's infrastructure failures; raise ServiceDownError past the limit."""
        self.streak = 0 if successes else self.streak + len(failures)
        if failures and self.streak >= self.down_after:
            raise ServiceDownError(f"{self.streak} requests in a row failed, the last with "
                                   f"{one_line(failures[-1], 200)}; the service seems down")


class Steps:
    """The calls and the applies of one agent's steps."""

    def __init__(self, agent: IdealAgent) -> None:
        self.agent = agent

    # -- calls: model work only ---------------------------------------------------------------

    def call(self, step: Step, jobs: list[Job]) -> Any:
        """The model call of ``step`` for ``jobs``; raises only what stops the run (or a bug)."""
        agent = self.agent
        try:
            if step == "caption":
                return caption_each(agent.answerer, [job.image for job in jobs])
            if step == "direct":
                return answer_each(agent.answerer, [(job.image, direct_question_of(job.trace)) for job in jobs])
            if step == "ask":
                return agent.questioner.ask([job.trace for job in jobs])
            if step == "answer":
                return answer_each(agent.answerer, [(job.image, qa.question) for job in jobs
                                                    for qa in job.trace.rounds[-1].sub_qas])
            traces, final = [job.trace for job in jobs], [job.trace.rounds[-1].forced for job in jobs]
            verdicts = agent.reasoner.judge(traces, final)
            votes = agent.settings.votes
            samples = agent.reasoner.vote(traces, final, votes, agent.settings.vote_temperature) if votes else None
            return verdicts, samples
        except Exception as exc:
            raise down_error(PHASE[step], exc) from exc

    # -- applies: what a result means for each sample ----------------------------------------

    def apply(self, step: Step, jobs: list[Job], result: Any, seconds: float, health: Health) -> list[Job]:
        """Record ``result`` in the jobs' traces (with an equal share of the call's ``seconds``)
        and move each job on; returns those that completed the step."""
        for job in jobs:
            timings = job.trace.timings
            timings[PHASE[step]] = timings.get(PHASE[step], 0.0) + seconds / len(jobs)
        if step in ("caption", "direct", "answer"):
            return self._apply_looks(step, jobs, result, seconds / len(jobs), health)
        self._record_form(step, jobs)
        if step == "judge":
            result, samples = result
            progressed = self._apply_judge(jobs, result, samples)
        else:
            progressed = self._apply_ask(jobs, result)
        failures = [(job, o.infra_error) for job, o in zip(jobs, result) if o.infra_error is not None]
        for job, error in failures:
            self._infra_failure(job, PHASE[step], error)
        health.record([error for _, error in failures], len(jobs) - len(failures))
        return progressed

    def _apply_looks(self, step: Step, jobs: list[Job], outputs: list[Any], share: float,
                     health: Health) -> list[Job]:
        """Captions, direct answers or sub-answers: a job with a failed input gets none. Its own
        fault (an image the processor rejects, an empty reply) stops it (the direct answer's
        only records it: the loop can do without); the infrastructure's leaves it here.
        ``share`` is each job's part of the call's seconds (the direct answer's latency)."""
        phase, progressed, infra, start = PHASE[step], [], [], 0
        for job in jobs:
            count = len(job.trace.rounds[-1].sub_qas) if step == "answer" else 1
            mine, start = list(outputs[start : start + count]), start + count
            error = next((o for o in mine if isinstance(o, Exception)), None)
            if error is None:
                self._take_looks(step, job, mine, share)
                progressed.append(job)
            elif failure_kind(error) == "sample" and step == "direct":
                log.warning("the direct answer failed for a sample: %s: %s", type(error).__name__, one_line(error))
                job.trace.direct = DirectAnswer(question=direct_question_of(job.trace),
                                                error=f"{type(error).__name__}: {one_line(error)}")
                job.step = "ask"
                progressed.append(job)
            elif failure_kind(error) == "sample":
                log.warning("%s failed for a sample: %s: %s", phase, type(error).__name__, one_line(error))
                stop(job, "error", error=f"{phase} failed: {type(error).__name__}: {one_line(error)}")
            else:
                infra.append(error)
                self._infra_failure(job, phase, error)
        health.record(infra, len(jobs) - len(infra))
        return progressed

    def _take_looks(self, step: Step, job: Job, outputs: list[Any], seconds: float) -> None:
        trace = job.trace
        if step == "caption":
            trace.caption = text_of(outputs[0])
            count_answerer_tokens(trace, outputs[0])
            job.step = "direct" if self.agent.settings.direct_answer else "ask"
            return
        if step == "direct":
            self._take_direct(job, outputs[0], seconds)
            return
        for qa, answer in zip(trace.rounds[-1].sub_qas, outputs):
            qa.answer = text_of(answer)
            trace.usage.answerer_calls += 1
            count_answerer_tokens(trace, answer)
        job.step = "judge"

    def _apply_ask(self, jobs: list[Job], outcomes: list[Outcome[list[str]]]) -> list[Job]:
        asked = []
        for job, outcome in zip(jobs, outcomes):
            trace = job.trace
            if outcome.infra_error is not None:
                account(trace, None, outcome)
                continue
            round_ = Round(index=len(trace.rounds) + 1, forced=len(trace.rounds) + 1 == self.agent.max_rounds)
            trace.rounds.append(round_)
            account(trace, round_, outcome)
            if outcome.value is None:
                repeated = isinstance(outcome.last_error, RepeatedQuestionsError)
                finish_with_best(job, "no_new_questions" if repeated else "questioner_failed")
            else:
                round_.sub_qas = [SubQA(question=q) for q in outcome.value]
                job.step = "answer"
                asked.append(job)
        return asked

    def _take_direct(self, job: Job, reply: Reply, seconds: float) -> None:
        """The answerer's direct answer: recorded, given its signals and calibrated confidence;
        confident enough, it is the answer and no round is needed."""
        trace, sample = job.trace, job.trace.sample
        text = text_of(reply)
        answer, index = read_direct_reply(sample.kind, sample.choices, text)
        signals: dict[str, float] = {}
        probability = probability_of(reply)
        if probability is not None and answer is not None:
            signals["answer_prob"] = probability
        if answer is not None and trace.caption:
            signals["in_caption"] = float(confidence.names(trace.caption, answer))
        trace.direct = direct = DirectAnswer(
            question=direct_question_of(trace), reply=text, answer=answer, choice_index=index, signals=signals,
            input_tokens=tokens_of(reply)[0], output_tokens=tokens_of(reply)[1], latency_s=seconds)
        if answer is not None:
            direct.calibrated = self.agent.settings.calibration.confidence("direct", signals)
        trace.usage.answerer_calls += 1
        count_answerer_tokens(trace, reply)
        job.step = "ask"
        if direct.calibrated is not None and direct.calibrated >= self.agent.confidence_threshold:
            stop(job, "confident", best_candidate(trace))

    def _apply_judge(self, jobs: list[Job], outcomes: list[Outcome[Verdict]],
                     samples: list[list[Outcome[Verdict]]] | None) -> list[Job]:
        judged = []
        for i, (job, outcome) in enumerate(zip(jobs, outcomes)):
            round_ = job.trace.rounds[-1]
            account(job.trace, round_, outcome)
            for vote in samples[i] if samples else []:
                account(job.trace, None, vote)
            if outcome.infra_error is not None:
                continue
            judged.append(job)
            if outcome.value is None:
                finish_with_best(job, "reasoner_failed")
                continue
            round_.verdict = verdict = outcome.value
            self._weigh(job.trace, verdict, outcome, samples[i] if samples else None)
            job.step = "ask"
            best = best_candidate(job.trace)
            if best is not None and best.confidence is not None and best.confidence >= self.agent.confidence_threshold:
                stop(job, "confident", best)
            elif round_.forced:
                finish_with_best(job, "max_rounds")
        return judged

    def _weigh(self, trace: Trace, verdict: Verdict, outcome: Outcome[Verdict],
               votes: list[Outcome[Verdict]] | None) -> None:
        """A verdict's signals (confidence.py) and its calibrated confidence."""
        if verdict.answer is None:
            return  # undecided: not a candidate
        signals = {"stated": verdict.confidence}
        written = choice_letter(verdict.choice_index) if (
            trace.sample.kind == "multiple_choice" and verdict.choice_index is not None) else verdict.answer
        probability = confidence.answer_probability(outcome.logprobs, written)
        if probability is not None:
            signals["answer_prob"] = probability
        direct = trace.direct
        if direct is not None and direct.answer is not None:
            if "answer_prob" in direct.signals:
                signals["direct_prob"] = direct.signals["answer_prob"]
            same = (direct.choice_index == verdict.choice_index if verdict.choice_index is not None
                    else confidence.agrees(direct.answer, verdict.answer))
            signals["agrees_direct"] = float(same)
        sub_answers = [qa.answer for r in trace.rounds for qa in r.sub_qas if qa.answer]
        support = confidence.share_naming(sub_answers, verdict.answer)
        if support is not None:
            signals["agrees_sub"] = support
        if trace.caption:
            signals["in_caption"] = float(confidence.names(trace.caption, verdict.answer))
        if votes:
            verdict.votes = [v.value.answer for v in votes if v.value is not None and v.value.answer is not None]
            share = confidence.majority_share(verdict.votes, verdict.answer)
            if share is not None:
                signals["votes"] = share
        verdict.signals = signals
        verdict.calibrated = self.agent.settings.calibration.confidence("verdict", signals)

    def _record_form(self, step: Step, jobs: list[Job]) -> None:
        """Which structured-output form the role of ``step`` took for these samples."""
        role = PHASE[step]
        form = (self.agent.questioner if step == "ask" else self.agent.reasoner).structured_form
        if form:
            for job in jobs:
                job.trace.settings.setdefault("structured_form", {})[role] = form

    def _infra_failure(self, job: Job, phase: str, error: Exception) -> None:
        """The infrastructure failed this job's step: try it again later, a bounded number of
        times, then stop without an answer. A service that is down stops the run."""
        if failure_kind(error) == "down":
            raise down_error(phase, error) from error
        job.infra_failures += 1
        message = f"{phase} failed: {type(error).__name__}: {one_line(error)}"
        if job.infra_failures > self.agent.settings.infra_retries:
            log.warning("%s; giving up on the sample after %d tries", message, job.infra_failures)
            stop(job, "infrastructure", error=message)
        else:
            log.info("%s; the sample will try again", message)


def down_error(phase: str, error: Exception) -> Exception:
    """The exception that stops the run: ours as it is, a foreign one as one line."""
    if isinstance(error, IdealAgentError) or failure_kind(error) != "down":
        return error
    return ServiceDownError(f"{phase} failed: {type(error).__name__}: {one_line(error)}")


def account(trace: Trace, round_: Round | None, outcome: Outcome[Any]) -> None:
    """Add a role's model calls, tokens and failures to the trace."""
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


@dataclass(frozen=True)
class Candidate:
    """A possible final answer: the direct answer, or a round's verdict."""

    answer: str
    confidence: float | None  # calibrated; None when the calibration gives it none
    source: Literal["direct", "round"]
    round: int | None = None
    choice_index: int | None = None


def best_candidate(trace: Trace) -> Candidate | None:
    """The candidate with the highest calibrated confidence (the later one on a tie); one
    without a confidence only when no other has one (a last resort, never a winner)."""
    found: list[tuple[bool, float, int, Candidate]] = []
    direct = trace.direct
    if direct is not None and direct.answer is not None:
        found.append((direct.calibrated is not None, direct.calibrated or 0.0, 0,
                      Candidate(direct.answer, direct.calibrated, "direct", None, direct.choice_index)))
    for round_ in trace.rounds:
        verdict = round_.verdict
        if verdict is not None and verdict.answer is not None:
            found.append((verdict.calibrated is not None, verdict.calibrated or 0.0, round_.index,
                          Candidate(verdict.answer, verdict.calibrated, "round", round_.index,
                                    verdict.choice_index)))
    return max(found, key=lambda c: c[:3])[3] if found else None


def direct_question_of(trace: Trace) -> str:
    """The main question of ``trace`` as the answerer is asked it directly."""
    sample = trace.sample
    return direct_question(sample.kind, sample.question, sample.choices)


def stop(job: Job, reason: str, answer: Candidate | None = None, *, error: str | None = None) -> None:
    """End the job's sample with a stop reason (and its answer, or the error)."""
    trace = job.trace
    trace.stop_reason, trace.error = reason, error
    if answer is not None:
        trace.answer, trace.confidence = answer.answer, answer.confidence
        trace.answer_source, trace.answer_round = answer.source, answer.round
        trace.choice_index = answer.choice_index
    trace.latency_s = time.perf_counter() - job.started


def finish_with_best(job: Job, reason: str) -> None:
    """Stop below the threshold with the candidate of highest calibrated confidence (if any):
    a forced last-round guess at 0.1 should not override an earlier answer at 0.6."""
    stop(job, reason, best_candidate(job.trace))
