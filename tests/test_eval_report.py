"""The report over results files: merging shards, hand-checked summary numbers, table, plots.

The fixture is two shards of one VQAv2 run in the runner's line format, built from real Traces:

| id | type   | agent answer / score     | conf | rounds | stop              | baseline   | latency |
| 1  | yes/no | yes / 1.0                | 0.9  | 1      | confident         | 1.0        | 1.0     |
| 2  | yes/no | yes / 0.9 (3 of 10 said) | 0.8  | 2      | confident         | 1.0        | 2.0     |
| 3  | number | two / 1.0                | 0.6  | 3      | max_rounds forced | 0.0        | 3.0     |
| 4  | number | 3 / 0.6 (2 of 10 said)   | 0.3  | 2      | max_rounds, rd 1  | 1.0        | 2.5     |
| 5  | number | failed (image)           | —    | 0      | error             | failed     | 0.1     |
| 6  | yes/no | none / 0.0               | —    | 1      | questioner_failed | 1.0        | 0.5     |

Shard A ends in a truncated line; shard B repeats id 2 (the first copy wins).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from rich.console import Console

from idealagent.report_console import render_report
from idealagent.errors import InputError
from idealagent.evaluation.plots import draw_figures
from idealagent.evaluation.report import read_results, summarize, write_plots
from idealagent.evaluation.scoring import score
from idealagent.trace import Round, Sample, SubQA, Trace, Usage, Verdict

HEADER = {
    "format": 1, "benchmark": "vqav2", "split": "val", "preset": "openai",
    "settings": {"max_rounds": 3, "confidence_threshold": 0.7, "max_sub_questions": 2,
                 "calibration": {"method": "stated", "fits": {}, "fitted_on": {}},
                 "models": {"llm": "served-llm", "vlm": "served-vlm"}}, "seed": 0,
    "limit": 6, "shard": [0, 2], "baseline": True, "vqa_metric": "vqa2021",
    "prompts_sha256": "0123456789abcdef", "idealagent_version": "0.1.0", "started": "2025-01-01T00:00:00",
}  # fmt: skip


def _round(
    index: int,
    questions: int,
    answer: str | None = None,
    confidence: float | None = None,
    forced: bool = False,
) -> Round:
    verdict = None if confidence is None else Verdict(analysis="looked", answer=answer, confidence=confidence)
    sub_qas = [SubQA(question=f"Sub-question {i}?", answer="something") for i in range(questions)]
    return Round(index=index, sub_qas=sub_qas, verdict=verdict, forced=forced)


def _row(
    id_: str, qtype: str, answers: list[str], *, rounds: list[Round], answer: str | None, stop: str,
    latency: float, calls: int, baseline: tuple[str | None, str | None], error: str | None = None,
) -> dict:  # fmt: skip
    """A results line as the runner writes it (see runner.result_row)."""
    confidence = next(
        (r.verdict.confidence for r in rounds if r.verdict and r.verdict.answer == answer), None
    )
    trace = Trace(
        sample=Sample(id=id_, question="What is it?", image=f"images/{id_}.jpg"), caption="a photo",
        rounds=rounds,
        answer=answer, confidence=confidence, stop_reason=stop, error=error, latency_s=latency,
        usage=Usage(llm_calls=calls, llm_input_tokens=100 * calls, llm_output_tokens=10 * calls,
                    answerer_calls=sum(len(r.sub_qas) for r in rounds)),
        settings=HEADER["settings"],
    )  # fmt: skip
    base_answer, base_error = baseline
    return {
        "id": id_, "benchmark": "vqav2", "split": "val", "question_type": qtype, "kind": "open",
        "metric": "vqa",
        "question": "What is it?", "image": f"images/{id_}.jpg", "choices": None, "answers": answers,
        "gold_index": None, "prediction": answer, "choice_index": None, "confidence": confidence,
        "score": None if error else score("vqa", answer, None, answers, None),
        "error": error, "stop_reason": stop,
        "baseline": {
            "prediction": base_answer, "choice_index": None, "error": base_error, "latency_s": 0.2,
            "score": None if base_error else score("vqa", base_answer, None, answers, None),
        },
        "trace": trace.model_dump(mode="json"),
    }  # fmt: skip


def _rows() -> dict[str, dict]:
    yes, two = ["yes"] * 10, ["2"] * 10
    return {
        "1": _row("1", "yes/no", yes, rounds=[_round(1, 2, "yes", 0.9)], answer="yes", stop="confident",
                  latency=1.0, calls=2, baseline=("yes", None)),
        "2": _row("2", "yes/no", ["no"] * 7 + ["yes"] * 3,
                  rounds=[_round(1, 2, "no", 0.4), _round(2, 1, "yes", 0.8)],
                  answer="yes", stop="confident", latency=2.0, calls=4, baseline=("no", None)),
        # One annotator wrote "two": the answers differ, so both metric variants normalise "two" to "2".
        "3": _row("3", "number", ["2"] * 9 + ["two"], rounds=[_round(1, 1, "3", 0.3), _round(2, 1, "2", 0.5),
                                              _round(3, 1, "two", 0.6, forced=True)],
                  answer="two", stop="max_rounds", latency=3.0, calls=6, baseline=("3", None)),
        "4": _row("4", "number", ["3"] * 2 + ["4"] * 8,
                  rounds=[_round(1, 2, "3", 0.3), _round(2, 2, "5", 0.2, forced=True)],
                  answer="3", stop="max_rounds", latency=2.5, calls=4, baseline=("4", None)),
        "5": _row("5", "number", two, rounds=[], answer=None, stop="error", latency=0.1, calls=0,
                  baseline=(None, "image missing"), error="image missing: images/5.jpg"),
        "6": _row("6", "yes/no", yes, rounds=[Round(index=1)], answer=None, stop="questioner_failed",
                  latency=0.5, calls=3, baseline=("yes", None)),
    }  # fmt: skip


def _write(path: Path, header: dict[str, Any], rows: list[dict], tail: str = "") -> Path:
    lines = [json.dumps({"header": header})] + [json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n" + tail, encoding="utf-8")
    return path


@pytest.fixture
def shards(tmp_path: Path) -> list[Path]:
    rows = _rows()
    duplicate = dict(rows["2"], prediction="no", score=0.0)
    first = _write(tmp_path / "a.jsonl", HEADER, [rows["1"], rows["2"], rows["3"]], tail='{"id": "7", "bench')
    second = _write(tmp_path / "b.jsonl", dict(HEADER, shard=[1, 2], limit=8),
                    [rows["4"], rows["5"], duplicate, rows["6"]])  # fmt: skip
    return [first, second]


def test_read_results_merges_shards_skips_a_truncated_line_and_dedupes(shards: list[Path]) -> None:
    header, rows = read_results(shards)
    assert [row["id"] for row in rows] == ["1", "2", "3", "4", "5", "6"]
    assert rows[1]["prediction"] == "yes"  # the first copy of id 2 wins
    assert header["preset"] == "openai"
    read = header["read"]
    assert read["shards"] == [[0, 2], [1, 2]]
    assert read["skipped_lines"] == 1 and read["duplicate_ids"] == 1
    assert any("a.jsonl:5: the last line is truncated" in w for w in read["warnings"])


def test_summary_numbers_by_hand(shards: list[Path]) -> None:
    summary = summarize(*read_results(shards))
    json.dumps(summary, allow_nan=False)  # JSON-able, no NaN
    overall = summary["overall"]
    assert overall["n"] == 6 and overall["failures"] == 1
    assert overall["accuracy"] == pytest.approx((1 + 0.9 + 1 + 0.6 + 0 + 0) / 6)
    assert overall["baseline_accuracy"] == pytest.approx(4 / 6)
    assert overall["baseline_failures"] == 1
    assert overall["unknown_rate"] == pytest.approx(1 / 6)  # id 6; id 5 is a failure instead
    # Bins: .9 vs 1 (.1), .8 vs .9 (.1), .6 vs 1 (.4), .3 vs .6 (.3), two at 0 vs 0.
    assert overall["ece"] == pytest.approx(0.9 / 6)
    coverage = {round(c, 2): a for c, a in overall["accuracy_at_coverage"]}
    assert coverage[0.1] == pytest.approx(1.0)  # 1 sample
    assert coverage[0.2] == pytest.approx(0.95)  # 2 samples
    assert coverage[0.5] == pytest.approx(2.9 / 3)  # 3 samples
    assert coverage[0.6] == pytest.approx(3.5 / 4)  # 4 samples
    assert coverage[1.0] == pytest.approx(3.5 / 6)
    assert overall["accuracy_by_rounds"] == {  # judged rounds: id 6's round 1 had no verdict
        "0": {"n": 2, "accuracy": 0.0},
        "1": {"n": 1, "accuracy": 1.0},
        "2": {"n": 2, "accuracy": pytest.approx(0.75)},
        "3": {"n": 1, "accuracy": 1.0},
    }
    stats = overall["agent_stats"]
    assert stats["mean_rounds"] == pytest.approx(8 / 6)  # 1 + 2 + 3 + 2 + 0 + 0: only judged rounds
    assert stats["mean_sub_questions"] == pytest.approx(2.0)  # 2 + 3 + 3 + 4 + 0 + 0
    assert stats["total_llm_calls"] == 19 and stats["total_llm_input_tokens"] == 1900
    assert stats["total_answerer_calls"] == 12
    assert stats["stop_reasons"] == {"confident": 2, "max_rounds": 2, "error": 1, "questioner_failed": 1}
    assert stats["fallback_rate"] == pytest.approx(3 / 6)  # ids 3 (forced), 5 (error), 6 (questioner)
    assert stats["latency_p50_s"] == pytest.approx(1.5)
    assert stats["latency_p90_s"] == pytest.approx(2.75)

    by_type = summary["by_type"]
    assert list(by_type) == ["number", "yes/no"]
    assert by_type["yes/no"]["accuracy"] == pytest.approx(1.9 / 3)
    assert by_type["yes/no"]["baseline_accuracy"] == pytest.approx(1.0)
    assert by_type["number"]["accuracy"] == pytest.approx(1.6 / 3)
    assert by_type["number"]["baseline_accuracy"] == pytest.approx(1 / 3)
    assert by_type["number"]["failures"] == 1 and by_type["yes/no"]["failures"] == 0
    assert summary["duplicate_ids"] == 1 and summary["skipped_lines"] == 1


def test_summary_does_not_depend_on_row_order(shards: list[Path]) -> None:
    header, rows = read_results(shards)
    tied = [dict(row, confidence=0.5) if row["id"] in ("1", "2", "4") else row for row in rows]
    forward, backward = summarize(header, tied), summarize(header, tied[::-1])
    for key in ("accuracy", "ece", "accuracy_at_coverage", "accuracy_by_rounds"):
        assert forward["overall"][key] == backward["overall"][key]
    # Id 3 (0.6, score 1) ranks first, then three tied at 0.5 (scores 1, 0.9, 0.6, mean 2.5/3):
    # 20% of 6 keeps 2 places, 50% keeps 3; each place in the tie is worth the tie's mean.
    coverage = {round(c, 2): a for c, a in forward["overall"]["accuracy_at_coverage"]}
    assert coverage[0.2] == pytest.approx((1 + 2.5 / 3) / 2)
    assert coverage[0.5] == pytest.approx((1 + 2 * 2.5 / 3) / 3)
    assert coverage[0.7] == pytest.approx(3.5 / 5)  # 5 places: id 3 and the whole tie


def test_render_report_shows_agent_and_baseline_side_by_side(shards: list[Path]) -> None:
    console = Console(record=True, width=160, color_system=None)
    render_report(summarize(*read_results(shards)), console)
    text = console.export_text()
    overall, trust = [line for line in text.splitlines() if "overall" in line]
    # The paired Δ leaves out id 5, whose baseline failed: agent 3.5/5, baseline 4/5.
    for cell in ("6", "58.3%", "66.7%", "-10.0"):
        assert cell in overall
    assert "1 / 16.7%" in next(line for line in text.splitlines() if "failed / unknown" in line)
    assert "0.150" in trust  # the ECE
    numbers = next(line for line in text.splitlines() if "number" in line and "%" in line)
    assert "53.3%" in numbers and "33.3%" in numbers and "+30.0" in numbers  # ids 3 and 4: (1 + 0.6 - 1) / 2
    assert "1.33 / 2.00" in text  # judged rounds / sub-questions
    assert "confident 2" in text and "fallback rate" in text
    assert "2 file(s) · 6 samples · 1 unreadable line(s) skipped · 1 repeated id(s) ignored" in text
    assert ("models llm served-llm, vlm served-vlm · calibration stated · prompts 0123456789abcdef · "
            "idealagent 0.1.0 · "
            "VQA metric vqa2021") in text


def test_the_summary_names_what_the_numbers_are_of(shards: list[Path], tmp_path: Path) -> None:
    summary = summarize(*read_results(shards))
    assert summary["models"] == {"llm": "served-llm", "vlm": "served-vlm"}
    assert summary["vqa_metric"] == "vqa2021" and summary["prompts_sha256"] == "0123456789abcdef"
    assert summary["idealagent_version"] == "0.1.0" and summary["calibration"] == "stated"
    # A file from before the metric choice was scored with the old processing, and says so.
    old = {k: v for k, v in HEADER.items() if k not in ("vqa_metric", "prompts_sha256")}
    old_summary = summarize(*read_results([_write(tmp_path / "old.jsonl", old, [_rows()["1"]])]))
    assert old_summary["vqa_metric"] == "vqa-legacy" and old_summary["prompts_sha256"] is None
    no_calibration = dict(HEADER, settings={k: v for k, v in HEADER["settings"].items() if k != "calibration"})
    assert summarize(*read_results([_write(tmp_path / "older.jsonl", no_calibration, [_rows()["1"]])]))[
        "calibration"] is None  # written before the settings held one: not guessed


def test_without_a_baseline_the_table_has_no_baseline_column(tmp_path: Path) -> None:
    rows = [dict(row, baseline=None) for row in _rows().values()]
    path = _write(tmp_path / "r.jsonl", dict(HEADER, baseline=False), rows)
    summary = summarize(*read_results([path]))
    assert "baseline_accuracy" not in summary["overall"]
    console = Console(record=True, width=160, color_system=None)
    render_report(summary, console)
    assert "baseline" not in console.export_text()


def test_rows_without_a_question_type_get_no_per_type_groups(tmp_path: Path) -> None:
    rows = list(_rows().values())
    untyped = summarize(*read_results([_write(tmp_path / "u.jsonl", HEADER,
                                              [dict(row, question_type=None) for row in rows])]))
    assert untyped["by_type"] == {}  # one group would only repeat "overall"
    console = Console(record=True, width=160, color_system=None)
    render_report(untyped, console)
    assert "(no type)" not in console.export_text()
    # Some typed, some not: the untyped ones get a group of their own.
    mixed = [dict(row, question_type=None) if row["id"] == "1" else row for row in rows]
    by_type = summarize(*read_results([_write(tmp_path / "m.jsonl", HEADER, mixed)]))["by_type"]
    assert list(by_type) == ["(no type)", "number", "yes/no"] and by_type["(no type)"]["n"] == 1


def test_write_plots_makes_four_pngs(shards: list[Path], tmp_path: Path) -> None:
    _, rows = read_results(shards)
    paths = write_plots(rows, tmp_path / "plots")
    assert [p.name for p in paths] == [
        "reliability.png",
        "accuracy_vs_rounds.png",
        "accuracy_vs_coverage.png",
        "risk_coverage.png",
    ]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size[0] > 300 and image.size[1] > 200


def test_legends_sit_outside_the_data_area(shards: list[Path]) -> None:
    # The points that matter (risk 1, accuracy 0) lie in the corners a legend inside would cover.
    _, rows = read_results(shards)
    for name, figure in draw_figures(rows).items():
        figure.canvas.draw()  # runs the constrained layout that places the legend
        (ax,) = figure.axes
        legends = figure.legends + ([ax.get_legend()] if ax.get_legend() else [])
        assert legends, name
        for legend in legends:
            assert not legend.get_window_extent().overlaps(ax.get_window_extent()), name
            assert figure.bbox.contains(*legend.get_window_extent().min), name  # and not cut off


def test_a_zero_accuracy_bar_is_drawn_and_counted(shards: list[Path]) -> None:
    # Id 4 (confidence 0.3) scored 0.6 but ids 5 and 6 failed (confidence 0, score 0): the [0, 0.1)
    # bin has accuracy 0 (n=2), and samples 5 and 6 had no judged round (6's only round has no
    # verdict), so the "0 rounds" bar is 0 as well (n=2).
    _, rows = read_results(shards)
    figures = draw_figures(rows)
    for name, x, count in (("reliability.png", 0.05, "n=2"), ("accuracy_vs_rounds.png", 0, "n=2")):
        figure = figures[name]
        figure.canvas.draw()
        (ax,) = figure.axes
        at_zero = ax.transData.transform((x, 0))
        visible = [
            artist for artist in ax.lines
            if artist.get_visible() and artist.get_window_extent().height >= 5  # pixels, not a hairline
            and artist.get_window_extent().contains(*at_zero)
        ]  # fmt: skip
        assert visible, name
        above = [t for t in ax.texts if t.get_window_extent().x0 <= at_zero[0] <= t.get_window_extent().x1]
        labels = [t.get_text() for t in above]
        assert labels == [count], name


def test_headers_from_different_runs_are_refused(shards: list[Path], tmp_path: Path) -> None:
    other = _write(tmp_path / "c.jsonl", dict(HEADER, preset="smollm2"), [_rows()["4"]])
    with pytest.raises(InputError, match="preset"):
        read_results([shards[0], other])
    changed = dict(HEADER, settings=dict(HEADER["settings"], max_rounds=4))
    with pytest.raises(InputError, match="settings.max_rounds: 3 in a.jsonl, 4 in d.jsonl"):
        read_results([shards[0], _write(tmp_path / "d.jsonl", changed, [])])


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"settings": dict(HEADER["settings"], models={"llm": "other-llm", "vlm": "served-vlm"})},
         ['settings.models.llm: "served-llm" in a.jsonl, "other-llm" in e.jsonl']),
        ({"prompts_sha256": "fedcba9876543210"}, ["prompts_sha256"]),
        ({"idealagent_version": "0.2.0"}, ['idealagent_version: "0.1.0" in a.jsonl, "0.2.0" in e.jsonl']),
        ({"vqa_metric": "vqa-legacy"}, ["vqa_metric"]),
        ({"vqa_metric": "vqa-legacy", "idealagent_version": "0.2.0"}, ["vqa_metric", "idealagent_version"]),
    ],
)
def test_a_merge_of_different_fingerprints_names_every_difference_unless_forced(
    shards: list[Path], tmp_path: Path, change: dict, named: list[str]
) -> None:
    other = _write(tmp_path / "e.jsonl", dict(HEADER, shard=[1, 2], **change), [_rows()["4"]])
    with pytest.raises(InputError) as refused:
        read_results([shards[0], other])
    message = str(refused.value)
    assert "\n" not in message and "--force" in message and all(part in message for part in named)
    header, rows = read_results([shards[0], other], force=True)
    assert [row["id"] for row in rows] == ["1", "2", "3", "4"]
    assert header["vqa_metric"] == HEADER["vqa_metric"]  # the first file's header describes the merge
    assert any("merged anyway (--force)" in w and named[0] in w for w in header["read"]["warnings"])


def test_unusable_inputs_give_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_results([tmp_path / "missing.jsonl"])
    (tmp_path / "plain.jsonl").write_text('{"id": "1"}\n', encoding="utf-8")
    with pytest.raises(InputError, match="no results header"):
        read_results([tmp_path / "plain.jsonl"])
    with pytest.raises(InputError, match="no finished samples"):
        summarize(*read_results([_write(tmp_path / "empty.jsonl", HEADER, [])]))
    with pytest.raises(InputError):
        read_results([])
    broken = dict(_rows()["1"], trace={"sample": {"question": ""}})
    with pytest.raises(InputError, match="sample 1: its trace does not load"):
        summarize(*read_results([_write(tmp_path / "old.jsonl", HEADER, [broken])]))
    renamed = dict(_rows()["1"], trace={"sample": {"question": "Q?"}, "rounds": "many"})
    with pytest.raises(InputError, match="sample 1: its trace does not load .rounds"):
        summarize(*read_results([_write(tmp_path / "new.jsonl", HEADER, [renamed])]))


def test_a_bad_line_in_the_middle_is_skipped_and_counted(tmp_path: Path) -> None:
    rows = _rows()
    path = _write(tmp_path / "r.jsonl", HEADER, [rows["1"]])
    with path.open("a", encoding="utf-8") as handle:
        handle.write("not json\n" + json.dumps({"no": "id"}) + "\n" + json.dumps(rows["3"]) + "\n")
    header, kept = read_results([path])
    assert [row["id"] for row in kept] == ["1", "3"]
    assert header["read"]["skipped_lines"] == 2
