"""What a sample does next: the whole loop for one sample, one step at a time.

::

    caption ──► direct answer ──► confident? ──yes──► stop: confident
                                     │ no (zoom=on: always)
                                     ▼
                           look closer (zoom, looking/closer.py): views of the picture, scored,
                           and the main question asked of the best; repeated until the search
                           is done or the look budget is spent ──► best candidate confident? ──yes──► stop
                                     │ no, or no search (zoom off, or no detail to find)
                ┌────────────────────┘
                ▼
     ┌──► the calibration's fitted run: this round never fixed a wrong answer? ──yes──► stop: rounds_do_not_pay
     │          │ no                                                  (best candidate kept)
     │          ▼
     │    ask (questioner) ──nothing new──► stop: no_new_questions (best candidate kept)
     │          │          ──unusable────► stop: questioner_failed (best candidate kept)
     │          ▼
     │     answer (answerer) ──none answered──► stop: answerer_failed (best candidate kept)
     │          ▼
     │     judge (reasoner) ──unusable──► stop: reasoner_failed (best candidate kept)
     │          ▼
     │     best candidate confident? ──yes──► stop: confident
     │     the last round? ──yes──► stop: max_rounds (best candidate kept)
     └──no──┘

A candidate is the direct answer or a round's verdict; the final answer is the one with the
highest calibrated confidence (calibration.py), and only a confidence measured from signals,
never a calibration's prior, stops the loop early. Failures, by whose they are (errors.py):

- the sample's own (an unreadable image, an empty reply): recorded; the sample goes on without
  that piece where it can, and stops with its best candidate where it cannot. A failure never
  throws away a candidate already found.
- the infrastructure's (retries exhausted, out of memory): the sample stays at its step and
  tries it again, up to ``infra_retries`` more times for that step; then it stops with
  ``infrastructure`` and no answer (not a result: the eval runner leaves it to the rerun).
- a service that is down: raised; the run stops.

Each step is a ``StepSpec``: the model that serves it and its batched call (``calls.py``), and
here, what its result means for one sample; ``candidates.py`` ranks the candidates and keeps
the trace's accounts. The agent's drivers (agent.py) decide only when
calls run: the pipelined and the lock-step loop drive this same machine.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from idealagent import confidence
from idealagent.answerers import Answer, Reply, probability_of, text_of, tokens_of
from idealagent.candidates import Candidate, account, best_candidate, count_answerer_tokens, sub_answers
from idealagent.direct import direct_question, read_direct_reply
from idealagent.errors import IdealAgentError, ServiceDownError, failure_kind, one_line
from idealagent.events import (DirectAnswered, Event, Looked, RoundAnswered, RoundAsked, RoundJudged, SampleFinished,
                               StepFailed)
from idealagent.looking.boxes import Box, describe_box
from idealagent.looking.closer import LookCloser, about_target, choose_mode, has_detail, target_of, view_size_of
from idealagent.looking.views import Picture
from idealagent.parsing import choice_letter
from idealagent.roles import Outcome, RepeatedQuestionsError
from idealagent.trace import DirectAnswer, Look, Round, StopReason, SubQA, Trace, Verdict

if TYPE_CHECKING:
    from PIL.Image import Image

    from idealagent.settings import AgentSettings

log = logging.getLogger(__name__)


class Step(str, Enum):
    """A sample's steps, in the order it first takes them. The value is the step's name in the
    trace (its timings) and in events."""

    CAPTION = "caption"
    DIRECT = "direct"
    LOOK = "look"
    ASK = "questioner"
    ANSWER = "answerer"
    JUDGE = "reasoner"


@dataclass
class Job:
    """A sample in flight: its trace plus what the trace does not store."""

    trace: Trace
    image: Image | None = None
    index: int = 0  # position in the caller's input, to restore order
    started: float = field(default_factory=time.perf_counter)
    step: Step = Step.CAPTION  # what the sample needs next
    tries: int = 0  # infrastructure failures of the current step so far
    queued: bool = False  # waiting for, or in, a model call (the pipelined loop)
    closer: LookCloser | None = None  # the search, while the sample is looking closer
    focus: Image | None = None  # the view the search found best: sub-questions about the target see it
    sights: dict[str, Any] = field(default_factory=dict)  # what each seeing role is shown (sight.py), made once


class Machine:
    """The loop for samples run under one agent's settings."""

    def __init__(self, settings: AgentSettings, answerer: Any = None) -> None:
        self.settings = settings
        self.answerer = answerer  # what the search asks (its capabilities choose the search mode)

    def apply(self, step: Step, jobs: list[Job], results: list[Any], seconds: float) -> list[Event]:
        """What one batched call of ``step`` returned (a result per job) means for each job:
        record it, move the job to its next step or stop it; returns what happened."""
        events: list[Event] = []
        for job, result in zip(jobs, results):
            timings = job.trace.timings
            timings[step.value] = timings.get(step.value, 0.0) + seconds / len(jobs)
            calls = job.trace.usage.steps
            calls[step.value] = calls.get(step.value, 0) + step_calls(step, result)
            error = infrastructure_error(step, result)
            if error is not None:
                events.append(self._failed(job, step, error, result))
            else:
                job.tries = 0
                events += TRANSITIONS[step](self, job, result, seconds / len(jobs))
            if job.trace.done:
                events.append(SampleFinished(job.trace))
        return events

    # -- the steps, in order ------------------------------------------------------------------

    def captioned(self, job: Job, reply: Reply | Exception, seconds: float) -> list[Event]:
        """The caption is the reasoner's first evidence; an image the answerer rejects ends the
        sample (no later step could look at it either)."""
        if isinstance(reply, Exception):
            return self._stop(job, "error", error=_failure("caption", reply))
        job.trace.caption = text_of(reply)
        count_answerer_tokens(job.trace, reply)
        job.step = Step.DIRECT if self.settings.direct_answer else Step.ASK
        return []

    def answered_directly(self, job: Job, reply: Reply | Exception, seconds: float) -> list[Event]:
        """The answerer's own answer to the main question: evidence, a candidate, and when its
        measured confidence reaches the threshold, the answer with no round at all."""
        trace = job.trace
        question = direct_question_of(trace, self.settings)
        if isinstance(reply, Exception):  # the loop can do without it
            _failure("the direct answer", reply)
            trace.direct = DirectAnswer(question=question, error=f"{type(reply).__name__}: {one_line(reply)}")
            return [DirectAnswered(trace, trace.direct), *self._look_or_ask(job)]
        sample = trace.sample
        text = text_of(reply)
        answer, index = read_direct_reply(sample.kind, sample.choices, text)
        trace.direct = direct = DirectAnswer(
            question=question, reply=text, answer=answer, choice_index=index,
            input_tokens=tokens_of(reply)[0], output_tokens=tokens_of(reply)[1], latency_s=seconds)
        if isinstance(reply, Answer) and reply.options:  # chosen by likelihood: every option's score
            direct.option_logprobs = [option.logprob for option in reply.options]
            direct.option_tokens = [option.tokens for option in reply.options]
        trace.usage.answerer_calls += 1
        count_answerer_tokens(trace, reply)
        if answer is not None:
            probability = probability_of(reply)
            if probability is not None:
                direct.signals["answer_prob"] = probability
            if trace.caption:
                direct.signals["in_caption"] = float(confidence.names(trace.caption, answer))
            self._calibrate_direct(trace)
        events: list[Event] = [DirectAnswered(trace, direct)]
        best = best_candidate(trace, self.settings)
        if best is not None and self._confident(best) and self.settings.zoom != "on":
            return events + self._stop(job, "confident", best)
        return events + self._look_or_ask(job)

    def looked(self, job: Job, replies: list[Reply | Exception], seconds: float) -> list[Event]:
        """The answerer's replies about views: recorded in the trace's search, which then asks
        more, or is done and the sample goes on to the rounds (or stops, confident)."""
        trace, closer = job.trace, job.closer
        assert closer is not None
        for reply in replies:
            if not isinstance(reply, Exception):
                trace.usage.answerer_calls += 1
                count_answerer_tokens(trace, reply)
        events: list[Event] = [Looked(trace, closer.record(replies))]
        if not closer.done:
            return events
        job.closer, job.focus = None, closer.focus
        self._read_look_answer(trace, closer.answer_look())
        best = best_candidate(trace, self.settings)
        if best is not None and self._confident(best):
            return events + self._stop(job, "confident", best)
        return events + self._next_round(job)

    def _read_look_answer(self, trace: Trace, look: Look | None) -> None:
        """The main question's answer on the best view, read as the direct answer is: a candidate."""
        search = trace.search
        if search is None or look is None:
            return
        sample = trace.sample
        answer, index = read_direct_reply(sample.kind, sample.choices, look.reply)
        search.answer = found = DirectAnswer(question=look.question, reply=look.reply, answer=answer,
                                             choice_index=index)
        if answer is not None:
            if look.probability is not None:
                found.signals["answer_prob"] = look.probability
            if search.presence is not None:
                found.signals["found"] = search.presence
            found.calibrated = self.settings.calibration.confidence("look", found.signals)

    def _look_or_ask(self, job: Job) -> list[Event]:
        """Look closer when the zoom setting and the picture call for it, else on to round 1."""
        zoom, trace = self.settings.zoom, job.trace
        if zoom == "off" or job.image is None or self.answerer is None:
            return self._next_round(job)
        want = view_size_of(self.answerer)
        picture = Picture(trace.sample.image if trace.sample.image is not None else job.image, job.image)
        if zoom == "auto" and not has_detail(picture.size, want):
            return self._next_round(job)
        mode, convention = choose_mode(self.answerer, self.settings.look_mode)
        closer = LookCloser(picture, want, mode, target_of(trace.sample.question),
                            direct_question_of(trace, self.settings),
                            self.settings.look_budget, convention)
        if closer.done:
            return self._next_round(job)
        trace.search, job.closer, job.step = closer.search, closer, Step.LOOK
        return []

    def asked(self, job: Job, outcome: Outcome[list[str]], seconds: float) -> list[Event]:
        """New sub-questions open a round; none (nothing new, or no usable reply) end the
        sample with its best candidate, and no empty round is kept."""
        trace = job.trace
        account(trace, outcome)
        if outcome.value is None:
            trace.failures += outcome.failures
            repeated = isinstance(outcome.last_error, RepeatedQuestionsError)
            return self._finish(job, "no_new_questions" if repeated else "questioner_failed")
        index = len(trace.rounds) + 1
        round_ = Round(index=index, forced=index == self.settings.max_rounds, failures=list(outcome.failures),
                       sub_qas=[self._sub_qa(job, q) for q in outcome.value])
        trace.rounds.append(round_)
        job.step = Step.ANSWER
        return [RoundAsked(trace, round_)]

    @staticmethod
    def _sub_qa(job: Job, question: str) -> SubQA:
        """A sub-question, asked of the search's best view when it is about the search's target."""
        search = job.trace.search
        if job.focus is None or search is None or search.best is None or not about_target(question, search.target):
            return SubQA(question=question)
        return SubQA(question=question, box=list(search.best), where=describe_box(Box(*search.best), search.size))

    def answered(self, job: Job, replies: list[Reply | Exception], seconds: float) -> list[Event]:
        """The sub-answers; one the answerer failed on is recorded as failed and left out of
        the evidence. With none answered the round cannot be judged."""
        trace, round_ = job.trace, job.trace.rounds[-1]
        failed = [reply for reply in replies if isinstance(reply, Exception)]
        if failed:  # one line for the sample, not one per sub-question
            log.warning("answerer failed on %d of %d sub-questions of a sample: %s: %s", len(failed), len(replies),
                        type(failed[0]).__name__, one_line(failed[0]))
        for qa, reply in zip(round_.sub_qas, replies):
            if isinstance(reply, Exception):
                qa.error = f"answerer failed: {type(reply).__name__}: {one_line(reply)}"
                continue
            qa.answer = text_of(reply)
            trace.usage.answerer_calls += 1
            count_answerer_tokens(trace, reply)
        if not any(qa.answer for qa in round_.sub_qas):
            return self._finish(job, "answerer_failed", error=round_.sub_qas[0].error)
        job.step = Step.JUDGE
        return [RoundAnswered(trace, round_)]

    def judged(self, job: Job, result: tuple[Outcome[Verdict], list[Outcome[Verdict]] | None],
               seconds: float) -> list[Event]:
        """The verdict: weighed into a candidate; the best candidate confident, or the last
        round judged, ends the sample, else it asks again."""
        outcome, votes = result
        trace, round_ = job.trace, job.trace.rounds[-1]
        account(trace, outcome, round_)
        for vote in votes or []:
            account(trace, vote)
        if outcome.value is None:
            return self._finish(job, "reasoner_failed")
        round_.verdict = outcome.value
        self._weigh(trace, round_.verdict, outcome, votes)
        self._calibrate_direct(trace)  # the sub-answers now speak for or against it too
        events: list[Event] = [RoundJudged(trace, round_)]
        best = best_candidate(trace, self.settings)
        if best is not None and self._confident(best):
            return events + self._stop(job, "confident", best)
        if round_.forced:
            return events + self._finish(job, "max_rounds")
        return events + self._next_round(job)

    def _next_round(self, job: Job) -> list[Event]:
        """On to the next round's questions, unless the calibration's fitted run says that
        round never turned a wrong answer into a right one: then stop with the best candidate."""
        index = len(job.trace.rounds) + 1
        if not self.settings.calibration.round_pays(index) and best_candidate(job.trace, self.settings) is not None:
            return self._finish(job, "rounds_do_not_pay")
        job.step = Step.ASK
        return []

    # -- candidates ---------------------------------------------------------------------------

    def _confident(self, candidate: Candidate) -> bool:
        return candidate.measured and candidate.confidence >= self.settings.confidence_threshold

    def _calibrate_direct(self, trace: Trace) -> None:
        """The direct answer's calibrated confidence, from its signals so far."""
        direct = trace.direct
        if direct is None or direct.answer is None:
            return
        support = confidence.share_naming(sub_answers(trace), direct.answer)
        if support is not None:
            direct.signals["agrees_sub"] = support
        direct.calibrated = self.settings.calibration.confidence("direct", direct.signals)

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
        support = confidence.share_naming(sub_answers(trace), verdict.answer)
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
        verdict.calibrated = self.settings.calibration.confidence("verdict", signals)

    # -- stopping -----------------------------------------------------------------------------

    def _finish(self, job: Job, reason: StopReason, *, error: str | None = None) -> list[Event]:
        """Stop below the threshold with the best candidate, if any: a forced last-round guess
        at 0.1 must not override an earlier answer at 0.6."""
        return self._stop(job, reason, best_candidate(job.trace, self.settings), error=error)

    def _stop(self, job: Job, reason: StopReason, answer: Candidate | None = None, *,
              error: str | None = None) -> list[Event]:
        trace = job.trace
        trace.stop_reason, trace.error = reason, error
        if answer is not None:
            trace.answer, trace.confidence, trace.choice_index = answer.answer, answer.confidence, answer.choice_index
            trace.answer_source, trace.answer_round = answer.source, answer.round
        trace.latency_s = time.perf_counter() - job.started
        return []

    def _failed(self, job: Job, step: Step, error: Exception, result: Any) -> StepFailed:
        """The infrastructure failed this job's step: it stays there to try again, a bounded
        number of times, then stops without an answer. A service that is down stops the run."""
        if failure_kind(error) == "down":
            raise down_error(step, error) from error
        outcome = role_outcome(step, result)
        if outcome is not None:  # the calls the role made still count
            account(job.trace, outcome)
        job.tries += 1
        message = f"{step.value} failed: {type(error).__name__}: {one_line(error)}"
        retry = job.tries <= self.settings.infra_retries
        if retry:
            log.info("%s; the sample will try again", message)
        else:
            log.warning("%s; giving up on the sample after %d tries", message, job.tries)
            self._stop(job, "infrastructure", error=message)
        return StepFailed(job.trace, step.value, message, job.tries, retry)


