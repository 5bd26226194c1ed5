"""The IdealGPT loop: ask sub-questions, answer them from the image, judge, repeat if unsure.

``IdealAgent._advance`` is the whole algorithm. It keeps a pool of up to ``batch_size`` samples
in flight. Each sample goes caption → direct answer → questioner → answerer → reasoner, and
round after round until the best candidate answer's calibrated confidence reaches the threshold
(calibration.py) or the rounds run out; finished samples leave and waiting ones
join. Each sample moves to its next step as soon as its own step returns (scheduler.py sends
each model the requests it has room for), so no model waits at a barrier for the slowest
sample of a phase. ``pipeline=False`` keeps the first design, one batched call per phase for
the whole pool, which gives the same traces. ``run``, ``stream`` and ``run_batch`` are thin
views over the loop; steps.py says what each step does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel

from idealagent.answerers import Answerer
from idealagent.errors import IdealAgentError, InfrastructureError
from idealagent.images import load_image
from idealagent.roles import Questioner, Reasoner
from idealagent.scheduler import Lane, Pipeline, Step
from idealagent.settings import AgentSettings
from idealagent.steps import STEPS, Health, Job, Steps, stop
from idealagent.trace import DirectAnswer, Round, Sample, TaskKind, Trace

log = logging.getLogger(__name__)

# What the loop yields after each step, for stream() and the console.
EVENT = {"caption": "captioned", "direct": "answered_directly", "ask": "asked", "answer": "answered",
         "judge": "judged"}


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
               kind: TaskKind | None = None, partial: bool = False) -> Iterator[DirectAnswer | Round | Trace]:
        """Yield the direct answer (when the agent asks for one) and each Round as it
        completes, then the finished Trace.

        With ``partial=True`` the current Round is also yielded after its sub-questions are
        asked and after they are answered (the same object, filled in further each time).
        """
        # Built before the generator starts, so bad input raises here, not at the first next().
        sample = Sample(image=image, question=question, choices=list(choices) if choices else None, kind=kind)
        job = Job(Trace(sample=sample, settings=self.record), load_image(image))
        return self._stream_job(job, partial)

    def _stream_job(self, job: Job, partial: bool) -> Iterator[DirectAnswer | Round | Trace]:
        rounds = job.trace.rounds
        for phase, jobs in self._advance(iter([job])):
            if jobs and phase == "answered_directly" and job.trace.direct is not None:
                yield job.trace.direct
            elif jobs and (phase == "judged" or partial and phase in ("asked", "answered")):
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

    def _finished_jobs(self, samples: Iterable[Sample]) -> Iterator[Job]:
        jobs = (self._start(sample, index) for index, sample in enumerate(samples))
        for phase, finished in self._advance(jobs):
            if phase == "finished":
                yield from finished

    # -- the loop -----------------------------------------------------------------------------

    def _advance(self, waiting: Iterator[Job]) -> Iterator[tuple[str, list[Job]]]:
        """The IdealGPT loop over a pool of samples; yields (event, jobs) after every step.

        A sample whose step failed on the infrastructure is still at that step, and is sent
        again; a sample that stopped leaves the pool and a waiting one takes its place.
        """
        if not self.settings.pipeline:
            yield from self._advance_in_lock_step(waiting)
            return
        active: list[Job] = []
        health = Health(self.settings.down_after)
        steps = Steps(self)
        lanes, lane_of = self._lanes()
        table = {name: Step(lane, lambda jobs, name=name: steps.call(name, jobs)) for name, lane in lane_of.items()}
        with Pipeline(lanes, table) as pipeline:
            while True:
                yield "finished", self._fill(active, waiting)  # unreadable images finish at once
                if not active:
                    return
                for job in active:
                    if not job.queued:
                        pipeline.put(job.step, job)
                        job.queued = True
                done = pipeline.next()  # the next call to return, of whichever step and model
                for job in done.jobs:
                    job.queued = False
                yield EVENT[done.step], steps.apply(done.step, done.jobs, done.result, done.seconds, health)
                yield "finished", [job for job in active if job.trace.done]
                active[:] = [job for job in active if not job.trace.done]

    def _advance_in_lock_step(self, waiting: Iterator[Job]) -> Iterator[tuple[str, list[Job]]]:
        """The first design: each pass makes one call per step for every sample at that step."""
        active: list[Job] = []
        health = Health(self.settings.down_after)
        steps = Steps(self)
        while True:
            yield "finished", self._fill(active, waiting)
            if not active:
                return
            for step in STEPS:
                jobs = [job for job in active if job.step == step and not job.trace.done]
                if jobs:
                    started = time.perf_counter()
                    result = steps.call(step, jobs)
                    yield EVENT[step], steps.apply(step, jobs, result, time.perf_counter() - started, health)
            yield "finished", [job for job in active if job.trace.done]
            active[:] = [job for job in active if not job.trace.done]

    def _fill(self, active: list[Job], waiting: Iterator[Job]) -> list[Job]:
        """Top the pool up to ``batch_size`` from ``waiting``; returns those that finished on
        arrival (unreadable images), which take no place in the pool."""
        finished: list[Job] = []
        while len(active) < self.batch_size and (job := next(waiting, None)) is not None:
            (finished if job.trace.done else active).append(job)
        return finished

    def _start(self, sample: Sample, index: int) -> Job:
        job = Job(Trace(sample=sample, settings=self.record), index=index)
        try:
            job.image = load_image(sample.image)
        except IdealAgentError as exc:
            stop(job, "error", error=str(exc))
        return job

    # -- which model each step uses ------------------------------------------------------------

    def _lanes(self) -> tuple[list[Lane], dict[str, str]]:
        """One lane per model object (a model serving two steps has one), and each step's lane.

        A model that says how many requests it may have in flight (an endpoint's
        ``max_concurrency``) is a server lane; any other is a local model on the shared device.
        A server lane sends every ready call at once (up to the pool): the model's own limit
        holds the requests in flight to its ``max_concurrency``, request by request. Capping
        calls instead would leave slots idle while a call waits for the last of its requests.
        """
        models = {"caption": self.answerer, "direct": self.answerer, "ask": self.questioner.caller.llm,
                  "answer": self.answerer, "judge": self.reasoner.caller.llm}
        lanes: dict[str, Lane] = {}
        for model in models.values():
            name = f"model-{id(model)}"
            concurrency = getattr(model, "max_concurrency", None)
            if isinstance(concurrency, int) and concurrency >= 1:
                lanes[name] = Lane(name, concurrency=max(concurrency, self.batch_size), max_batch=1)
            else:
                lanes[name] = Lane(name, max_batch=self.batch_size, local=True)
        return list(lanes.values()), {step: f"model-{id(model)}" for step, model in models.items()}
