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
from typing import Any

_NUMBERING = re.compile(
    r"^\s*(?:[-*•]+|\(?\d+[.):]|\(?[a-z][.)]|(?:sub-?)?questions?\s*\d*\s*[:.)-]|q\d*\s*[:.)-])\s*",
    re.IGNORECASE,
)
_UNDECIDED = {
    "", "not sure", "unsure", "unknown", "i don't know", "i do not know", "cannot tell",
    "can't tell", "cannot be determined", "unclear", "n/a", "none", "uncertain",
}
_CONFIDENCE_WORDS = {
    "very high": 0.95, "high": 0.85, "medium": 0.6, "moderate": 0.6, "low": 0.3,
    "very low": 0.1, "certain": 0.95, "sure": 0.85,
}


def extract_json(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text`` (code fences, prose around it and trailing commas
    are tolerated), or None."""
    if not isinstance(text, str):
        return None
    start = text.find("{")
    while start != -1:
        candidate = _balanced_object(text, start)
        if candidate:
            for attempt in (candidate, re.sub(r",\s*([}\]])", r"\1", candidate)):
                try:
                    value = json.loads(attempt)
                except (json.JSONDecodeError, RecursionError):
                    continue
                if isinstance(value, dict):
                    return value
        start = text.find("{", start + 1)
    return None


def _balanced_object(text: str, start: int) -> str | None:
    depth, in_string, escaped = 0, False, False
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
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


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
    """``analysis``, ``answer`` and ``confidence`` found in a reply; missing keys are absent."""
    data = extract_json(text)
    if data is not None:
        return {k: data[k] for k in ("analysis", "answer", "confidence") if k in data}
    fields: dict[str, Any] = {}
    patterns = {
        "analysis": r"analysis\s*[:\-]\s*(.+)",
        "answer": r"(?:final |more likely |predicted )?answer\s*[:\-]\s*(.+)",
        "confidence": r"confidence\s*[:\-]\s*(.+)",
    }
    for key, pattern in patterns.items():
        matches = re.findall(pattern, text or "", flags=re.IGNORECASE)
        if matches:
            fields[key] = matches[-1].strip()
    return fields


def parse_confidence(value: Any) -> float | None:
    """A confidence in [0, 1] from a number, a percentage or a word; None if there is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = str(value).strip().lower()
        if text in _CONFIDENCE_WORDS:
            return _CONFIDENCE_WORDS[text]
        match = re.search(r"-?\d+(?:\.\d+)?", text)
        if not match:
            return next((v for k, v in _CONFIDENCE_WORDS.items() if k in text), None)
        number = float(match.group())
        if "%" in text[match.end() : match.end() + 2]:
            number /= 100
    if number != number:  # NaN
        return None
    if 1 < number <= 100:  # "85" meant as a percentage
        number /= 100
    return min(max(number, 0.0), 1.0)


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
    """The index of the choice an answer names (by text, letter or number), or None."""
    if not isinstance(answer, str | int) or isinstance(answer, bool) or not choices:
        return None
    text = str(answer).strip()
    lowered = [c.strip().lower() for c in choices]
    cleaned = text.lower().strip(string.punctuation + " ")
    if cleaned in lowered:
        return lowered.index(cleaned)
    # "B", "(B)", "B) cat", "Answer 2", "option 3: ..."
    marker = re.match(
        r"^(?:answer|option|choice)?\s*\(?([A-Za-z]|\d{1,2})\)?(?:[.):\s]|$)", text, flags=re.IGNORECASE
    )
    if marker:
        token = marker.group(1)
        index = int(token) - 1 if token.isdigit() else string.ascii_uppercase.find(token.upper())
        rest = text[marker.end() :].strip(string.punctuation + " ").lower()
        single_letter_word = len(token) == 1 and token.isalpha() and token.lower() in ("a", "i") and rest
        if 0 <= index < len(choices) and not single_letter_word:
            return index
    contained = [i for i, c in enumerate(lowered) if c and re.search(rf"\b{re.escape(c)}\b", cleaned)]
    if len(contained) == 1:
        return contained[0]
    close = difflib.get_close_matches(cleaned, lowered, n=1, cutoff=0.8)
    return lowered.index(close[0]) if close else None


def short_answer(text: str, max_words: int = 8) -> str:
    """The first line or sentence of ``text``, without an "Answer:" label, quotes or a
    trailing full stop, at most ``max_words`` words ("" if nothing is left)."""
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    line = re.sub(r"^\s*(answer|a)\s*:\s*", "", line, flags=re.IGNORECASE)
    line = re.split(r"(?<=[.!?])\s", line, maxsplit=1)[0]
    return " ".join(line.split()[:max_words]).strip(" \"'`{}[]").rstrip(".!,;:").strip()
