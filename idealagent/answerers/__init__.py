"""Answerers: the part of the loop that looks at the image.

An answerer is anything with these two batched methods. Backends live in this package and
import their heavy dependencies (torch, transformers) inside themselves. An answer is a ``str``;
backends that know what it cost return ``Answer``, a ``str`` that also carries its model's token
counts, which the agent adds to ``Trace.usage``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from idealagent.errors import failure_kind

if TYPE_CHECKING:
    from PIL.Image import Image

X = TypeVar("X")


class Answer(str):
    """An answer's text, plus the model tokens it took (prompt and image tokens in, text out)."""

    input_tokens: int
    output_tokens: int

    def __new__(cls, text: str, input_tokens: int = 0, output_tokens: int = 0) -> Answer:  # noqa: PYI034
        answer = super().__new__(cls, text)
        answer.input_tokens, answer.output_tokens = input_tokens, output_tokens
        return answer


def tokens_of(answer: str) -> tuple[int, int]:
    """(input, output) model tokens behind an answer; (0, 0) for a plain string."""
    return getattr(answer, "input_tokens", 0), getattr(answer, "output_tokens", 0)


@runtime_checkable
class Answerer(Protocol):
    """Answers short questions about images, many at a time."""

    def answer(self, requests: Sequence[tuple[Image, str]]) -> list[str]:
        """One short answer per (image, question) pair, in order."""
        ...

    def caption(self, images: Sequence[Image]) -> list[str]:
        """One short description per image, in order."""
        ...


def each(call: Callable[[list[X]], Sequence[str]], inputs: Sequence[X]) -> list[str | Exception]:
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


def answer_each(answerer: Any, requests: Sequence[tuple[Image, str]]) -> list[str | Exception]:
    """One answer or one exception per request: the backend's own ``answer_each`` where it has
    one (no request is repeated), else ``answer`` through ``each``."""
    return _native_or_each(answerer, "answer_each", answerer.answer, requests)


def caption_each(answerer: Any, images: Sequence[Image]) -> list[str | Exception]:
    """One caption or one exception per image, as ``answer_each`` does for answers."""
    return _native_or_each(answerer, "caption_each", answerer.caption, images)


def _native_or_each(answerer: Any, name: str, call: Callable[[list[X]], Sequence[str]],
                    inputs: Sequence[X]) -> list[str | Exception]:
    native = getattr(answerer, name, None)
    if callable(native):
        try:
            return list(native(inputs))
        except Exception as exc:  # a failure it could not pin on one input: find it by halving
            if failure_kind(exc) == "down":
                raise
    return each(call, inputs)
