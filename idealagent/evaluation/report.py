"""Reading results files (one per shard) and summarising them: accuracy, calibration, cost.

A results file is JSON Lines written by the evaluation runner: a header line
(``{"header": {...}}``) and one line per finished sample (see ``results.py``). Several files
(shards of one run, or a run resumed into several files) merge when their headers share the
run's fingerprint. The summary is plain JSON-able data: ``idealagent.report_console.render_report``
draws it, and ``plots.write_plots`` turns the rows into PNG figures.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from idealagent.calibration import Calibration
from idealagent.errors import InputError
from idealagent.evaluation.loop_stats import agent_stats, answer_sources, exemplar_echo, loop_changes, split_sentences
from idealagent.evaluation.results import fingerprint_difference, header_field, read_file
from idealagent.evaluation.rows import (
    agent_scores,
    baseline_scores,
    direct_score,
    is_failed,
    paired_with_baseline,
    rounds_used,
)
from idealagent.evaluation.trust import (
    accuracy_at_coverage,
    area_under_risk_coverage,
    auroc,
    brier_score,
    expected_calibration_error,
    paired_comparison,
    risk_coverage,
)
from idealagent.parsing import is_undecided
from idealagent.trace import Trace

log = logging.getLogger(__name__)

NO_TYPE = "(no type)"  # the per-type key of rows without a question_type
# The few-shot replies whose sentences a run should not parrot: (prompt name, reply field).
EXEMPLAR_REPLIES = (("questioner", "sub_questions"), ("reasoner", "analysis"))


def read_results(
    paths: Sequence[Path], *, force: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The merged header and rows of one or more results files.

    Each file is read by ``results.read_file`` leniently: an unparseable line is skipped with a
    warning (a killed run leaves a truncated last line);
    headers must share the fingerprint (``results.FINGERPRINT_KEYS``), else InputError naming
    every differing field, unless ``force`` (then each difference is a warning and the first
    file's header describes the merge); an id seen twice keeps its first row.
    Rows come back in the order of the seeded selection (their ``index``).
    The header returned is the first file's, plus ``read``: the files, their shards, and the
    counts of skipped lines and duplicate ids with the warnings issued.
    """
    if not paths:
        raise InputError("no results file given; pass the .jsonl file(s) that `idealagent eval` wrote")
    header: dict[str, Any] | None = None
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    warnings: list[str] = []
    skipped = duplicates = 0
    shards = []
    for path in map(Path, paths):
        read = read_file(path, strict=False)
        file_header, file_rows, problems = read.header or {}, read.rows, read.problems
        warnings += problems
        skipped += len(problems)
        if header is None:
            header = file_header
        else:
            problem = _different_run(header, file_header, path, Path(paths[0]))
            if problem and not force:
                raise InputError(f"{problem}; report them separately, or pass --force to merge them anyway")
            if problem:
                warnings.append(f"{problem}; merged anyway (--force)")
        shards.append(file_header.get("shard"))
        for row in file_rows:
            if row["id"] in seen:
                duplicates += 1
                continue
            seen.add(row["id"])
            rows.append(row)
    # Selection order, not completion order: merged shards then list their rows exactly like one
    # run. (No figure depends on it: accuracy at coverage treats tied confidences as one group.)
    rows.sort(key=lambda row: (row.get("index") is None, row.get("index") or 0))
    if duplicates:
        warnings.append(f"{duplicates} sample id(s) appear in more than one line; kept the first of each")
    for warning in warnings:
        log.warning("%s", warning)
    assert header is not None  # paths is non-empty and every file has a header
    header = dict(header)
    header["read"] = {
        "files": [str(p) for p in paths], "shards": shards, "skipped_lines": skipped,
        "duplicate_ids": duplicates, "warnings": warnings,
    }  # fmt: skip
    return header, rows


def _different_run(first: dict[str, Any], other: dict[str, Any], path: Path, first_path: Path) -> str | None:
    """What makes ``path`` another run than ``first_path`` (limit and shard may differ), or None."""
    difference = fingerprint_difference(first, other, f"in {first_path.name}", f"in {path.name}")
    return f"{path} is from a different run than {first_path} ({difference})" if difference else None


