"""``idealagent calibrate``: fit a Calibration (calibration.py) on a labelled results file.

Every candidate answer a run produced is a training example, not only the final answers: the
direct answer of each sample, the answer on its closer look (fitted on its own where there
are enough of them, else as a direct answer) and the verdict of each round, each with the signals recorded in
its trace and, as its label, its own score against the gold answers (the benchmark's metric).
So the fit learns both when to stop and which candidate to keep.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from idealagent.calibration import Calibration, CandidateKind, Example, Method, RoundRecord, fit
from idealagent.errors import InputError
from idealagent.evaluation.results import header_field
from idealagent.evaluation.rows import is_failed
from idealagent.evaluation.scoring import score


def labelled_candidates(header: dict[str, Any], rows: Sequence[dict[str, Any]]) -> dict[CandidateKind, list[Example]]:
    """(signals, score) of every direct answer and every verdict with an answer in ``rows``.

    Failed samples and traces without signals (written before calibration existed) give none.
    """
    vqa_metric = header_field(header, "vqa_metric")
    examples: dict[CandidateKind, list[Example]] = {"direct": [], "look": [], "verdict": []}

    def label(row: dict[str, Any], answer: str, choice_index: int | None) -> float:
        return _label(row, answer, choice_index, vqa_metric)

    for row in rows:
        trace = row.get("trace") or {}
        if is_failed(row) or not trace:
            continue
        direct = trace.get("direct") or {}
        if direct.get("answer") is not None and direct.get("error") is None:
            examples["direct"].append((direct.get("signals") or {}, label(row, direct["answer"],
                                                                          direct.get("choice_index"))))
        looked = (trace.get("search") or {}).get("answer") or {}
        if looked.get("answer") is not None and looked.get("signals"):
            examples["look"].append((looked["signals"], label(row, looked["answer"], looked.get("choice_index"))))
        for round_ in trace.get("rounds") or []:
            verdict = round_.get("verdict") or {}
            if verdict.get("answer") is not None and verdict.get("signals"):
                examples["verdict"].append((verdict["signals"], label(row, verdict["answer"],
                                                                      verdict.get("choice_index"))))
    return examples


def round_records(header: dict[str, Any], rows: Sequence[dict[str, Any]]) -> dict[int, RoundRecord]:
    """For each round number: the samples whose trace has a verdict in it, and those it fixed
    (every candidate before it wrong, its verdict right). Failed samples count in neither."""
    vqa_metric = header_field(header, "vqa_metric")
    reached: dict[int, int] = {}
    fixed: dict[int, int] = {}
    for row in rows:
        trace = row.get("trace") or {}
        if is_failed(row) or not trace:
            continue

        def right(answer: str | None, choice_index: int | None) -> bool:
            return answer is not None and _label(row, answer, choice_index, vqa_metric) > 0.5

        direct = trace.get("direct") or {}
        looked = (trace.get("search") or {}).get("answer") or {}
        before = right(direct.get("answer"), direct.get("choice_index")) or right(looked.get("answer"),
                                                                                   looked.get("choice_index"))
        for round_ in trace.get("rounds") or []:
            verdict = round_.get("verdict")
            if not verdict:
                continue
            index = int(round_.get("index", 0))
            now = right(verdict.get("answer"), verdict.get("choice_index"))
            reached[index] = reached.get(index, 0) + 1
            fixed[index] = fixed.get(index, 0) + int(now and not before)
            before = before or now
    return {index: RoundRecord(reached=count, fixed=fixed[index]) for index, count in sorted(reached.items())}


def _label(row: dict[str, Any], answer: str, choice_index: int | None, vqa_metric: str) -> float:
    """A candidate's score against the row's gold answers, with the benchmark's metric."""
    return score(row["metric"], answer, choice_index, row.get("answers") or [], row.get("gold_index"),
                 vqa_metric=vqa_metric)


def calibrate(paths: Sequence[Path], method: Method = "logistic", *, force: bool = False) -> Calibration:
    """Fit a calibration on the results files ``paths`` (shards of one run merge)."""
    from idealagent.evaluation.report import read_results

    header, rows = read_results(paths, force=force)
    examples = labelled_candidates(header, rows)
    if not any(examples.values()):
        raise InputError("the results hold no candidate with signals to learn from; run `idealagent eval` "
                         "with this version first")
    fitted_on = {"files": [Path(p).name for p in paths], "benchmark": header.get("benchmark"),
                 "split": header.get("split"), "preset": header.get("preset"), "samples": len(rows),
                 "candidates": {kind: len(found) for kind, found in examples.items()}}
    return fit(examples, method, fitted_on).model_copy(update={"rounds": round_records(header, rows)})
