"""One benchmark question with its gold answers, and the reader helpers every format shares.

An ``EvalItem`` checks itself when built (the same rules ``Sample`` applies, plus the gold), so a
loader can turn a bad record into one "file:line: reason" problem instead of a sample that fails
later, and ``to_sample`` never raises for an item a loader kept.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from idealagent.errors import InputError
from idealagent.trace import ENTAILMENT_LABELS, TASK_KINDS, YES_NO, Sample, TaskKind

Metric = Literal["vqa", "exact", "choice"]  # how a prediction is scored (see evaluation/scoring.py)
METRICS: tuple[str, ...] = ("vqa", "exact", "choice")
CHOICE_KINDS: tuple[str, ...] = ("multiple_choice", "yes_no", "entailment")
DEFAULT_LABELS: dict[str, tuple[str, ...]] = {"yes_no": YES_NO, "entailment": ENTAILMENT_LABELS}


@dataclass(frozen=True)
class EvalItem:
    """A benchmark question: what the agent is asked (``to_sample``) and what it is scored against."""

    id: str  # stable and unique within (benchmark, split), e.g. VQAv2's question_id
    image: str  # path of the image file; a missing file fails that sample, not the load
    question: str  # for entailment: the hypothesis sentence
    kind: TaskKind
    choices: list[str] | None  # multiple_choice only; yes_no/entailment get their labels from Sample
    answers: list[str]  # the 10 human answers (VQA metric) or [the gold answer text]
    gold_index: int | None  # index into the sample's choices, for choice kinds
    metric: Metric
    question_type: str | None = None  # for per-type tables: VQAv2 answer_type, GQA structural type...

    def __post_init__(self) -> None:
        # Mirrors Sample's checks so that a kept item always becomes a valid Sample.
        if not self.id:
            raise InputError("the record has no id")
        if not self.question.strip():
            raise InputError("the question is empty")
        if self.kind not in TASK_KINDS:
            raise InputError(f"unknown task kind {self.kind!r}; choose one of: {', '.join(TASK_KINDS)}")
        if self.metric not in METRICS:
            raise InputError(f"unknown metric {self.metric!r}; choose one of: {', '.join(METRICS)}")
        if not self.answers or any(not a.strip() for a in self.answers):
            raise InputError("the record has no gold answer")
        if self.kind == "open":
            if self.choices:
                raise InputError("an open question takes no choices")
            return
        choices = self.sample_choices
        if len(choices) < 2 or any(not c.strip() for c in choices):
            raise InputError(f"a {self.kind} question needs at least 2 non-empty choices")
        if len({c.strip().lower() for c in choices}) != len(choices):
            raise InputError("the choices repeat each other")
        if self.gold_index is None or not 0 <= self.gold_index < len(choices):
            raise InputError(f"gold answer index {self.gold_index} is not one of the {len(choices)} choices")

    @property
    def sample_choices(self) -> list[str]:
        """The choices the agent will see: the item's own, or the fixed labels of its kind."""
        return list(self.choices or DEFAULT_LABELS.get(self.kind, ()))

    def to_sample(self) -> Sample:
        """The agent's input for this item (no gold attached)."""
        return Sample(
            id=self.id, image=self.image, question=self.question, kind=self.kind, choices=self.choices
        )


class BadRecord(Exception):
    """One record of a data file is unusable; the loader records why and goes on."""


def field(record: Any, name: str, kind: type | tuple[type, ...] = str, *, optional: bool = False) -> Any:
    """``record[name]`` checked for presence and type, else ``BadRecord`` with a one-line reason."""
    if not isinstance(record, dict):
        raise BadRecord(f"expected a JSON object, got {type(record).__name__}")
    if name not in record or record[name] is None:
        if optional:
            return None
        raise BadRecord(f"missing field {name!r}")
    value = record[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python, never a valid index or id here.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        wanted = " or ".join(k.__name__ for k in kinds)
        raise BadRecord(f"field {name!r} is {type(value).__name__}, expected {wanted}")
    return value


def string_list(record: Any, name: str) -> list[str]:
    """A required non-empty list of strings."""
    values = field(record, name, list)
    if not values or not all(isinstance(v, str) for v in values):
        raise BadRecord(f"field {name!r} must be a non-empty list of strings")
    return values


def record_id(value: Any) -> str:
    """Ids arrive as ints or strings; the results file keeps strings."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or str(value) == "":
        raise BadRecord(f"bad id {value!r}")
    return str(value)


def read_json(path: Path) -> Any:
    """A whole JSON file; an unreadable one is the user's to fix, so one line, no traceback."""
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise InputError(
            f"{path} is not valid JSON ({err.msg} at line {err.lineno}); download it again"
        ) from None
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror}") from None


def read_jsonl(path: Path, problems: list[str]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed record) per non-blank line; a bad JSON line becomes a problem."""
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as err:
                    problems.append(f"{path.name}:{number}: not valid JSON ({err.msg})")
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text; is it the right file?") from None


class ItemCollector:
    """Builds items record by record, turning bad records and repeated ids into problems."""

    def __init__(self, problems: list[str] | None = None) -> None:
        self.items: list[EvalItem] = []
        self.problems: list[str] = problems if problems is not None else []
        self._ids: set[str] = set()

    def add(self, where: str, build: Callable[[], EvalItem]) -> None:
        """Run ``build``; keep its item, or record ``where: reason`` and skip it."""
        try:
            item = build()
        except (BadRecord, InputError) as err:
            self.problems.append(f"{where}: {err}")
            return
        if item.id in self._ids:
            self.problems.append(f"{where}: id {item.id!r} repeats an earlier record")
            return
        self._ids.add(item.id)
        self.items.append(item)

    def result(self) -> tuple[list[EvalItem], list[str]]:
        """The kept items in file order, and the problems."""
        return self.items, self.problems


def require_file(path: Path, what: str) -> Path:
    """``path`` if it exists, else an InputError naming it and what it should hold."""
    if not path.is_file():
        raise InputError(f"{path} not found: expected {what} there (see eval/README.md for the layout)")
    return path


def gold_index(answer: Any, choices: list[str]) -> int:
    """The index of ``answer`` among ``choices``: an int index, or the choice's text (any case)."""
    if isinstance(answer, int) and not isinstance(answer, bool):
        if not 0 <= answer < len(choices):
            raise BadRecord(f"answer index {answer} is out of range for {len(choices)} choices")
        return answer
    if isinstance(answer, str):
        wanted = answer.strip().lower()
        for index, choice in enumerate(choices):
            if choice.strip().lower() == wanted:
                return index
        raise BadRecord(f"answer {answer!r} is not one of the choices")
    raise BadRecord(f"answer is {type(answer).__name__}, expected a choice index or the choice's text")
