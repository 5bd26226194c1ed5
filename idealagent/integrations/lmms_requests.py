"""An lmms-eval request as the agent's Sample, and the agent's answer as the reply lmms-eval
scores. Pure functions: nothing here imports lmms-eval, so they are tested on their own.

lmms-eval hands a model one prompt string that already holds the task's answer-format
instruction ("Answer with the option's letter from the given choices directly."). The
instruction stays in the question the agent works on; options written one per line ("A. cat",
"(B) dog", "C) bird") become a multiple-choice Sample, "yes or no" a yes/no one, anything else
an open question. The reply is the option's letter when the prompt asks for a letter, else the
answer's text, cut at the request's ``until`` strings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from idealagent.parsing import choice_letter
from idealagent.trace import Sample, Trace

# An option line: "A. cat", "(B) dog", "C) bird"; the letters must run A, B, C... in order.
_OPTION = re.compile(r"^\s*\(?([A-Z])[.)]\s+(\S.*?)\s*$")
# The prompt asks for the option's letter: "letter", "A, B, C, or D", "A or B", or 字母 (letter).
_ASKS_LETTER = re.compile(r"\bletters?\b|\b[A-Z](?:, [A-Z])*,? or [A-Z]\b|字母", re.IGNORECASE)
_ASKS_YES_NO = re.compile(r"\byes or no\b", re.IGNORECASE)
# lmms-eval's placeholder for where the image goes, which some task prompts keep.
_IMAGE_TOKEN = re.compile(r"<image>\s*")


@dataclass(frozen=True)
class Request:
    """One lmms-eval request as the agent runs it: the Sample, and how to write the reply."""

    sample: Sample
    letter: bool = False  # reply with the option's letter (A, B, ...) rather than its text
    until: tuple[str, ...] = ()  # cut the reply at the first of these
    max_words: int | None = None  # at most this many words (from max_new_tokens)

    def with_image(self, image: Any) -> Sample:
        """The Sample with the doc's image."""
        return self.sample.model_copy(update={"image": image})


def to_request(prompt: str, gen_kwargs: dict[str, Any] | None, sample_id: str) -> Request:
    """The Request for lmms-eval's prompt string and generation kwargs; its Sample has no image
    yet (``Request.with_image`` adds it when the agent takes the sample in)."""
    text = _IMAGE_TOKEN.sub("", prompt).strip()
    lines = text.splitlines()
    start, options = _options(lines)
    until, max_words = generation_limits(gen_kwargs or {})
    if options and len({option.lower() for option in options}) == len(options):
        rest = lines[:start] + lines[start + len(options):]
        question = "\n".join(line for line in rest if line.strip()).strip() or text
        sample = Sample(question=question, kind="multiple_choice", choices=options, id=sample_id)
        return Request(sample, bool(_ASKS_LETTER.search(question)), until, max_words)
    # Options that repeat each other cannot be told apart by text: the whole prompt is the question.
    if _ASKS_YES_NO.search(text):
        sample = Sample(question=text, kind="yes_no", id=sample_id)
    else:
        sample = Sample(question=text, kind="open", id=sample_id)
    return Request(sample, False, until, max_words)


def _options(lines: Sequence[str]) -> tuple[int, list[str]]:
    """(index of the first line, texts) of the first run of two or more option lines A, B, ...;
    (0, []) if there is none."""
    for start, line in enumerate(lines):
        found: list[str] = []
        for candidate in lines[start:]:
            match = _OPTION.match(candidate)
            if not match or match.group(1) != choice_letter(len(found)):
                break
            found.append(match.group(2))
        if len(found) >= 2:
            return start, found
    return 0, []


def generation_limits(gen_kwargs: dict[str, Any]) -> tuple[tuple[str, ...], int | None]:
    """(``until`` strings, word limit) from a request's generation kwargs.

    ``max_new_tokens`` becomes a limit on words: the agent's answer comes from several models'
    tokens, so there is no one tokenizer to count with, and a word is at least one token.
    """
    until = gen_kwargs.get("until") or ()
    until = (until,) if isinstance(until, str) else tuple(str(u) for u in until)
    limit = gen_kwargs.get("max_new_tokens")
    return tuple(u for u in until if u), int(limit) if limit else None


def reply(request: Request, trace: Trace) -> str:
    """The text lmms-eval scores: the option's letter or text, or the open answer; "" when the
    agent gave no answer (its trace says why)."""
    sample = request.sample
    if trace.answer is None:
        text = ""
    elif sample.choices and trace.choice_index is not None:
        text = choice_letter(trace.choice_index) if request.letter else sample.choices[trace.choice_index]
    else:
        text = trace.answer
    return limit_reply(text, request.until, request.max_words)


def limit_reply(text: str, until: Sequence[str], max_words: int | None) -> str:
    """``text`` cut before the first ``until`` string and after ``max_words`` words."""
    for stop in until:
        text = text.split(stop, 1)[0]
    if max_words is not None and len(text.split()) > max_words:
        text = " ".join(text.split()[:max_words])
    return text.strip()