TRANSITIONS = {Step.CAPTION: Machine.captioned, Step.DIRECT: Machine.answered_directly, Step.LOOK: Machine.looked,
               Step.ASK: Machine.asked,
               Step.ANSWER: Machine.answered, Step.JUDGE: Machine.judged}


def steps_done(job: Job) -> int:
    """About how many model steps ``job`` has taken (caption, direct answer, then three a round):
    the fewer, the more it has left."""
    rounds = len(job.trace.rounds)
    if job.step is Step.ASK:
        return 2 + 3 * rounds
    if job.step is Step.ANSWER:
        return 3 * rounds
    if job.step is Step.JUDGE:
        return 3 * rounds + 1
    return {Step.CAPTION: 0, Step.DIRECT: 1, Step.LOOK: 2}[job.step]


def role_outcome(step: Step, result: Any) -> Outcome[Any] | None:
    """The LLM role's Outcome in a job's result (the questioner's, or the reasoner's verdict
    beside its votes); None for the answerer's steps."""
    if step is Step.ASK:
        return result
    return result[0] if step is Step.JUDGE else None


def step_calls(step: Step, result: Any) -> int:
    """Model calls behind one job's result of ``step``: the role's tries (and the reasoner's
    votes), or one answerer call per reply."""
    outcome = role_outcome(step, result)
    if outcome is not None:
        votes = result[1] if step is Step.JUDGE else None
        return outcome.calls + sum(vote.calls for vote in votes or [])
    return len(result) if isinstance(result, list) else 1


def infrastructure_error(step: Step, result: Any) -> Exception | None:
    """The failure in a job's result that is not the sample's own, if any."""
    outcome = role_outcome(step, result)
    if outcome is not None:
        return outcome.infra_error
    replies = result if isinstance(result, list) else [result]
    return next((r for r in replies if isinstance(r, Exception) and failure_kind(r) != "sample"), None)


def down_error(step: Step | str, error: Exception) -> Exception:
    """The exception that stops the run: ours as it is, a foreign one as one line."""
    if isinstance(error, IdealAgentError) or failure_kind(error) != "down":
        return error
    name = step.value if isinstance(step, Step) else step
    return ServiceDownError(f"{name} failed: {type(error).__name__}: {one_line(error)}")


def direct_question_of(trace: Trace, settings: AgentSettings) -> str:
    """The main question of ``trace`` as the answerer is asked it directly."""
    sample = trace.sample
    return direct_question(sample.kind, sample.question, sample.choices, settings.option_scoring)


def _failure(what: str, error: Exception) -> str:
    log.warning("%s failed for a sample: %s: %s", what, type(error).__name__, one_line(error))
    return f"{what} failed: {type(error).__name__}: {one_line(error)}"