def summarize(header: dict[str, Any], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The run's numbers, overall and per question type (JSON-able).

    ``by_type`` has a group per question type, rows without one under ``NO_TYPE``; it is empty
    when no row has a type (it would only repeat ``overall``). Failed samples score 0 and have confidence 0. Baseline accuracy appears when the header says
    the run had a baseline; the paired comparison (``vs_baseline``) wherever rows have baseline
    scores. ``warning`` is a sentence when the agent is significantly worse than its baseline
    overall (the bootstrap interval of the difference lies wholly below 0), else None.
    """
    if not rows:
        raise InputError("the results hold no finished samples yet; run `idealagent eval` first")
    baseline = bool(header.get("baseline"))
    vqa_metric = header_field(header, "vqa_metric")
    sentences = exemplar_sentences()
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if any(row.get("question_type") for row in rows):
        for row in rows:
            by_type[row.get("question_type") or NO_TYPE].append(row)
    read = header.get("read", {})
    overall = _group(rows, baseline, vqa_metric, sentences)
    return {
        "benchmark": header.get("benchmark"), "split": header.get("split"), "preset": header.get("preset"),
        "settings": header.get("settings", {}), "seed": header.get("seed"), "limit": header.get("limit"),
        "baseline": baseline,
        # What else the fingerprint holds, shown so a reader knows what the numbers are of.
        "models": header.get("settings", {}).get("models") or {},
        "calibration": calibration_name(header.get("settings", {}).get("calibration")),
        "vqa_metric": vqa_metric, "option_scoring": option_scoring(header, rows),
        "prompts_sha256": header.get("prompts_sha256"), "idealagent_version": header.get("idealagent_version"),
        "files": read.get("files", []), "skipped_lines": read.get("skipped_lines", 0),
        "duplicate_ids": read.get("duplicate_ids", 0), "warnings": read.get("warnings", []),
        "warning": worse_than_baseline(overall.get("vs_baseline")),
        "overall": overall,
        "by_type": {name: _group(group, baseline, vqa_metric, sentences) for name, group in sorted(by_type.items())},
        # The benchmark's official score where it is not plain accuracy (HR-Bench: over cycles).
        "benchmark_summary": _benchmark_summary(header, rows),
    }  # fmt: skip


def option_scoring(header: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str | None:
    """How the answerer chose among options (``letter``, or ``likelihood``: V* Bench's official
    per-option log-likelihood), as the header's settings record it (``letter`` in files from
    before the setting); None when no sample had options."""
    if not any(row.get("choices") for row in rows):
        return None
    return str(header.get("settings", {}).get("option_scoring") or "letter")


def calibration_name(recorded: Any) -> str | None:
    """How the report names the calibration a header records (``default``, ``logistic (run.jsonl)``);
    None for files written before the settings held one."""
    if isinstance(recorded, Mapping):
        return Calibration.model_validate(recorded).name
    return None if recorded is None else str(recorded)


def _benchmark_summary(header: dict[str, Any], rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    from idealagent.evaluation.datasets import BENCHMARKS

    benchmark = BENCHMARKS.get(str(header.get("benchmark") or ""))
    return benchmark.summary(list(rows)) if benchmark is not None and benchmark.summary else None


def worse_than_baseline(comparison: dict[str, Any] | None) -> str | None:
    """The warning for a comparison whose whole 95% interval lies below 0, else None."""
    if not comparison or not comparison["significantly_worse"]:
        return None
    low, high = comparison["interval"]
    return (
        f"the agent is significantly worse than its answerer alone: {100 * comparison['difference']:+.1f} "
        f"points (95% interval {100 * low:+.1f} to {100 * high:+.1f}, McNemar p = {comparison['mcnemar_p']:.3g}) "
        f"on {comparison['n']} samples"
    )


def exemplar_sentences(directory: Path | None = None) -> list[str]:
    """The sentences of the few-shot replies that a run might parrot: every questioner
    sub-question and every sentence of a reasoner analysis, from the prompts in ``directory``
    (the shipped ones by default)."""
    from idealagent.prompts import load_prompt

    sentences: list[str] = []
    for name, field in EXEMPLAR_REPLIES:
        for variant in load_prompt(name, directory).kinds.values():
            for exemplar in variant.exemplars:
                reply = exemplar.reply
                if isinstance(reply, str):
                    try:
                        reply = json.loads(reply)
                    except json.JSONDecodeError:
                        continue
                value = reply.get(field) if isinstance(reply, dict) else None
                for text in value if isinstance(value, list) else [value]:
                    if isinstance(text, str):
                        sentences += split_sentences(text)
    return sentences


def _group(
    rows: Sequence[dict[str, Any]], baseline: bool, vqa_metric: str, sentences: Sequence[str]
) -> dict[str, Any]:
    """The figures for one set of rows."""
    n = len(rows)
    scores, confidences = agent_scores(rows)
    traced = [(row, value, _trace(row)) for row, value in zip(rows, scores) if row.get("trace")]
    traces = [trace for _, _, trace in traced]
    by_rounds: dict[int, list[float]] = defaultdict(list)
    for row, value in zip(rows, scores):
        by_rounds[rounds_used(row)].append(value)
    group: dict[str, Any] = {
        "n": n,
        "accuracy": sum(scores) / n,
        "failures": sum(is_failed(r) for r in rows),
        "unknown_rate": sum(not is_failed(r) and is_undecided(r.get("prediction")) for r in rows) / n,
        "ece": expected_calibration_error(confidences, scores),
        "brier": brier_score(confidences, scores),
        "auroc": auroc(confidences, scores),
        "aurc": area_under_risk_coverage(confidences, scores),
        # [confidence threshold, coverage, risk] for each distinct confidence, highest first.
        "risk_coverage": [list(point) for point in risk_coverage(confidences, scores)],
        "accuracy_at_coverage": [list(point) for point in accuracy_at_coverage(confidences, scores)],
        "accuracy_by_rounds": {
            str(k): {"n": len(v), "accuracy": sum(v) / len(v)} for k, v in sorted(by_rounds.items())
        },
        "vs_baseline": paired_comparison(*paired_with_baseline(rows)),
        "loop_changes": loop_changes(
            traces, [value for _, value, _ in traced], [direct_score(row, vqa_metric) for row, _, _ in traced]
        ),
        "answer_sources": answer_sources(traces),
        "exemplar_echo": exemplar_echo(traces, sentences),
        "agent_stats": agent_stats(traces),
    }
    if baseline:
        base, base_failures = baseline_scores(rows)
        group["baseline_accuracy"] = sum(base) / n
        group["baseline_failures"] = base_failures
    return group


def sample_row(rows: Sequence[dict[str, Any]], sample_id: str) -> tuple[dict[str, Any], Trace]:
    """The row of the sample ``sample_id`` and its Trace; InputError naming a few known ids if
    no row has it."""
    row = next((row for row in rows if str(row["id"]) == sample_id), None)
    if row is None:
        known = ", ".join(str(row["id"]) for row in rows[:3]) + (", ..." if len(rows) > 3 else "")
        raise InputError(f"no sample {sample_id!r} in the results" + (f" (its ids: {known})" if rows else ""))
    return row, _trace(row)


def _trace(row: dict[str, Any]) -> Trace:
    """The row's Trace; one that does not validate is an InputError naming the sample."""
    from pydantic import ValidationError

    try:
        return Trace.model_validate(row["trace"])
    except (ValidationError, InputError) as err:
        if isinstance(err, ValidationError):
            first = err.errors()[0]
            reason = f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
        else:
            reason = str(err)
        raise InputError(
            f"sample {row['id']}: its trace does not load ({reason}); "
            "was the file written by another idealagent version?"
        ) from None


def write_plots(rows: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    """The reliability diagram, accuracy vs rounds, accuracy vs coverage and the risk-coverage
    curve as PNG files."""
    from idealagent.evaluation.plots import write_plots as write

    return write(rows, out_dir)
