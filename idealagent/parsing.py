"""Tolerant parsers for LLM replies when structured output is not available.

Every function here takes arbitrary text and either returns a value or ``None``/``[]``; none
of them raises on bad input. Validation against the task (is the answer one of the choices?)
happens in roles.py, which turns a ``None`` into a retry.
"""

from __future__ import annotations

import difflib
import json
import re
import string
from collections.abc import Iterator
from typing import Any

_NUMBERING = re.compile(
    r"^\s*(?:[-*•]+|\(?\d+[.):]|\(?[a-z][.)]|(?:sub-?)?questions?\s*\d*\s*[:.)-]|q\d*\s*[:.)-])\s*",
    re.IGNORECASE,
)
# Replies that decline to answer. "none" is not one of them: it is a real answer ("What is
# on the plate?" "none"; VQAv2 scores it like any other word).
_UNDECIDED = {
    "", "not sure", "unsure", "unknown", "i don't know", "i do not know", "i dont know", "cannot tell",
    "can't tell", "cannot be determined", "can't be determined", "unclear", "n/a", "uncertain",
}
_FIELD_LABELS = {
    "analysis": r"\banalysis",
    "answer": r"\b(?:final |more likely |predicted )?answer",
    "confidence": r"\bconfidence",
}
_ANY_LABEL = r"\b(?:analysis|answer|confidence)\b"
_CONFIDENCE_WORDS = {
    "very high": 0.95, "high": 0.85, "medium": 0.6, "moderate": 0.6, "low": 0.3,
    "very low": 0.1, "certain": 0.95, "sure": 0.85,
}


