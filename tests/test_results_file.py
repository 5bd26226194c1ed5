"""The one reader of results files, in both its modes: strict (the runner, about to append)
and lenient (the report, reading what there is)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from idealagent.errors import InputError
from idealagent.evaluation.report import read_results
from idealagent.evaluation.results import read_existing, read_file

HEADER = json.dumps({"header": {"benchmark": "jsonl"}})


def row(sample_id: str, score: float | None = 1.0) -> str:
    return json.dumps({"id": sample_id, "score": score, "confidence": 0.8, "error": None, "baseline": None})


def test_a_torn_last_line_is_left_out_by_both_modes(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    whole = f"{HEADER}\n{row('a')}\n{row('b')}\n"
    path.write_text(whole + '{"id": "c", "sco')
    strict, lenient = read_file(path, strict=True), read_file(path, strict=False)
    assert [r["id"] for r in strict.rows] == [r["id"] for r in lenient.rows] == ["a", "b"]
    assert strict.complete_bytes == len(whole) < strict.size and strict.problems == []
    assert lenient.problems == [f"{path}:4: the last line is truncated (a killed run?); skipped"]
    existing = read_existing(path)
    assert existing.has_torn_tail and list(existing.done) == ["a", "b"]


def test_a_last_line_without_its_newline_is_torn_for_the_runner_but_read_by_the_report(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(f"{HEADER}\n{row('a')}\n{row('b')}")  # whole JSON, but the write never finished
    assert [r["id"] for r in read_file(path, strict=True).rows] == ["a"]  # the writer cuts it off
    assert read_existing(path).has_torn_tail
    _, rows = read_results([path])
    assert [r["id"] for r in rows] == ["a", "b"]


def test_a_bad_middle_line_is_refused_by_the_runner_and_skipped_by_the_report(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(f"{HEADER}\n{row('a')}\nnot json\n{json.dumps({'no': 'id'})}\n{row('b', None)}\n")
    with pytest.raises(InputError, match=r"r.jsonl:3: not a valid JSON line"):
        read_existing(path)
    lenient = read_file(path, strict=False)
    assert [r["id"] for r in lenient.rows] == ["a", "b"]
    assert [p.split(": ", 1)[0] for p in lenient.problems] == [f"{path}:3", f"{path}:4"]
    header, _ = read_results([path])
    assert header["read"]["skipped_lines"] == 2
    path.write_text(f"{HEADER}\n{json.dumps({'no': 'id'})}\n{row('a')}\n")
    with pytest.raises(InputError, match=r"r.jsonl:2: not a sample line"):
        read_existing(path)


def test_a_missing_file_is_a_fresh_start_for_the_runner_and_an_error_for_the_report(tmp_path: Path) -> None:
    path = tmp_path / "missing.jsonl"
    assert read_existing(path).header is None and read_existing(path).done == {}
    with pytest.raises(InputError, match="not found"):
        read_file(path, strict=False)
    path.write_text(f"{row('a')}\n")
    for strict in (True, False):
        with pytest.raises(InputError, match="not an idealagent results file"):
            read_file(path, strict=strict)
