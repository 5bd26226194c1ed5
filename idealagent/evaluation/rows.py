"""What a results row counts for: its score, confidence, baseline and rounds, as the summary
(``report.py``) and the figures (``plots.py``) both read them.

A row is one parsed sample line of a results file (see ``results.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from idealagent.errors import InputError
from idealagent.evaluation.scoring import score


def is_row(row: Any) -> bool:
    """Whether a parsed line has what the summary reads: a string id and numeric-or-null figures."""
    number = (int, float, type(None))
    return (isinstance(row, dict) and isinstance(row.get("id"), str) and "score" in row
            and isinstance(row["score"], number) and isinstance(row.get("confidence"), number))  # fmt: skip


def is_failed(row: dict[str, Any]) -> bool:
    """A sample that could not be scored (its error is set); it counts as wrong."""
    return row.get("error") is not None or row.get("score") is None


def agent_scores(rows: Sequence[dict[str, Any]]) -> tuple[list[float], list[float | None]]:
    """Each row's score and confidence as the report counts them: a failed sample is 0 and 0."""
    failed = [is_failed(r) for r in rows]
    scores = [0.0 if f else float(r["score"]) for r, f in zip(rows, failed)]
    return scores, [0.0 if f else r.get("confidence") for r, f in zip(rows, failed)]


def baseline_scores(rows: Sequence[dict[str, Any]]) -> tuple[list[float], int]:
    """Each row's baseline score (a failed or missing baseline answer is 0), and the failures."""
    answers = [r.get("baseline") or {} for r in rows]
    failed = [a.get("error") is not None or a.get("score") is None for a in answers]
    return [0.0 if f else float(a["score"]) for a, f in zip(answers, failed)], sum(failed)


def rounds_used(row: dict[str, Any]) -> int:
    """How many rounds of the row's trace were judged: the rounds the loop counts (0 when it
    failed before the first verdict)."""
    return sum(1 for round_ in (row.get("trace") or {}).get("rounds") or [] if round_.get("verdict"))


def paired_with_baseline(rows: Sequence[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Agent and baseline scores of the rows whose baseline has a score (the same samples for
    both sides); a failed agent answer there counts 0, as everywhere."""
    paired = [r for r in rows if isinstance(r.get("baseline"), dict) and r["baseline"].get("score") is not None]
    return agent_scores(paired)[0], [float(r["baseline"]["score"]) for r in paired]


def direct_score(row: dict[str, Any], vqa_metric: str) -> float | None:
    """The score of the direct answer in the row's trace, with the row's metric; None when the
    trace has no direct answer or the row lacks what scoring needs."""
    direct = (row.get("trace") or {}).get("direct") or {}
    if direct.get("answer") is None or row.get("metric") is None:
        return None
    try:
        return score(row["metric"], direct["answer"], direct.get("choice_index"), row.get("answers") or [],
                     row.get("gold_index"), vqa_metric=vqa_metric)  # fmt: skip
    except InputError:
        return None
