"""The IdealGPT loop: ask sub-questions, answer them from the image, judge, repeat if unsure.

``IdealAgent._advance`` is the whole algorithm. It runs a pool of samples together: each pass
makes one caption call for samples that just joined, one questioner call, one answerer call and
one reasoner call for every sample at that step, then finished samples leave and waiting ones
join. ``run``, ``stream`` and ``run_batch`` are thin views over it.

A step that fails because of the infrastructure (retries exhausted, out of memory) is not the
sample's result: the sample stays at that step and tries it again in a later pass, a bounded
number of times (``infra_retries``); a service that is down stops the whole run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from PIL.Image import Image

from idealagent.answerers import Answerer, Reply, answer_each, caption_each, tokens_of
from idealagent.errors import (
    IdealAgentError,
    InfrastructureError,
    ServiceDownError,
    failure_kind,
    one_line,
)
from idealagent.images import load_image
from idealagent.roles import Outcome, Questioner, Reasoner, RepeatedQuestionsError
from idealagent.settings import AgentSettings
from idealagent.trace import Round, Sample, SubQA, TaskKind, Trace

log = logging.getLogger(__name__)

Step = Literal["caption", "ask", "answer", "judge"]


@dataclass
class _Job:
    """A sample in flight: its trace plus what the trace does not store."""

    trace: Trace
    image: Image | None = None
    index: int = 0  # position in the caller's input, to restore order
    started: float = field(default_factory=time.perf_counter)
    step: Step = "caption"  # what the sample needs next
    infra_failures: int = 0  # steps that failed on the infrastructure so far


@dataclass
class _Health:
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


class IdealAgent:
    """Iterative visual question answering: questioner → answerer → reasoner, until confident."""

    def __init__(
        self,
        llm: BaseChatModel,
        answerer: Answerer,
        *,
        questioner_llm: BaseChatModel | None = None,
        reasoner_llm: BaseChatModel | None = None,
        settings: AgentSettings | None = None,
        prompts_dir: str | None = None,
        **overrides: Any,
    ) -> None:
        """``settings``, or keyword arguments named like its fields (``max_rounds=2``), set the
        loop; ``AgentSettings`` documents each one, its default and its range."""
        self.settings = (settings or AgentSettings()).replace(**overrides)
        self.answerer = answerer
        # Where the models came from (a preset's name and model ids), recorded beside the settings.
        self.origin: dict[str, Any] = {}
        options: dict[str, Any] = {"attempts": self.settings.attempts, "structured": self.settings.structured,
                                   "prompts_dir": prompts_dir}
        self.questioner = Questioner(questioner_llm or llm, max_sub_questions=self.settings.max_sub_questions,
                                     **options)
        self.reasoner = Reasoner(reasoner_llm or llm, **options)

    @property
    def record(self) -> dict[str, Any]:
        """What every trace records of how it ran: the settings, the preset and its models."""
        return {**self.settings.record(), **self.origin}

    @property
    def max_rounds(self) -> int:
        """Most rounds a sample may take."""
        return self.settings.max_rounds

    @property
    def confidence_threshold(self) -> float:
        """The confidence at which a verdict stops the loop."""
        return self.settings.confidence_threshold

    @property
    def batch_size(self) -> int:
        """Samples in flight together."""
        return self.settings.batch_size

    # -- public API ---------------------------------------------------------------------------

    def run(self, image: Any, question: str, *, choices: Sequence[str] | None = None,
            kind: TaskKind | None = None) -> Trace:
        """Answer one question about one image. Raises ImageError if the image can't be read,
        and InfrastructureError if a model service failed (ServiceDownError if it is down)."""
        *_, trace = self.stream(image, question, choices=choices, kind=kind)
        return trace

    def stream(self, image: Any, question: str, *, choices: Sequence[str] | None = None,
               kind: TaskKind | None = None, partial: bool = False) -> Iterator[Round | Trace]:
        """Yield each Round as it completes, then the finished Trace.

        With ``partial=True`` the current Round is also yielded after its sub-questions are
        asked and after they are answered (the same object, filled in further each time).
        """
        # Built before the generator starts, so bad input raises here, not at the first next().
        sample = Sample(image=image, question=question, choices=list(choices) if choices else None, kind=kind)
        job = _Job(Trace(sample=sample, settings=self.record), load_image(image))
        return self._stream_job(job, partial)

    def _stream_job(self, job: _Job, partial: bool) -> Iterator[Round | Trace]:
        rounds = job.trace.rounds
        for phase, jobs in self._advance(iter([job])):
            if jobs and (phase == "judged" or partial and phase in ("asked", "answered")):
                yield rounds[-1]
            elif jobs and phase == "finished" and rounds and rounds[-1].verdict is None:
                yield rounds[-1]  # a round cut short by a failure still gets shown
        if job.trace.stop_reason == "infrastructure":  # not a result: no trace to show for it
            raise InfrastructureError(job.trace.error or "a model service kept failing")
        yield job.trace

    def run_batch(self, samples: Iterable[Sample]) -> list[Trace]:
        """Answer many samples, batching every phase; one trace per sample, in input order.

        Raises ServiceDownError (or ModelLoadError) if a model service cannot be used at all.
        """
        jobs = sorted(self._finished_jobs(samples), key=lambda job: job.index)
        return [job.trace for job in jobs]

    def iter_batch(self, samples: Iterable[Sample]) -> Iterator[Trace]:
        """Yield each trace as soon as its sample finishes (pool refill keeps batches full).

        A sample whose image can't be read finishes at once with ``stop_reason="error"``; one
        the infrastructure kept failing on, with ``stop_reason="infrastructure"`` and no answer.
        """
        return (job.trace for job in self._finished_jobs(samples))

    def _finished_jobs(self, samples: Iterable[Sample]) -> Iterator[_Job]:
        jobs = (self._start(sample, index) for index, sample in enumerate(samples))
        for phase, finished in self._advance(jobs):
            if phase == "finished":
                yield from finished

    # -- the loop -----------------------------------------------------------------------------

    def _advance(self, waiting: Iterator[_Job]) -> Iterator[tuple[str, list[_Job]]]:
        """The IdealGPT loop over a pool of samples; yields (phase, jobs) after every phase.

        Each pass moves every active sample one step on from where it is: a sample whose step
        failed on the infrastructure is still at that step, and tries it again in this pass.
        """
        active: list[_Job] = []
        health = _Health(self.settings.down_after)
        while True:
            yield "finished", self._fill(active, waiting)  # unreadable images finish at once
            if not active:
                return
            self._caption(_at(active, "caption"), health)
            asked = self._ask(_at(active, "ask"), health)  # a new Round with fresh sub-questions
            yield "asked", asked
            answered = self._answer(_at(active, "answer"), health)  # all sub-questions at once
            yield "answered", answered
            judged = self._judge(_at(active, "judge"), health)  # stop if confident or last round
            yield "judged", judged
            yield "finished", [job for job in active if job.trace.done]
            active[:] = [job for job in active if not job.trace.done]

    def _fill(self, active: list[_Job], waiting: Iterator[_Job]) -> list[_Job]:
        """Top the pool up to ``batch_size`` from ``waiting``; returns those that finished on
        arrival (unreadable images), which take no place in the pool."""
        finished: list[_Job] = []
        while len(active) < self.batch_size and (job := next(waiting, None)) is not None:
            (finished if job.trace.done else active).append(job)
        return finished

    # -- phases -------------------------------------------------------------------------------

    def _start(self, sample: Sample, index: int) -> _Job:
        job = _Job(Trace(sample=sample, settings=self.record), index=index)
        try:
            job.image = load_image(sample.image)
        except IdealAgentError as exc:
            _stop(job, "error", error=str(exc))
        return job

    def _caption(self, jobs: list[_Job], health: _Health) -> None:
        captions = self._look("caption", jobs, lambda job: [job.image], caption_each, health)
        for job in jobs:
            if id(job) in captions:
                [caption] = captions[id(job)]
                job.trace.caption = str(caption)
                _count_answerer_tokens(job.trace, caption)
                job.step = "ask"

    def _ask(self, jobs: list[_Job], health: _Health) -> list[_Job]:
        traces = [job.trace for job in jobs]
        outcomes = self._timed("questioner", jobs, lambda: self.questioner.ask(traces)) if jobs else []
        self._record_forms(traces)
        asked = []
        for job, outcome in zip(jobs, outcomes):
            trace = job.trace
            if outcome.infra_error is not None:
                _account(trace, None, outcome)
                continue
            round_ = Round(index=len(trace.rounds) + 1, forced=len(trace.rounds) + 1 == self.max_rounds)
            trace.rounds.append(round_)
            _account(trace, round_, outcome)
            if outcome.value is None:
                repeated = isinstance(outcome.last_error, RepeatedQuestionsError)
                _finish_with_best_verdict(job, "no_new_questions" if repeated else "questioner_failed")
            else:
                round_.sub_qas = [SubQA(question=q) for q in outcome.value]
                job.step = "answer"
                asked.append(job)
        self._check_roles("questioner", jobs, outcomes, health)
        return asked

    def _answer(self, jobs: list[_Job], health: _Health) -> list[_Job]:
        def requests(job: _Job) -> list[tuple[Image, str]]:
            return [(job.image, qa.question) for qa in job.trace.rounds[-1].sub_qas]

        answers = self._look("answerer", jobs, requests, answer_each, health)
        for job in jobs:
            if id(job) in answers:
                for qa, answer in zip(job.trace.rounds[-1].sub_qas, answers[id(job)]):
                    qa.answer = str(answer)
                    job.trace.usage.answerer_calls += 1
                    _count_answerer_tokens(job.trace, answer)
                job.step = "judge"
        return [job for job in jobs if id(job) in answers]

    def _judge(self, jobs: list[_Job], health: _Health) -> list[_Job]:
        traces = [job.trace for job in jobs]
        final = [trace.rounds[-1].forced for trace in traces]
        outcomes = self._timed("reasoner", jobs, lambda: self.reasoner.judge(traces, final)) if jobs else []
        self._record_forms(traces)
        judged = []
        for job, outcome in zip(jobs, outcomes):
            round_ = job.trace.rounds[-1]
            _account(job.trace, round_, outcome)
            if outcome.infra_error is not None:
                continue
            judged.append(job)
            if outcome.value is None:
                _finish_with_best_verdict(job, "reasoner_failed")
                continue
            round_.verdict = verdict = outcome.value
            job.step = "ask"
            if verdict.confidence >= self.confidence_threshold:
                _stop(job, "confident", answer=verdict.answer, confidence=verdict.confidence)
            elif round_.forced:
                _finish_with_best_verdict(job, "max_rounds")
        self._check_roles("reasoner", jobs, outcomes, health)
        return judged

    def _record_forms(self, traces: list[Trace]) -> None:
        """Which structured-output form each role's model took (known after its first call)."""
        forms = {"questioner": self.questioner.structured_form, "reasoner": self.reasoner.structured_form}
        known = {role: form for role, form in forms.items() if form}
        for trace in traces:
            if known:
                trace.settings["structured_form"] = known

    def _check_roles(self, phase: str, jobs: list[_Job], outcomes: list[Outcome[Any]], health: _Health) -> None:
        failures = [(job, o.infra_error) for job, o in zip(jobs, outcomes) if o.infra_error is not None]
        for job, error in failures:
            self._infra_failure(job, phase, error)
        health.record([error for _, error in failures], len(jobs) - len(failures))

    def _look(self, phase: str, jobs: list[_Job], inputs_of: Callable[[_Job], list[Any]],
              call_each: Callable[[Any, list[Any]], list[Any]], health: _Health) -> dict[int, list[Any]]:
        """One answerer call for all jobs' inputs; each job's results keyed by id(job).

        A job with a failed input gets none: its own fault (an image the processor rejects, an
        empty reply) stops it with the error recorded; the infrastructure's leaves it at this
        step to try again. A service that is down stops the run.
        """
        if not jobs:
            return {}
        inputs = [x for job in jobs for x in inputs_of(job)]
        try:
            outputs = self._timed(phase, jobs, lambda: call_each(self.answerer, inputs))
        except Exception as exc:
            raise _down(phase, exc) from exc
        results: dict[int, list[Any]] = {}
        infra: list[Exception] = []
        start = 0
        for job in jobs:
            count = len(inputs_of(job))
            mine, start = list(outputs[start : start + count]), start + count
            error = next((o for o in mine if isinstance(o, Exception)), None)
            if error is None:
                results[id(job)] = mine
            elif failure_kind(error) == "sample":
                log.warning("%s failed for a sample: %s: %s", phase, type(error).__name__, one_line(error))
                _stop(job, "error", error=f"{phase} failed: {type(error).__name__}: {one_line(error)}")
            else:
                infra.append(error)
                self._infra_failure(job, phase, error)
        health.record(infra, len(jobs) - len(infra))
        return results

    def _infra_failure(self, job: _Job, phase: str, error: Exception) -> None:
        """The infrastructure failed this job's step: try it again later, a bounded number of
        times, then stop without an answer. A service that is down stops the run."""
        if failure_kind(error) == "down":
            raise _down(phase, error) from error
        job.infra_failures += 1
        message = f"{phase} failed: {type(error).__name__}: {one_line(error)}"
        if job.infra_failures > self.settings.infra_retries:
            log.warning("%s; giving up on the sample after %d tries", message, job.infra_failures)
            _stop(job, "infrastructure", error=message)
        else:
            log.info("%s; the sample will try again", message)

    def _timed(self, phase: str, jobs: list[_Job], call: Any) -> Any:
        """Run one batched call; each job is charged an equal share of its wall time."""
        started = time.perf_counter()
        try:
            return call()
        finally:
            share = (time.perf_counter() - started) / max(len(jobs), 1)
            for job in jobs:
                job.trace.timings[phase] = job.trace.timings.get(phase, 0.0) + share