def extract_json(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text`` (code fences, prose around it and trailing commas
    are tolerated), or None. An object cut off at the end of the text (the model ran out of
    tokens) is closed after its last complete member, so ``{"answer": "yes", "confidence": 0.7``
    still reads as both fields, while ``{"answer": "yes", "confidence": 0.`` keeps only the answer."""
    if not isinstance(text, str):
        return None
    start = text.find("{")
    first = start
    while start != -1:
        candidate = _balanced_object(text, start)
        if candidate:
            value = _loads_object(candidate)
            if value is not None:
                return value
        start = text.find("{", start + 1)
    return _truncated_object(text, first) if first != -1 else None


def _loads_object(candidate: str) -> dict[str, Any] | None:
    for attempt in (candidate, re.sub(r",\s*([}\]])", r"\1", candidate)):
        try:
            value = json.loads(attempt)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return None


def _truncated_object(text: str, start: int, tries: int = 4) -> dict[str, Any] | None:
    """The object that opens at ``start`` and never closes, closed at the end of the text or
    at one of its last commas (dropping a member that was cut off halfway)."""
    stack: list[str] = []
    cuts: list[tuple[int, str]] = []  # (cut position, closers needed there)
    cut_in_string = False
    for i, ch in _structure(text, start):
        if ch == '"':
            cut_in_string = True  # the text ends inside a string
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]":
            if not stack or stack.pop() != ch:
                return None  # not one JSON value
            if not stack:
                return None  # it closed: not truncated (and _balanced_object rejected it)
        else:  # a comma
            cuts.append((i, "".join(reversed(stack))))
    candidates = [] if cut_in_string else [text[start:].rstrip().rstrip(",:") + "".join(reversed(stack))]
    candidates += [text[start:cut] + closers for cut, closers in reversed(cuts[-tries:])]
    for candidate in candidates:
        value = _loads_object(candidate)
        if value is not None:
            return value
    return None


def _balanced_object(text: str, start: int) -> str | None:
    """The text of the ``{...}`` that opens at ``start``, up to the brace that closes it, or None."""
    depth = 0
    for i, ch in _structure(text, start):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


def _structure(text: str, start: int) -> Iterator[tuple[int, str]]:
    """The brackets and commas of JSON-like text from ``start``, with their positions, skipping
    what is inside strings (escapes included); a string still open at the end yields one last
    ``(len(text), '"')``."""
    in_string = escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{}[],":
            yield i, ch
    if in_string:
        yield len(text), '"'


def message_text(message: Any) -> str:
    """The text of a chat message (its content blocks joined), or of a plain value; "" for None."""
    if message is None:
        return ""
    content = getattr(message, "content", message)
    if isinstance(content, list):  # content blocks
        return "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in content)
    return str(content)


def parse_sub_questions(text: str) -> list[str]:
    """Sub-questions from a JSON ``{"sub_questions": [...]}`` reply or from a list in prose."""
    data = extract_json(text)
    if data is not None:
        items = data.get("sub_questions", data.get("questions"))
        if isinstance(items, list):
            return [q.strip() for q in items if isinstance(q, str) and q.strip()]
    questions: list[str] = []
    for line in (text or "").splitlines():
        line = _NUMBERING.sub("", line).strip().strip('"').strip()
        # A line may hold several questions; keep each one that ends with a question mark.
        for part in re.findall(r"[^?]*\?", line):
            part = _NUMBERING.sub("", part).strip().strip('"').strip()
            if len(part) > 3:
                questions.append(part)
    return questions


def parse_verdict_fields(text: str) -> dict[str, Any]:
    """``analysis``, ``answer`` and ``confidence`` found in a reply; missing keys are absent.

    Without a JSON object, each ``label: value`` (the label may be quoted, as in broken JSON)
    gives its value up to the end of the line, a closing quote, or the next label, so
    ``answer: yes, confidence: 0.7`` reads as the answer ``yes`` and the confidence ``0.7``.
    """
    data = extract_json(text)
    if data is not None:
        return {k: data[k] for k in ("analysis", "answer", "confidence") if k in data}
    fields: dict[str, Any] = {}
    for key, label in _FIELD_LABELS.items():
        matches = re.findall(
            rf"{label}\"?\s*[:\-]\s*(?:\"([^\"\n]*)\"|(.+?)(?=\s*[,;]?\s*\"?{_ANY_LABEL}\"?\s*[:\-]|$))",
            text or "", flags=re.IGNORECASE | re.MULTILINE,
        )
        if matches:
            quoted, bare = matches[-1]
            value = (quoted or bare).strip().rstrip("}]").strip()
            fields[key] = value
    return fields


def parse_confidence(value: Any) -> float | None:
    """A confidence in [0, 1], or None if ``value`` holds none that can be trusted.

    - a number in [0, 1] is taken as it is: ``0.7``, ``"0.7"``, ``1``;
    - a fraction is divided out: ``"8/10"`` and ``"4 out of 5"`` are 0.8 (None if above 1);
    - a percentage is divided by 100: ``"85%"``, ``"85 percent"``, and a whole number from
      10 to 100 without the sign (``85``), which can only be meant as one;
    - a word: ``"high"`` is 0.85, ``"very low"`` 0.1 (see ``_CONFIDENCE_WORDS``);
    - anything else is None and the reply is refused: ``1.5``, ``8`` (8%? 8 of 10?), ``250``,
      ``-3``, ``"none"``. Clamping such a number would turn a misunderstanding into a score.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _unit_number(float(value), percent=False)
    text = str(value).strip().lower()
    if text in _CONFIDENCE_WORDS:
        return _CONFIDENCE_WORDS[text]
    fraction = re.search(r"(\d+(?:\.\d+)?)\s*(?:/|out of)\s*(\d+(?:\.\d+)?)", text)
    if fraction:
        numerator, denominator = float(fraction.group(1)), float(fraction.group(2))
        return numerator / denominator if 0 < denominator and numerator <= denominator else None
    match = re.search(r"-?\d+(?:\.\d+)?", text)
    if not match:
        return next((v for k, v in _CONFIDENCE_WORDS.items() if k in text), None)
    percent = re.match(r"\s*(?:%|percent)", text[match.end() :]) is not None
    return _unit_number(float(match.group()), percent=percent)


def _unit_number(number: float, *, percent: bool) -> float | None:
    if percent:
        return number / 100 if 0 <= number <= 100 else None
    if 0 <= number <= 1:
        return number
    if number.is_integer() and 10 <= number <= 100:
        return number / 100
    return None  # NaN, infinities, negatives, 1.5, 8, 250


def normalize_question(question: str) -> str:
    """A canonical form for spotting repeated sub-questions."""
    text = question.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(text.split())


def is_undecided(answer: str | None) -> bool:
    """Whether an answer is a non-answer such as "not sure" or "unknown"."""
    if answer is None:
        return True
    return answer.strip().lower().strip(string.punctuation + " ") in _UNDECIDED


def choice_letter(index: int) -> str:
    """A, B, C ... for a choice index."""
    return string.ascii_uppercase[index]


def match_choice(answer: Any, choices: list[str]) -> int | None:
    """The index of the choice an answer names, or None.

    A choice's own text wins: with choices 2, 3, 4, 5 the answer "3 dogs" is "3", not the
    third choice. A position is read from a letter ("B", "(b)", "B) dog"), from a number that
    says it is one ("option 2", "answer 1", "(2)"), and from a reply that is nothing but a
    number ("2") when no choice is a number; never from a number followed by words.
    """
    if not isinstance(answer, str | int) or isinstance(answer, bool) or not choices:
        return None
    text = str(answer).strip()
    lowered = [c.strip().lower() for c in choices]
    cleaned = text.lower().strip(string.punctuation + " ")
    if cleaned in lowered:
        return lowered.index(cleaned)
    index = _choice_position(text, lowered)
    if index is not None:
        return index
    contained = [i for i, c in enumerate(lowered) if c and re.search(rf"\b{re.escape(c)}\b", cleaned)]
    if len(contained) == 1:
        return contained[0]
    close = difflib.get_close_matches(cleaned, lowered, n=1, cutoff=0.8)
    return lowered.index(close[0]) if close else None


def _choice_position(text: str, lowered: list[str]) -> int | None:
    """The index a letter or an explicit number at the start of ``text`` points to."""
    marker = re.match(
        r"^(answer|option|choice)?\s*(\()?([A-Za-z]|\d{1,2})\)?(?:[.):\s]|$)", text, flags=re.IGNORECASE
    )
    if not marker:
        return None
    label, bracket, token = marker.groups()
    rest = text[marker.end() :].strip(string.punctuation + " ")
    if token.isdigit():
        numeric_choices = any(re.fullmatch(r"[\d.,]+", c) for c in lowered)
        if not (label or bracket) and (rest or numeric_choices):
            return None  # "3 dogs", or "3" among choices 2, 3, 4, 5: a count, not a position
        if token in lowered:
            return lowered.index(token)  # "answer 3" among choices 2, 3, 4, 5
        index = int(token) - 1
    else:
        if token.lower() in ("a", "i") and rest and not (label or bracket):
            return None  # "a cat", "I think so": a word, not a letter
        index = string.ascii_uppercase.find(token.upper())
    return index if 0 <= index < len(lowered) else None


def short_answer(text: str, max_words: int = 8) -> str:
    """The first line or sentence of ``text``, without an "Answer:" label, quotes or a
    trailing full stop, at most ``max_words`` words ("" if nothing is left)."""
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    line = re.sub(r"^\s*(answer|a)\s*:\s*", "", line, flags=re.IGNORECASE)
    line = re.split(r"(?<=[.!?])\s", line, maxsplit=1)[0]
    return " ".join(line.split()[:max_words]).strip(" \"'`{}[]").rstrip(".!,;:").strip()
