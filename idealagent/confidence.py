"""The signals that say how far to trust a candidate answer, each read from what the models did.

A candidate is the answerer's direct answer or a round's verdict. Its signals, all in [0, 1]:

- ``stated``: the confidence the reasoner wrote (verdicts only). Small models state 0.9 for
  nearly anything, so it is one signal among several, not the confidence.
- ``answer_prob``: the probability the model that gave the answer gave its answer tokens (the
  product over those tokens): the reasoner's for a verdict, the answerer's for the direct
  answer. From the generation scores of a local model, or the ``logprobs`` of a server that
  returns them; absent where neither is available.
- ``direct_prob``: the answerer's probability of its direct answer (verdicts; the same for
  every verdict of a sample).
- ``agrees_direct``: 1 if the verdict gives the direct answer, else 0.
- ``agrees_sub``: the share of the sample's sub-answers so far that name the answer.
- ``in_caption``: 1 if the image description names the answer, else 0.
- ``votes``: with ``--votes K``, the share of K sampled reasoner replies that give the verdict's
  answer (self-consistency).

A signal that could not be measured is left out of the candidate's ``signals``; it is never
filled in with a guess. calibration.py turns the signals into one calibrated confidence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

from idealagent.answers import normalize_answer

# Every signal a candidate can carry, in a fixed order (calibration files list theirs by name).
SIGNALS: tuple[str, ...] = ("stated", "answer_prob", "direct_prob", "agrees_direct", "agrees_sub",
                            "in_caption", "votes")
TokenLogprob = tuple[str, float]  # a generated token's text and its log-probability

_JSON_ANSWER = re.compile(r'"answer"\s*:\s*"((?:[^"\\]|\\.)*)"')


def message_logprobs(message: Any) -> list[TokenLogprob] | None:
    """The generated tokens and their log-probabilities that a chat message carries, in the
    OpenAI form (``response_metadata["logprobs"]["content"]``, a list of ``{"token",
    "logprob"}``) that ``LocalChatModel`` writes too; None when the message has none."""
    metadata = getattr(message, "response_metadata", None) or {}
    return logprobs_content(metadata.get("logprobs"))


def logprobs_content(logprobs: Any) -> list[TokenLogprob] | None:
    """``[(token, logprob), ...]`` from an OpenAI ``logprobs`` object (a dict or the SDK's
    object); None when it is missing or holds no tokens."""
    content = logprobs.get("content") if isinstance(logprobs, dict) else getattr(logprobs, "content", None)
    if not content:
        return None
    tokens = []
    for item in content:
        token = item.get("token") if isinstance(item, dict) else getattr(item, "token", None)
        logprob = item.get("logprob") if isinstance(item, dict) else getattr(item, "logprob", None)
        if not isinstance(token, str) or not isinstance(logprob, (int, float)) or math.isnan(logprob):
            return None
        tokens.append((token, float(logprob)))
    return tokens


def answer_probability(tokens: Sequence[TokenLogprob] | None, answer: str | None) -> float | None:
    """The probability the model gave ``answer``'s tokens in its reply: exp of the summed
    log-probabilities of the tokens that overlap the answer's characters.

    The reply is the tokens' texts joined. In a JSON reply the answer is the value of its
    ``"answer"`` field; otherwise its first occurrence (ignoring case). None when there are no
    token log-probabilities or the answer is not in the reply.
    """
    if not tokens or not answer or not answer.strip():
        return None
    text = "".join(token for token, _ in tokens)
    span = _answer_span(text, answer.strip())
    if span is None:
        return None
    start, end = span
    total, position = 0.0, 0
    for token, logprob in tokens:
        if position < end and position + len(token) > start:
            total += logprob
        position += len(token)
    return min(1.0, math.exp(total))


def _answer_span(text: str, answer: str) -> tuple[int, int] | None:
    for match in _JSON_ANSWER.finditer(text):
        if match.group(1).strip():
            return match.span(1)
    found = text.lower().find(answer.lower())
    if found < 0:
        # A reply trimmed to its answer ("A cat." -> "cat") still names it; take its first word.
        first = answer.split()[0].lower()
        found = text.lower().find(first)
        return None if found < 0 else (found, found + len(first))
    return found, found + len(answer)


def normalized(answer: str | None) -> str:
    """An answer as compared for agreement: VQA-normalised (case, punctuation, articles, number
    words), so "a dog", "Dog." and "dog" agree."""
    return normalize_answer(answer or "").strip()


def agrees(answer: str | None, other: str | None) -> bool:
    """Whether two answers say the same thing: equal after ``normalized``, or one names the
    other ("a tabby cat" and "cat"; not "cat" and "catamaran")."""
    a, b = normalized(answer), normalized(other)
    return bool(a) and bool(b) and (a == b or names(a, b) or names(b, a))


def names(text: str | None, answer: str | None) -> bool:
    """Whether ``text`` (a sub-answer, a description) names ``answer`` as a whole word or phrase."""
    a, t = normalized(answer), normalized(text)
    return bool(a) and bool(t) and re.search(rf"(?<!\w){re.escape(a)}(?!\w)", t) is not None


def share_naming(texts: Iterable[str], answer: str | None) -> float | None:
    """The share of ``texts`` that name ``answer``; None when there are none."""
    texts = [t for t in texts if t and t.strip()]
    return sum(names(t, answer) for t in texts) / len(texts) if texts else None


def majority_share(answers: Sequence[str | None], answer: str | None) -> float | None:
    """The share of ``answers`` (sampled replies) that agree with ``answer``; None without any."""
    return sum(agrees(a, answer) for a in answers) / len(answers) if answers else None