def _at(jobs: list[_Job], step: Step) -> list[_Job]:
    return [job for job in jobs if job.step == step and not job.trace.done]


def _down(phase: str, error: Exception) -> Exception:
    """The exception that stops the run: ours as it is, a foreign one as one line."""
    if isinstance(error, IdealAgentError) or failure_kind(error) != "down":
        return error
    return ServiceDownError(f"{phase} failed: {type(error).__name__}: {one_line(error)}")


def _account(trace: Trace, round_: Round | None, outcome: Outcome[Any]) -> None:
    if round_ is not None:
        round_.failures += outcome.failures
    trace.usage.llm_calls += outcome.calls
    trace.usage.llm_input_tokens += outcome.input_tokens
    trace.usage.llm_output_tokens += outcome.output_tokens


def _count_answerer_tokens(trace: Trace, answer: Reply) -> None:
    input_tokens, output_tokens = tokens_of(answer)
    trace.usage.answerer_input_tokens += input_tokens
    trace.usage.answerer_output_tokens += output_tokens


def _stop(job: _Job, reason: str, *, answer: str | None = None, confidence: float | None = None,
          error: str | None = None) -> None:
    trace = job.trace
    trace.stop_reason, trace.answer, trace.confidence, trace.error = reason, answer, confidence, error
    trace.latency_s = time.perf_counter() - job.started


def _finish_with_best_verdict(job: _Job, reason: str) -> None:
    """Stop below the threshold with the most confident answer any round gave (if any): a
    forced last-round guess at 0.1 should not override an earlier answer at 0.6."""
    verdict = job.trace.best_verdict
    _stop(job, reason, answer=verdict.answer if verdict else None,
          confidence=verdict.confidence if verdict else None)
