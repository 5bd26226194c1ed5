"""The agent: the models, the settings, and the drivers that run samples through the loop.

The loop itself, what a sample does next, is machine.py; calls.py holds each step's model
call. Here, ``_drive`` keeps a pool of up to ``batch_size`` samples in flight and decides when
calls run. Pipelined (the default), each sample moves to its next step as soon as its own step
returns (scheduler.py sends each model the requests it has room for), so no model waits at a
barrier for the slowest sample of a phase. ``pipeline=False`` keeps the first design, one
batched call per step for the whole pool, which gives the same traces with scripted models.
``run``, ``stream``, ``iter_batch`` and ``run_batch`` are views over the drive, and report
what happens through typed events (events.py) to the callbacks they are given.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel

from idealagent import calls
from idealagent.answerers import Answerer
from idealagent.capabilities import capabilities_of, check_models
from idealagent.errors import IdealAgentError, InfrastructureError, ServiceDownError, one_line
from idealagent.events import (Callback, DirectAnswered, Event, RoundAnswered, RoundAsked, RoundJudged, SampleFinished,
                               SampleStarted, StepFailed, emit)
from idealagent.images import load_image
from idealagent.machine import Job, Machine, Step, steps_done
from idealagent.roles import Questioner, Reasoner
from idealagent.scheduler import Lane, Pipeline, Queue
from idealagent.settings import AgentSettings
from idealagent.sight import ROLES, sees
from idealagent.trace import DirectAnswer, Round, Sample, TaskKind, Trace

if TYPE_CHECKING:
    from idealagent.response_cache import ResponseCache

log = logging.getLogger(__name__)

# What a driver calls with a finished call: (step, jobs, a result per job, seconds) -> events.
Apply = Callable[[Step, list[Job], list[Any], float], list[Event]]


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
        loop; ``AgentSettings`` documents each one, its default and its range. A setting the
        models cannot honour (``votes`` with a reasoner that cannot sample) is refused here."""
        self.settings = (settings or AgentSettings()).replace(**overrides)
        self.answerer = answerer
        # Where the models came from (a preset's name and model ids), recorded beside the settings.
        self.origin: dict[str, Any] = {}
        # The response cache the models read and write (presets set it), for its hit counts.
        self.response_cache: ResponseCache | None = None
        options: dict[str, Any] = {"attempts": self.settings.attempts, "structured": self.settings.structured,
                                   "prompts_dir": prompts_dir}
        self.questioner = Questioner(questioner_llm or llm, max_sub_questions=self.settings.max_sub_questions,
                                     **options)
        self.reasoner = Reasoner(reasoner_llm or llm, **options)
        check_models(self.settings, answerer=answerer, questioner=self.questioner.caller.llm,
                     reasoner=self.reasoner.caller.llm)
        # Whether each role is shown the picture (roles_see: auto, where its model takes images).
        self.roles_seeing = {role: sees(self.settings.roles_see, getattr(self, role).caller.llm) for role in ROLES}

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
            kind: TaskKind | None = None, callbacks: Sequence[Callback] = ()) -> Trace:
        """Answer one question about one image. Raises ImageError if the image can't be read,
        and InfrastructureError if a model service failed (ServiceDownError if it is down)."""
        *_, trace = self.stream(image, question, choices=choices, kind=kind, callbacks=callbacks)
        return trace

    def stream(self, image: Any, question: str, *, choices: Sequence[str] | None = None,
               kind: TaskKind | None = None, partial: bool = False,
               callbacks: Sequence[Callback] = ()) -> Iterator[DirectAnswer | Round | Trace]:
        """Yield the direct answer (when the agent asks for one), each Round once its verdict
        is in, then the finished Trace; each prints as one line.

        With ``partial=True`` the current Round is also yielded after its sub-questions are
        asked and after they are answered (the same object, filled in further each time).
        """
        # Built before the generator starts, so bad input raises here, not at the first next().
        sample = Sample(image=image, question=question, choices=list(choices) if choices else None, kind=kind)
        job = Job(Trace(sample=sample, settings=self.record), load_image(image))
        return self._stream_job(job, partial, callbacks)

    def _stream_job(self, job: Job, partial: bool, callbacks: Sequence[Callback]) -> Iterator[DirectAnswer | Round | Trace]:
        shown = (DirectAnswered, RoundJudged, *((RoundAsked, RoundAnswered) if partial else ()))
        for event in self._drive(iter([job]), callbacks):
            if isinstance(event, shown):
                yield event.direct if isinstance(event, DirectAnswered) else event.round  # type: ignore[attr-defined]
        if job.trace.stop_reason == "infrastructure":  # not a result: no trace to show for it
            raise InfrastructureError(job.trace.error or "a model service kept failing")
        yield job.trace

    def run_batch(self, samples: Iterable[Sample], *, callbacks: Sequence[Callback] = ()) -> list[Trace]:
        """Answer many samples, batching every step; one trace per sample, in input order.

        Raises ServiceDownError (or ModelLoadError) if a model service cannot be used at all.
        """
        jobs = sorted(self._finished_jobs(samples, callbacks), key=lambda job: job.index)
        return [job.trace for job in jobs]

    def iter_batch(self, samples: Iterable[Sample], *, callbacks: Sequence[Callback] = ()) -> Iterator[Trace]:
        """Yield each trace as soon as its sample finishes (pool refill keeps batches full).

        A sample whose image can't be read finishes at once with ``stop_reason="error"``; one
        the infrastructure kept failing on, with ``stop_reason="infrastructure"`` and no answer.
        """
        return (job.trace for job in self._finished_jobs(samples, callbacks))

    def _finished_jobs(self, samples: Iterable[Sample], callbacks: Sequence[Callback]) -> Iterator[Job]:
        started: dict[int, Job] = {}  # id(trace) -> its job

        def start(index: int, sample: Sample) -> Job:
            job = self._start(sample, index)
            started[id(job.trace)] = job
            return job

        waiting = (start(index, sample) for index, sample in enumerate(samples))
        for event in self._drive(waiting, callbacks):
            if isinstance(event, SampleFinished):
                yield started.pop(id(event.trace))

    # -- the drivers: when calls run ----------------------------------------------------------

    def _drive(self, waiting: Iterator[Job], callbacks: Sequence[Callback]) -> Iterator[Event]:
        """Run the pool through the machine; yield every event (after the callbacks saw it)."""
        machine = Machine(self.settings, self.answerer)
        lanes, lane_of = self._lanes()
        health = {lane.name: Health(self.settings.down_after) for lane in lanes}
        active: list[Job] = []

        def apply(step: Step, jobs: list[Job], results: list[Any], seconds: float) -> list[Event]:
            events = emit(machine.apply(step, jobs, results, seconds), callbacks)
            failed = [e for e in events if isinstance(e, StepFailed)]
            health[lane_of[step]].record(failed, len(jobs) - len(failed))
            return events

        drive = self._pipelined if self.settings.pipeline else self._in_lock_step
        yield from drive(active, waiting, apply, lanes, lane_of, callbacks)

    def _pipelined(self, active: list[Job], waiting: Iterator[Job], apply: Apply, lanes: list[Lane],
                   lane_of: dict[Step, str], callbacks: Sequence[Callback]) -> Iterator[Event]:
        """Each sample moves on as soon as its own step returns (scheduler.py).

        Once no sample is left to start, the pool drains: then a model's slots go first to the
        samples with the most steps still ahead (the fewest done), whose chains of calls would
        otherwise finish the run alone with the models half idle. Before that, first come,
        first served."""
        queues = {step: Queue(lane_of[step], lambda jobs, step=step: calls.run(self, step, jobs)) for step in Step}
        draining = False

        def priority(step: Step, jobs: list[Job]) -> float:
            return min(steps_done(job) for job in jobs) if draining else 0

        with Pipeline(lanes, queues, on_abandon=self._abandon, priority=priority) as pipeline:
            while True:
                yield from self._fill(active, waiting, callbacks)
                if not active:
                    return
                draining = len(active) < self.batch_size  # _fill found no sample left to start
                for job in active:
                    if not job.queued:
                        pipeline.put(job.step, job)
                        job.queued = True
                done = pipeline.next()  # the next call to return, of whichever step and model
                for job in done.jobs:
                    job.queued = False
                yield from apply(done.step, done.jobs, done.result, done.seconds)
                active[:] = [job for job in active if not job.trace.done]

    def _in_lock_step(self, active: list[Job], waiting: Iterator[Job], apply: Apply, lanes: list[Lane],
                      lane_of: dict[Step, str], callbacks: Sequence[Callback]) -> Iterator[Event]:
        """The first design: each pass makes one call per step for every sample at that step."""
        while True:
            yield from self._fill(active, waiting, callbacks)
            if not active:
                return
            for step in Step:
                jobs = [job for job in active if job.step is step and not job.trace.done]
                if jobs:
                    started = time.perf_counter()
                    results = calls.run(self, step, jobs)
                    yield from apply(step, jobs, results, time.perf_counter() - started)
            active[:] = [job for job in active if not job.trace.done]

    def _fill(self, active: list[Job], waiting: Iterator[Job], callbacks: Sequence[Callback]) -> list[Event]:
        """Top the pool up to ``batch_size`` from ``waiting``; samples that finished on arrival
        (unreadable images) take no place in it, and are reported finished."""
        events: list[Event] = []
        while len(active) < self.batch_size and (job := next(waiting, None)) is not None:
            if job.trace.done:
                events += emit([SampleFinished(job.trace)], callbacks)
            else:
                active.append(job)
                events += emit([SampleStarted(job.trace)], callbacks)
        return events

    def _start(self, sample: Sample, index: int) -> Job:
        job = Job(Trace(sample=sample, settings=self.record), index=index)
        try:
            job.image = load_image(sample.image)
        except IdealAgentError as exc:
            job.trace.stop_reason, job.trace.error = "error", str(exc)
        return job

    def _abandon(self) -> None:
        """Ctrl-C or an error left calls in flight: let the models drop them (see abandon)."""
        models = {id(model): model for model in (spec.model(self) for spec in calls.SPECS.values())}
        for model in models.values():  # each step's model (calls.SPECS), once
            abandon = getattr(model, "abandon", None)
            if callable(abandon):
                abandon()

    # -- which model each step uses ------------------------------------------------------------

    def _lanes(self) -> tuple[list[Lane], dict[Step, str]]:
        """One lane per model object (a model serving two steps has one), and each step's lane.

        A model that declares a concurrency (an endpoint's ``max_concurrency``) is a server
        lane; any other is a local model on the shared device. A server lane sends every ready
        call at once (up to the pool): the model's own limit holds the requests in flight to its
        ``max_concurrency``, request by request. Capping calls instead would leave slots idle
        while a call waits for the last of its requests.
        """
        lanes: dict[str, Lane] = {}
        lane_of: dict[Step, str] = {}
        for step, spec in calls.SPECS.items():
            model = spec.model(self)
            name = lane_of[step] = f"model-{id(model)}"
            concurrency = capabilities_of(model).concurrency
            if concurrency is not None:
                lanes[name] = Lane(name, concurrency=max(concurrency, self.batch_size), max_batch=1)
            else:
                lanes[name] = Lane(name, max_batch=self.batch_size, local=True)
        return list(lanes.values()), lane_of


class Health:
    """Watches one model for a service that is down although each request looks transient:
    many distinct requests failing in a row, with no success in between, stop the run."""

    def __init__(self, down_after: int) -> None:
        self.down_after = down_after
        self.streak = 0

    def record(self, failures: list[StepFailed], successes: int) -> None:
        """Count one call's infrastructure failures; raise ServiceDownError past the limit."""
        self.streak = 0 if successes else self.streak + len(failures)
        if failures and self.streak >= self.down_after:
            raise ServiceDownError(f"{self.streak} requests in a row failed, the last with "
                                   f"{one_line(failures[-1].error, 200)}; the service seems down")
