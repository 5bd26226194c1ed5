"""Answerers: the part of the loop that looks at the image.

An answerer is anything with these two batched methods. Backends live in this package and
import their heavy dependencies (torch, transformers) inside themselves. An answer is a plain
``str``, or, from backends that know what it cost, an ``Answer``: the text together with its
model's token counts, which the agent adds to ``Trace.usage``. ``text_of`` and ``tokens_of``
read either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from idealagent.errors import failure_kind

if TYPE_CHECKING:
    from PIL.Image import Image

X = TypeVar("X")


@dataclass(frozen=True)
class Answer:
    """An answer's text, plus the model tokens it took (prompt and image tokens in, text out).

    A record, not a ``str`` subclass: a string operation on it is a type error rather than a
    silent loss of the counts. ``str(answer)`` is the text.
    """

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    # The probability the model gave the tokens of this answer (their product), from its own
    # scores: None where the backend can't tell (a server that returns no logprobs).
    probability: float | None = None

    def __str__(self) -> str:
        return self.text

    def with_text(self, text: str) -> Answer:
        """The same counts for another text (the reply trimmed to its answer)."""
        return Answer(text, self.input_tokens, self.output_tokens, self.probability)


# What an answerer returns per request: a plain string (a backend that cannot count tokens,
# such as a third-party one) or an Answer.
Reply = str | Answer


def text_of(answer: Reply) -> str:
    """The text of an answer, whichever form it came in."""
    return answer.text if isinstance(answer, Answer) else str(answer)


def probability_of(answer: Reply) -> float | None:
    """The model's probability of an answer's tokens; None for a plain string or when unknown."""
    return answer.probability if isinstance(answer, Answer) else None


def tokens_of(answer: Reply) -> tuple[int, int]:
    """(input, output) model tokens behind an answer; (0, 0) for a plain string."""
    return (answer.input_tokens, answer.output_tokens) if isinstance(answer, Answer) else (0, 0)


@runtime_checkable
class Answerer(Protocol):
    """Answers short questions about images, many at a time."""

    def answer(self, requests: Sequence[tuple[Image, str]]) -> Sequence[Reply]:
        """One short answer per (image, question) pair, in order: a ``str`` or an ``Answer``."""
        ...

    def caption(self, images: Sequence[Image]) -> Sequence[Reply]:
        """One short description per image, in order: a ``str`` or an ``Answer``."""
        ...


def each(call: Callable[[list[X]], Sequence[Reply]], inputs: Sequence[X]) -> list[Reply | Exception]:
    """``call(inputs)`` with each input's failure in its place: the batched call first, and
    if it raises, the two halves again, down to single inputs, so only the inputs at fault fail.

    A service that is down fails everything alike, so its error is raised at once instead.
    """
    inputs = list(inputs)
    if not inputs:
        return []
    try:
        outputs = list(call(inputs))
        if len(outputs) != len(inputs):
            raise RuntimeError(f"{len(outputs)} results for {len(inputs)} inputs")
        return outputs  # type: ignore[return-value]
    except Exception as exc:
        if failure_kind(exc) == "down":
            raise
        if len(inputs) == 1:
            return [exc]
    half = len(inputs) // 2
    return each(call, inputs[:half]) + each(call, inputs[half:])


def raise_first(results: Sequence[Reply | Exception]) -> list[Reply]:
    """``results`` if none failed; else raise the first failure (for ``answer``/``caption``
    built on a backend's ``answer_each``/``caption_each``)."""
    for result in results:
        if isinstance(result, Exception):
            raise result
    return list(results)  # type: ignore[arg-type]


def answer_each(answerer: Any, requests: Sequence[tuple[Image, str]]) -> list[Reply | Exception]:
    """One answer or one exception per request: the backend's own ``answer_each`` where it has
    one (no request is repeated), else ``answer`` through ``each``."""
    return _native_or_each(answerer, "answer_each", answerer.answer, requests)


def caption_each(answerer: Any, images: Sequence[Image]) -> list[Reply | Exception]:
    """One caption or one exception per image, as ``answer_each`` does for answers."""
    return _native_or_each(answerer, "caption_each", answerer.caption, images)


def _native_or_each(answerer: Any, name: str, call: Callable[[list[X]], Sequence[Reply]],
                    inputs: Sequence[X]) -> list[Reply | Exception]:
    native = getattr(answerer, name, None)
    if callable(native):
        try:
            return list(native(inputs))
        except Exception as exc:  # a failure it could not pin on one input: find it by halving
            if failure_kind(exc) == "down":
                raise
    return each(call, inputs)
