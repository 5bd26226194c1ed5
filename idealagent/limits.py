"""A concurrency limit for one model server that adapts to it: halved when the server says it
is overloaded (HTTP 429), then grown back by about one request per round trip (additive
increase, multiplicative decrease, as TCP's congestion control does). The configured
``max_concurrency`` is the ceiling; one request is the floor.

Requests waiting for room go in order of their ``priority`` (the value set around them with
``priority()``, lowest first; 0 unless set), and in arrival order among equals.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from idealagent.errors import InfrastructureError

T = TypeVar("T")

_PRIORITY: contextvars.ContextVar[float] = contextvars.ContextVar("idealagent_request_priority", default=0)


@contextmanager
def priority(value: float) -> Iterator[None]:
    """Requests made inside the block wait for a slot in the order of ``value``, lowest first."""
    token = _PRIORITY.set(value)
    try:
        yield
    finally:
        _PRIORITY.reset(token)


class _Waiter:
    """One request waiting for a slot: its place in line, and the signal that it has one."""

    __slots__ = ("key", "granted", "generation", "wake")

    def __init__(self, key: tuple[float, int], lock: threading.Lock) -> None:
        self.key = key
        self.granted = False
        self.generation = 0
        self.wake = threading.Condition(lock)

    def __lt__(self, other: _Waiter) -> bool:
        return self.key < other.key


class AdaptiveLimit:
    """Requests in flight to one server: ``with limit.slot(): ...`` waits for room."""

    def __init__(self, maximum: int, *, cooldown_s: float = 1.0) -> None:
        self.maximum = maximum
        self.limit = float(maximum)  # requests allowed in flight now
        self.in_flight = 0
        self.cooldown_s = cooldown_s  # one halving per burst of 429s, not one per request in it
        self._last_cut = float("-inf")
        self._lock = threading.Lock()
        self._waiting: list[_Waiter] = []  # a heap: the next request to get a slot on top
        self._arrivals = itertools.count()
        self.generation = 0  # bumped by abandon(): slots taken before it no longer count

    def abandon(self) -> None:
        """Every request in flight was abandoned (Ctrl-C): its slot is free now, and a request
        begun before this (``run(..., since=)``) is not sent again."""
        with self._lock:
            self.generation += 1
            self.in_flight = 0
            self._grant()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one request's place while the block runs (not while backing off between tries)."""
        with self._lock:
            if not self._waiting and self.in_flight < int(self.limit):
                self.in_flight += 1
                generation = self.generation
            else:
                waiter = _Waiter((_PRIORITY.get(), next(self._arrivals)), self._lock)
                heapq.heappush(self._waiting, waiter)
                try:
                    while not waiter.granted:
                        waiter.wake.wait()
                except BaseException:  # Ctrl-C while waiting: leave the line, or the slot just given
                    if not waiter.granted:
                        self._waiting.remove(waiter)
                        heapq.heapify(self._waiting)
                    elif waiter.generation == self.generation:
                        self.in_flight -= 1
                        self._grant()
                    raise
                generation = waiter.generation
        try:
            yield
        finally:
            with self._lock:
                if generation == self.generation:  # else abandon() has freed it already
                    self.in_flight -= 1
                    self._grant()

    def _grant(self) -> None:
        """Give the free slots to the first requests in line (the lock held)."""
        while self._waiting and self.in_flight < int(self.limit):
            waiter = heapq.heappop(self._waiting)
            self.in_flight += 1
            waiter.granted, waiter.generation = True, self.generation
            waiter.wake.notify()

    def overloaded(self) -> None:
        """The server refused a request as too many (429): halve the limit, once per cooldown."""
        with self._lock:
            now = time.monotonic()
            if now - self._last_cut >= self.cooldown_s:
                self.limit = max(1.0, self.limit / 2)
                self._last_cut = now

    def succeeded(self) -> None:
        """A request went through: grow the limit by 1/limit, about one per round trip."""
        with self._lock:
            if self.limit < self.maximum:
                self.limit = min(float(self.maximum), self.limit + 1 / self.limit)
                self._grant()

    def run(self, request: Callable[[], T], since: int | None = None) -> T:
        """Run one request in a slot, learning from how it went: a 429 halves the limit (and
        is raised for the retry policy to wait and try again), a success grows it. A request
        whose first try was made in generation ``since`` is not tried again once abandoned."""
        if since is not None and since != self.generation:
            raise InfrastructureError("the request was abandoned (interrupted)")
        with self.slot():
            try:
                result = request()
            except Exception as exc:
                if getattr(exc, "status_code", None) == 429:
                    self.overloaded()
                raise
        self.succeeded()
        return result
