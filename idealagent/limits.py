"""A concurrency limit for one model server that adapts to it: halved when the server says it
is overloaded (HTTP 429), then grown back by about one request per round trip (additive
increase, multiplicative decrease, as TCP's congestion control does). The configured
``max_concurrency`` is the ceiling; one request is the floor.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from idealagent.errors import InfrastructureError

T = TypeVar("T")


class AdaptiveLimit:
    """Requests in flight to one server: ``with limit.slot(): ...`` waits for room."""

    def __init__(self, maximum: int, *, cooldown_s: float = 1.0) -> None:
        self.maximum = maximum
        self.limit = float(maximum)  # requests allowed in flight now
        self.in_flight = 0
        self.cooldown_s = cooldown_s  # one halving per burst of 429s, not one per request in it
        self._last_cut = float("-inf")
        self._room = threading.Condition()
        self.generation = 0  # bumped by abandon(): slots taken before it no longer count

    def abandon(self) -> None:
        """Every request in flight was abandoned (Ctrl-C): its slot is free now, and a request
        begun before this (``run(..., since=)``) is not sent again."""
        with self._room:
            self.generation += 1
            self.in_flight = 0
            self._room.notify_all()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one request's place while the block runs (not while backing off between tries)."""
        with self._room:
            while self.in_flight >= int(self.limit):
                self._room.wait()
            self.in_flight += 1
            generation = self.generation
        try:
            yield
        finally:
            with self._room:
                if generation == self.generation:  # else abandon() has freed it already
                    self.in_flight -= 1
                    self._room.notify()  # one place freed: one waiter

    def overloaded(self) -> None:
        """The server refused a request as too many (429): halve the limit, once per cooldown."""
        with self._room:
            now = time.monotonic()
            if now - self._last_cut >= self.cooldown_s:
                self.limit = max(1.0, self.limit / 2)
                self._last_cut = now

    def succeeded(self) -> None:
        """A request went through: grow the limit by 1/limit, about one per round trip."""
        with self._room:
            if self.limit < self.maximum:
                self.limit = min(float(self.maximum), self.limit + 1 / self.limit)
                self._room.notify_all()

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
