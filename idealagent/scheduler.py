"""Keeps every model busy: a sample's next request goes out as soon as its own previous step
has returned and its model has room, instead of waiting for the whole batch at a barrier.

Each model gets a ``Lane``; its requests wait there, one queue per step it serves (the answerer
serves captions and answers, an LLM the questioner and the reasoner). Two kinds of lane:

- a model server (an endpoint with ``max_concurrency``): each ready sample's request(s) go out
  at once as a call on a worker thread; the model itself holds its requests in flight to its
  limit, request by request, so a slot frees the moment any request returns.
- a local model: one call at a time, run on the calling thread (so Ctrl-C stops it at once).
  Whenever it is free it takes every ready request of the earliest step that has any, so
  samples that lag catch up and steps merge into the largest batches: continuous batching at
  the granularity of our calls. All local lanes share one device, so one local call runs at a
  time: they often share weights, and always the accelerator.

A server call goes out with a priority (``priority``, 0 by default): its requests wait for the
model's slots in that order (idealagent/limits.py), lowest first, in arrival order among equals.

The scheduler knows nothing of IdealGPT: the agent says which lane each step uses, what a call
does, and what to do with its result.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from idealagent.limits import priority as request_priority
from idealagent.threads import DaemonPool

J = TypeVar("J")


@dataclass
class Lane:
    """One model's queue and limits."""

    name: str
    concurrency: int = 1  # calls in flight at once (a server: the pool; its model limits requests)
    max_batch: int = 1  # requests per call: 1 for a server (each goes out alone), the pool for local
    local: bool = False  # runs on the shared device, one local call at a time, on the caller's thread
    in_flight: int = 0


@dataclass
class Queue(Generic[J]):
    """The requests waiting for one step of the loop: the lane that serves them and the call
    that does the step for a batch of jobs."""

    lane: str
    call: Callable[[list[J]], Any]
    queue: deque[J] = field(default_factory=deque)


@dataclass
class Done(Generic[J]):
    """A finished call: which step, for which jobs, its result and its wall time."""

    step: Any
    jobs: list[J]
    result: Any
    seconds: float


class Pipeline(Generic[J]):
    """Runs step calls for jobs as their lanes allow; ``next()`` hands back one finished call."""

    def __init__(self, lanes: Sequence[Lane], steps: dict[Hashable, Queue[J]], *,
                 on_abandon: Callable[[], None] | None = None,
                 priority: Callable[[Hashable, list[J]], float] | None = None) -> None:
        self.lanes = {lane.name: lane for lane in lanes}
        self.steps = steps  # in loop order
        self.priority = priority  # a server call's place in its model's line (lowest first); None: all 0
        workers = sum(lane.concurrency for lane in lanes if not lane.local)
        # Daemon threads: Ctrl-C must not wait at exit for a slow server's reply to a call
        # nobody will read.
        self._pool = DaemonPool(workers, "idealagent") if workers else None
        self._on_abandon = on_abandon  # told when calls are left in flight (Ctrl-C, an error)
        self._futures: dict[Future[Done[J]], int] = {}  # each call's number, to hand back in order
        self._calls = 0

    def put(self, step: Hashable, job: J) -> None:
        """Queue ``job`` for ``step``."""
        self.steps[step].queue.append(job)

    def next(self) -> Done[J]:
        """Send what the lanes have room for, then return one finished call (the oldest of
        those finished), running a local call here if nothing else has finished. A call's
        exception is raised here."""
        self._send_to_servers()
        finished = [f for f in self._futures if f.done()]
        if not finished:
            local = self._take_local()
            if local is not None:
                return self._call(*local)
            if not self._futures:
                raise RuntimeError("the pipeline has nothing queued or in flight")
            finished = list(wait(self._futures, return_when=FIRST_COMPLETED)[0])
        future = min(finished, key=self._futures.__getitem__)
        del self._futures[future]
        done = future.result()
        self.lanes[self.steps[done.step].lane].in_flight -= 1
        return done

    def close(self) -> None:
        """Drop what has not started; calls still running are abandoned (their models are
        told, so they can stop retrying and free their slots) and end on their own."""
        if self._pool is not None:
            self._pool.shutdown()
        if any(not f.done() for f in self._futures) and self._on_abandon is not None:
            self._on_abandon()
        self._futures.clear()

    def __enter__(self) -> Pipeline[J]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- choosing what goes next ----------------------------------------------------------------

    def _send_to_servers(self) -> None:
        for lane in self.lanes.values():
            while not lane.local and lane.in_flight < lane.concurrency:
                taken = self._take(lane)
                if taken is None:
                    break
                lane.in_flight += 1
                assert self._pool is not None
                rank = self.priority(*taken) if self.priority is not None else 0
                self._futures[self._pool.submit(self._call, *taken, rank)] = self._calls
                self._calls += 1

    def _take_local(self) -> tuple[Hashable, list[J]] | None:
        """For the shared device (we are on its thread, so it is free): the earliest step with
        ready requests on any local lane, all of them. Samples that lag behind catch up, so the
        steps merge into the largest batches: for one local model, the lock-step schedule."""
        step = next((name for name, step in self.steps.items() if step.queue and self.lanes[step.lane].local), None)
        return None if step is None else self._pop(step)

    def _take(self, lane: Lane) -> tuple[Hashable, list[J]] | None:
        """For a server lane: the latest step first, so samples near the end finish and make room."""
        step = next((name for name, step in reversed(self.steps.items()) if step.queue and step.lane == lane.name),
                    None)
        return None if step is None else self._pop(step)

    def _pop(self, step: Hashable) -> tuple[Hashable, list[J]]:
        queue = self.steps[step].queue
        count = min(self.lanes[self.steps[step].lane].max_batch, len(queue))
        return step, [queue.popleft() for _ in range(count)]

    def _call(self, step: Hashable, jobs: list[J], rank: float = 0) -> Done[J]:
        started = time.perf_counter()
        with request_priority(rank):
            result = self.steps[step].call(jobs)
        return Done(step, jobs, result, time.perf_counter() - started)
