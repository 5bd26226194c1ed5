"""What the loop reports as it runs: one typed event per thing that happened to a sample.

The state machine (machine.py) returns them; ``IdealAgent.stream``, ``iter_batch`` and
``run_batch`` hand each to the callbacks they were given, and the console and ``eval``'s
progress line are built on them. Each prints as one readable line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from idealagent.trace import DirectAnswer, Look, Round, Trace


@dataclass(frozen=True)
class Event:
    """Something happened to the sample of ``trace``."""

    trace: Trace


@dataclass(frozen=True)
class SampleStarted(Event):
    """The sample joined the agent's pool: its first model call is queued."""

    def __str__(self) -> str:
        return f"Started: {self.trace.sample.question}"


@dataclass(frozen=True)
class DirectAnswered(Event):
    """The answerer answered the main question itself (or failed to: ``direct.error``)."""

    direct: DirectAnswer

    def __str__(self) -> str:
        return str(self.direct)


@dataclass(frozen=True)
class Looked(Event):
    """The answerer looked at views of the picture (one batch of a search): ``looks`` are the
    new ones, also in ``trace.search``."""

    looks: list[Look]

    def __str__(self) -> str:
        return "; ".join(str(look) for look in self.looks) or "Looked: nothing"


@dataclass(frozen=True)
class RoundEvent(Event):
    """Something happened in a round: prints as the round's one line."""

    round: Round

    def __str__(self) -> str:
        return str(self.round)


class RoundAsked(RoundEvent):
    """The questioner asked a round's sub-questions."""


class RoundAnswered(RoundEvent):
    """The answerer answered a round's sub-questions."""


class RoundJudged(RoundEvent):
    """The reasoner gave a round's verdict."""


@dataclass(frozen=True)
class StepFailed(Event):
    """A step failed on the infrastructure; ``retry`` says whether the sample will try it again."""

    step: str
    error: str
    tries: int
    retry: bool

    def __str__(self) -> str:
        then = "will try again" if self.retry else "gave up on the sample"
        return f"{self.step} failed ({self.tries}x): {self.error}; {then}"


@dataclass(frozen=True)
class SampleFinished(Event):
    """The sample stopped; its trace is complete."""

    def __str__(self) -> str:
        return str(self.trace)


Callback = Callable[[Event], None]


def emit(events: Iterable[Event], callbacks: Sequence[Callback]) -> list[Event]:
    """Hand each event to every callback, in order; returns the events."""
    events = list(events)
    for event in events:
        for callback in callbacks:
            callback(event)
    return events
