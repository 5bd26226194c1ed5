"""Answerers: the part of the loop that looks at the image.

An answerer is anything with these two batched methods. Backends live in this package and
import their heavy dependencies (torch, transformers) inside themselves. An answer is a plain
``str``, or, from backends that know what it cost, an ``Answer``: the text together with its
model's token counts, which the agent adds to ``Trace.usage``. ``text_of`` and ``tokens_of``
read either.

A backend that declares ``Capabilities.likelihood`` also scores given options:
``option_logprobs(requests)`` takes (image, question, options) triples and gives each option's
``OptionScore`` (its tokens' summed log-probability as the reply to the question, and how many
tokens that is), or the request's failure in its place. ``choose_options`` turns those scores
into the chosen option, V* Bench's official protocol (``pick_option``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar, runtime_checkable

from idealagent.errors import failure_kind

if TYPE_CHECKING:
    from PIL.Image import Image

X = TypeVar("X")
OptionsRequest = tuple["Image", str, Sequence[str]]  # (image, question, the options to score)


class OptionScore(NamedTuple):
    """One option's likelihood as the reply to a question about an image."""

    logprob: float  # the sum of its tokens' log-probabilities (the end of the turn included)
    tokens: int  # how many tokens that is

    @property
    def mean(self) -> float:
        """The log-probability per token: what V* Bench's official evaluation ranks options by."""
        return self.logprob / max(self.tokens, 1)


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
    # scores: None where the backend can't tell (a server that returns no logprobs). For an
    # option chosen by likelihood (``choose_options``): its share of the options' likelihood.
    probability: float | None = None
    # An option chosen by likelihood: every option's score, in the options' order.
    options: tuple[OptionScore, ...] = ()

    def __str__(self) -> str:
        return self.text

    def with_text(self, text: str) -> Answer:
        """The same counts for another text (the reply trimmed to its answer)."""
        return Answer(text, self.input_tokens, self.output_tokens, self.probability, self.options)


# What an answerer returns per request: a plain string (a backend that cannot count tokens,
# such as a third-party one) or an Answer.
Reply = str | Answer


@dataclass(frozen=True)
class Detection:
    """Whether a named thing is in an image, from an answerer that can look for it (``detect``,
    with ``Capabilities.detects``): how sure (``score`` 0..1), what it found there, and where
    (``box``: x0, y0, x1, y1, each 0..1 of the image's width and height), if it can tell."""

    score: float
    label: str = ""
    box: tuple[float, float, float, float] | None = None


def detect_each(answerer: Any, requests: Sequence[tuple[Image, str]]) -> list[Detection | Exception]:
    """One Detection or one exception per (image, target), as ``answer_each`` does for answers."""
    return each(answerer.detect, requests)  # type: ignore[arg-type]


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


def pick_option(scores: Sequence[OptionScore]) -> tuple[int, float]:
    """(index, share) of the option with the highest log-probability per token (V* Bench's
    official rule: the lowest mean cross-entropy; the first on a tie), and its share of the
    softmax over the options' per-token log-probabilities, so the chosen one has the largest."""
    means = [score.mean for score in scores]
    best = max(range(len(means)), key=lambda i: (means[i], -i))
    top = means[best]
    total = sum(math.exp(mean - top) for mean in means)
    return best, 1.0 / total


def choose_options(answerer: Any, requests: Sequence[OptionsRequest]) -> list[Answer | Exception]:
    """Each request's option with the highest likelihood (``pick_option``) as an ``Answer``: its
    text is the option, its ``probability`` the option's share, its ``options`` every score.

    The backend's ``option_logprobs`` gives each request's failure in its place; if the call
    raises instead, the requests are tried in halves (``each``) so only those at fault fail."""
    requests = list(requests)
    if not requests:
        return []
    try:
        results: list[Any] = list(answerer.option_logprobs(requests))
    except Exception as exc:
        if failure_kind(exc) == "down":
            raise
        results = each(lambda part: raise_first(answerer.option_logprobs(part)), requests)  # type: ignore[arg-type]
    chosen: list[Answer | Exception] = []
    for (_, _, options), scores in zip(requests, results):
        if isinstance(scores, Exception):
            chosen.append(scores)
        elif len(scores) != len(options) or not scores:
            chosen.append(RuntimeError(f"{len(scores)} option scores for {len(options)} options"))
        else:
            index, share = pick_option(scores)
            chosen.append(Answer(options[index], probability=share, options=tuple(scores)))
    return chosen


def ask_or_choose(answerer: Any, requests: Sequence[tuple[Image, str, Sequence[str] | None]]) -> list[Reply | Exception]:
    """A reply (or failure) per (image, question, options): where options are given, the one
    the answerer scores highest (``choose_options``); else its answer to the question."""
    replies: list[Reply | Exception | None] = [None] * len(requests)
    scored = [i for i, (_, _, options) in enumerate(requests) if options is not None]
    asked = [i for i, (_, _, options) in enumerate(requests) if options is None]
    if scored:
        for i, reply in zip(scored, choose_options(answerer, [requests[i] for i in scored])):  # type: ignore[misc]
            replies[i] = reply
    if asked:
        for i, reply in zip(asked, answer_each(answerer, [requests[i][:2] for i in asked])):
            replies[i] = reply
    return replies  # type: ignore[return-value]
