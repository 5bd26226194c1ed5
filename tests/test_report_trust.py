"""Does the loop help, and can the confidence be trusted: the report's new figures against values
worked out by hand, the warning when the agent is significantly worse than its baseline, results
from before the direct answer, and the CLI showing all of it.

The results fixture (metric "exact", so every score is 0 or 1; the baseline is the direct answer):

| id | type  | direct (score)   | final answer, source   | conf | score | baseline | texts (echo)            |
| 1  | color | red (1)          | red, direct            | 0.6  | 1     | 1        | —                       |
| 2  | color | blue (0)         | green, round 2         | 0.8  | 1     | 0        | 2 sub-q, 2 analyses (2) |
| 3  | count | 2 (1)            | 3, round 1             | 0.9  | 0     | 1        | 1, 1                    |
| 4  | count | two (1)          | 2, round 1 (unchanged) | 0.55 | 1     | 1        | 1, 1                    |
| 5  | count | — (old row)      | cat, —                 | 0.4  | 0     | 1        | 1, 1                    |
| 6  | color | — (failed)       | —                      | —    | fail  | failed   | —                       |
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import idealagent.evaluation.report as report
from idealagent.report_console import render_report
from idealagent.evaluation.loop_stats import answer_sources, exemplar_echo, loop_changes, split_sentences
from idealagent.evaluation.report import exemplar_sentences, read_results, summarize
from idealagent.evaluation.trust import (
    accuracy_at_coverage,
    area_under_risk_coverage,
    auroc,
    brier_score,
    mcnemar_p,
    paired_comparison,
    risk_coverage,
)
from idealagent.trace import DirectAnswer, Round, Sample, SubQA, Trace, Verdict
from tests.test_cli import invoke
from tests.test_eval_report import HEADER, _write

# The exemplar sentences the fixture's echo figures are counted against (the shipped prompts
# may change; these do not).
EXEMPLARS = ["What is in the man's hands?", "Nothing shows the sky or the light yet, so this is a guess.",
             "Is it red?"]  # fmt: skip

# Hand-worked per-sample figures of the fixture, in id order (failed id 6: confidence 0, score 0).
CONFIDENCES = [0.6, 0.8, 0.9, 0.55, 0.4, 0.0]
SCORES = [1, 1, 0, 1, 0, 0]


# -- the metrics on small lists ------------------------------------------------------------------

# Five samples: confidence, score (a VQA-style 0.5 counts as right; None is a failure: 0 and 0).
CONF = [0.9, 0.8, 0.8, 0.3, None]
ACC = [1.0, 1.0, 0.0, 0.5, None]


def test_brier_score_by_hand() -> None:
    # (0.9-1)² + (0.8-1)² + (0.8-0)² + (0.3-0.5)² + (0-0)² = 0.01 + 0.04 + 0.64 + 0.04 + 0
    assert brier_score(CONF, ACC) == pytest.approx(0.73 / 5)
    assert brier_score([1.0, 0.0], [1.0, 0.0]) == 0.0


def test_auroc_by_hand_ties_count_half() -> None:
    # Right: 0.9, 0.8, 0.3 (score 0.5); wrong: 0.8, 0 (the failure). Of the 6 right-wrong pairs,
    # 0.9 beats both, 0.8 ties 0.8 (1/2) and beats 0, 0.3 loses to 0.8 and beats 0: 4.5 / 6.
    assert auroc(CONF, ACC) == pytest.approx(0.75)
    assert auroc([0.2, 0.9], [1.0, 0.0]) == 0.0  # the wrong one is the more confident
    assert auroc([0.5, 0.5], [1.0, 0.0]) == 0.5


def test_auroc_is_none_with_only_one_class() -> None:
    assert auroc([0.9, 0.1], [1.0, 0.6]) is None
    assert auroc([0.9, 0.1], [0.0, 0.4]) is None


def test_risk_coverage_by_hand_ties_enter_together() -> None:
    curve = risk_coverage(CONF, ACC)
    # (threshold, coverage, risk): 0.9 keeps 1 (all right); the 0.8 tie keeps 3 (2 of 3 right);
    # 0.3 keeps 4 (2.5 of 4); 0 keeps all (2.5 of 5).
    expected = [(0.9, 0.2, 0.0), (0.8, 0.6, 1 / 3), (0.3, 0.8, 0.375), (0.0, 1.0, 0.5)]
    assert len(curve) == len(expected)
    for point, want in zip(curve, expected):
        assert point == pytest.approx(want)


def test_aurc_is_the_mean_risk_over_one_sample_steps() -> None:
    # k=1: 0; k=2: one of the 0.8 tie (mean 0.5) → (1 + 0.5)/2 right, risk 0.25; k=3: 2/3 right,
    # risk 1/3; k=4: 2.5/4, risk 0.375; k=5: 2.5/5, risk 0.5.
    expected = (0 + 0.25 + 1 / 3 + 0.375 + 0.5) / 5
    assert area_under_risk_coverage(CONF, ACC) == pytest.approx(expected)
    # The same as 1 - accuracy at each coverage k/n, as documented.
    steps = accuracy_at_coverage(CONF, ACC, [k / 5 for k in range(1, 6)])
    assert expected == pytest.approx(sum(1 - a for _, a in steps) / 5)
    assert area_under_risk_coverage([0.9, 0.1], [1.0, 0.0]) == pytest.approx((0 + 0.5) / 2)


@pytest.mark.parametrize(
    ("agent_only", "baseline_only", "p"),
    [
        (1, 5, 2 * (1 + 6) / 2**6),
        (0, 8, 2 / 2**8),
        (10, 2, 2 * (1 + 12 + 66) / 2**12),
        (3, 3, 1.0),  # 2 * P(X <= 3) for n=6 is above 1: capped
        (0, 0, 1.0),  # no discordant pairs
    ],
)
def test_mcnemar_exact_p_by_hand(agent_only: int, baseline_only: int, p: float) -> None:
    assert mcnemar_p(agent_only, baseline_only) == pytest.approx(p)


def test_paired_comparison_by_hand() -> None:
    agent, baseline = [1.0, 1.0, 0.0, 0.6, 0.0], [0.0, 1.0, 1.0, 0.4, 0.0]
    result = paired_comparison(agent, baseline)
    assert result is not None
    assert result["n"] == 5
    assert result["difference"] == pytest.approx((1 + 0 - 1 + 0.2 + 0) / 5)
    assert result["agent_accuracy"] == pytest.approx(2.6 / 5) and result["baseline_accuracy"] == pytest.approx(2.4 / 5)
    # Right is score >= 0.5: ids 1 and 4 only the agent, id 3 only the baseline: p = 2 * (1 + 3) / 8, capped.
    assert (result["agent_only_right"], result["baseline_only_right"]) == (2, 1)
    assert result["mcnemar_p"] == 1.0
    low, high = result["interval"]
    assert -1 <= low <= result["difference"] <= high <= 1
    assert result["resamples"] == 2000 and not result["significantly_worse"]
    assert paired_comparison([], []) is None


def test_bootstrap_interval_by_hand() -> None:
    # Two samples, differences 0 and 1: a resample's mean is 0, 1/2 or 1 with chances 1/4, 1/2,
    # 1/4, so of 2000 resamples about 500 are 0 and 500 are 1: the 2.5th and 97.5th percentiles.
    result = paired_comparison([0.0, 1.0], [0.0, 0.0])
    assert result is not None and result["interval"] == [0.0, 1.0]
    # Every difference the same: every resample has that mean.
    constant = paired_comparison([0.0] * 4, [1.0] * 4)
    assert constant is not None
    assert constant["interval"] == pytest.approx([-1.0, -1.0]) and constant["significantly_worse"]


def test_the_bootstrap_is_reproducible() -> None:
    # Fractional scores, so the resampled means do not fall on a coarse grid.
    agent = [(i * 7 % 11) / 10 for i in range(40)]
    baseline = [(i * 5 % 13) / 12 for i in range(40)]
    first, second = paired_comparison(agent, baseline), paired_comparison(agent, baseline)
    assert first is not None and second is not None
    assert first["interval"] == second["interval"]
    assert paired_comparison(agent, baseline, seed=1)["interval"] != first["interval"]  # type: ignore[index]


def _trace(
    answer: str | None, *, direct: str | None = None, has_direct: bool = True, source: str | None = None,
    round_: int | None = None, rounds: list[Round] | None = None,
) -> Trace:  # fmt: skip
    return Trace(
        sample=Sample(question="What is it?"), answer=answer, confidence=None if answer is None else 0.5,
        direct=DirectAnswer(question="What is it?", answer=direct) if has_direct else None,
        answer_source=source, answer_round=round_, rounds=rounds or [], stop_reason="confident",
    )  # fmt: skip


def test_loop_changes_by_hand() -> None:
    traces = [
        _trace("2", direct="Two"),  # the same after normalisation: not a change
        _trace("dog", direct="cat"),  # changed; the agent right, the direct answer wrong
        _trace("blue", direct="red"),  # changed; the agent wrong, the direct answer right
        _trace("no", direct="yes"),  # changed; both wrong, the direct answer not scored
        _trace("cat", direct=None),  # the direct answer failed: not counted
        _trace("cat", has_direct=False),  # an old trace: not counted
    ]
    scores = [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    direct = [1.0, 0.0, 1.0, None, None, None]
    changes = loop_changes(traces, scores, direct)
    assert changes == {
        "n": 4, "changed": 3, "changed_rate": 0.75, "agent_right": 1, "agent_right_rate": pytest.approx(1 / 3),
        "direct_scored": 2, "direct_right": 1, "direct_right_rate": 0.5,
    }  # fmt: skip
    assert loop_changes(traces[-1:], [1.0], [None]) is None


def test_answer_sources_count_direct_and_each_round() -> None:
    traces = [_trace("a", source="round", round_=2), _trace("b", source="direct"),
              _trace("c", source="round", round_=1), _trace("d", source="round", round_=2),
              _trace("e", has_direct=False)]  # fmt: skip
    assert answer_sources(traces) == {"round 2": 2, "direct": 1, "round 1": 1}
    assert list(answer_sources(traces)) == ["round 2", "direct", "round 1"]  # type: ignore[arg-type]
    assert answer_sources(traces[-1:]) is None


def test_split_sentences() -> None:
    assert split_sentences("One two. Three?  Four!\nFive") == ["One two.", "Three?", "Four!", "Five"]
    assert split_sentences("It costs 3.5 dollars.") == ["It costs 3.5 dollars."]
    assert split_sentences("  ") == []


def _round(index: int, questions: list[str], analysis: str) -> Round:
    return Round(index=index, sub_qas=[SubQA(question=q, answer="x") for q in questions],
                 verdict=Verdict(analysis=analysis, answer="a", confidence=0.5))  # fmt: skip


def test_exemplar_echo_by_hand() -> None:
    sentences = ["What is in the man's hands?", "Is the car red?", "Is it red?",
                 "He wears a baseball uniform and holds a bat, which fits the description."]  # fmt: skip
    traces = [
        _trace("a", rounds=[
            # echoes: other case and spacing; the final "?" is not needed; "Is it red?" is too short to count
            _round(1, ["WHAT is in the   man's hands?", "Is the car red", "Is it red?", "What is on the table?"],
                   "I think he wears a baseball uniform and holds a bat, which fits the description, so bat."),
            _round(2, [], "The sky is dark."),
        ]),
        _trace("b", rounds=[Round(index=1, verdict=Verdict(analysis="", answer="b", confidence=0.5))]),  # no text
    ]  # fmt: skip
    echo = exemplar_echo(traces, sentences)
    # 4 sub-questions + 2 analyses (the empty one is no text); 3 of them echo.
    assert echo["texts"] == 6 and echo["echoes"] == 3 and echo["rate"] == pytest.approx(0.5)
    assert echo["echoed"] == {
        "what is in the man's hands": 1, "is the car red": 1,
        "he wears a baseball uniform and holds a bat, which fits the description": 1,
    }  # fmt: skip
    assert exemplar_echo([_trace("a")], sentences) == {"texts": 0, "echoes": 0, "rate": None, "echoed": {}}


def test_exemplar_sentences_come_from_the_sub_questions_and_analyses(tmp_path: Path) -> None:
    (tmp_path / "questioner.yaml").write_text(
        'user: "{{ question }}"\nkinds:\n  default:\n    exemplars:\n      - vars: {question: Q}\n'
        '        reply: {"sub_questions": ["What is left of the cup?", "Is it hot?"]}\n', encoding="utf-8")
    (tmp_path / "reasoner.yaml").write_text(
        'user: "{{ question }}"\nkinds:\n  yes_no:\n    exemplars:\n      - vars: {question: Q}\n'
        '        reply: {"analysis": "The cup is empty. Nobody drinks.", "answer": "no", "confidence": 0.8}\n'
        '      - vars: {question: Q}\n        reply: \'{"analysis": "A plain string reply."}\'\n',
        encoding="utf-8")  # fmt: skip
    assert exemplar_sentences(tmp_path) == [
        "What is left of the cup?", "Is it hot?", "The cup is empty.", "Nobody drinks.", "A plain string reply.",
    ]  # fmt: skip


def test_the_shipped_exemplar_sentences_are_in_the_prompt_files() -> None:
    import idealagent.prompts

    shipped = exemplar_sentences()
    text = "".join(p.read_text(encoding="utf-8") for p in idealagent.prompts.default_prompts_dir().glob("*.yaml"))
    assert shipped and all(sentence in text for sentence in shipped)
    assert any(s.endswith("?") for s in shipped) and any(s.endswith(".") for s in shipped)


# -- the summary of a results file -----------------------------------------------------------------


def _row(
    id_: str, qtype: str, gold: str, *, answer: str | None, confidence: float | None, direct: str | None,
    source: str | None = None, round_: int | None = None, rounds: list[Round] | None = None,
    old: bool = False, baseline: float | None = None, error: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A results line as the runner writes it; ``old``: written before the direct answer."""
    trace = Trace(
        sample=Sample(id=id_, question="What is it?"), answer=answer, confidence=confidence,
        direct=None if old or direct is None else DirectAnswer(question="What is it?", answer=direct),
        answer_source=source, answer_round=round_, rounds=rounds or [],
        stop_reason="error" if error else "confident", error=error,
    )  # fmt: skip
    data = trace.model_dump(mode="json")
    if old:  # the fields did not exist then
        for key in ("direct", "answer_source", "answer_round"):
            data.pop(key)
    return {
        "id": id_, "index": int(id_), "benchmark": "vqav2", "split": "val", "question_type": qtype, "kind": "open",
        "metric": "exact", "question": "What is it?", "image": f"{id_}.jpg", "choices": None, "answers": [gold],
        "gold_index": None, "prediction": answer, "choice_index": None, "confidence": confidence,
        "score": None if error else float(answer == gold), "error": error, "stop_reason": trace.stop_reason,
        "baseline": {"prediction": direct, "choice_index": None, "error": "failed" if baseline is None else None,
                     "score": baseline},
        "trace": data,
    }  # fmt: skip


def _rows() -> list[dict[str, Any]]:
    return [
        _row("1", "color", "red", answer="red", confidence=0.6, direct="red", source="direct", baseline=1.0),
        _row("2", "color", "green", answer="green", confidence=0.8, direct="blue", source="round", round_=2,
             baseline=0.0, rounds=[_round(1, ["What colour is the shirt?"], "The shirt looks blue."),
                                   _round(2, ["What is in the man's hands?"],
                                          "Nothing shows the sky or the light yet, so this is a guess.")]),
        _row("3", "count", "2", answer="3", confidence=0.9, direct="2", source="round", round_=1, baseline=1.0,
             rounds=[_round(1, ["How many dogs?"], "Three dogs are visible.")]),
        _row("4", "count", "2", answer="2", confidence=0.55, direct="two", source="round", round_=1, baseline=1.0,
             rounds=[_round(1, ["How many cups are on the table?"], "Two cups.")]),
        _row("5", "count", "dog", answer="cat", confidence=0.4, direct="dog", old=True, baseline=1.0,
             rounds=[_round(1, ["What animal is it?"], "It looks like a cat.")]),
        _row("6", "color", "red", answer=None, confidence=None, direct=None, error="image missing"),
    ]  # fmt: skip


@pytest.fixture(autouse=True)
def fixed_exemplars(monkeypatch: pytest.MonkeyPatch) -> None:
    """The echo figures count against EXEMPLARS, not the shipped prompts (which may change)."""
    monkeypatch.setattr(report, "exemplar_sentences", lambda directory=None: list(EXEMPLARS))


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return _write(tmp_path / "r.jsonl", HEADER, _rows())


def test_summary_trust_figures_by_hand(results: Path) -> None:
    summary = summarize(*read_results([results]))
    json.dumps(summary, allow_nan=False)
    overall = summary["overall"]
    assert [overall["n"], overall["failures"]] == [6, 1]
    # (0.6-1)² + (0.8-1)² + (0.9-0)² + (0.55-1)² + (0.4-0)² + 0 = .16 + .04 + .81 + .2025 + .16
    assert overall["brier"] == pytest.approx(1.3725 / 6)
    # Right 0.6, 0.8, 0.55 each beat two of the wrong 0.9, 0.4, 0 (not 0.9): 6 of 9 pairs.
    assert overall["auroc"] == pytest.approx(2 / 3)
    # Most confident first: 0.9 (wrong), 0.8, 0.6, 0.55 (right), 0.4, 0 (wrong).
    risks = [1, 1 / 2, 1 / 3, 1 / 4, 2 / 5, 3 / 6]
    expected = [[c, (k + 1) / 6, r] for k, (c, r) in enumerate(zip([0.9, 0.8, 0.6, 0.55, 0.4, 0.0], risks))]
    assert len(overall["risk_coverage"]) == len(expected)
    for point, want in zip(overall["risk_coverage"], expected):
        assert point == pytest.approx(want)
    assert overall["aurc"] == pytest.approx(sum(risks) / 6)


def test_summary_agent_vs_baseline_on_the_same_samples(results: Path) -> None:
    overall = summarize(*read_results([results]))["overall"]
    versus = overall["vs_baseline"]
    # Id 6's baseline failed (no score): left out. Agent 1,1,0,1,0 vs baseline 1,0,1,1,1.
    assert versus["n"] == 5
    assert versus["difference"] == pytest.approx(-1 / 5)
    assert (versus["agent_only_right"], versus["baseline_only_right"]) == (1, 2)  # id 2; ids 3 and 5
    assert versus["mcnemar_p"] == 1.0  # 2 * (1 + 3) / 8, capped
    assert versus["interval"][0] < 0 < versus["interval"][1] and not versus["significantly_worse"]
    by_type = summarize(*read_results([results]))["by_type"]
    assert by_type["color"]["vs_baseline"]["difference"] == pytest.approx(1 / 2)  # ids 1 and 2


def test_summary_loop_changes_sources_and_echo(results: Path) -> None:
    summary = summarize(*read_results([results]))
    overall = summary["overall"]
    # Ids 1-4 have a direct answer (5 is old, 6 failed); 2 and 3 changed it ("two" is "2").
    assert overall["loop_changes"] == {
        "n": 4, "changed": 2, "changed_rate": 0.5, "agent_right": 1, "agent_right_rate": 0.5,
        "direct_scored": 2, "direct_right": 1, "direct_right_rate": 0.5,
    }  # fmt: skip
    assert overall["answer_sources"] == {"round 1": 2, "direct": 1, "round 2": 1}
    # 5 sub-questions and 5 analyses; id 2's second round repeats both exemplars ("Is it red?" is short).
    echo = overall["exemplar_echo"]
    assert (echo["texts"], echo["echoes"], echo["rate"]) == (10, 2, pytest.approx(0.2))
    assert summary["by_type"]["count"]["exemplar_echo"]["echoes"] == 0
    assert summary["by_type"]["count"]["loop_changes"]["changed"] == 1


def _significantly_worse_rows() -> list[dict[str, Any]]:
    """30 samples the direct answer got right and the agent wrong, 20 both right."""
    rows = []
    for i in range(50):
        worse = i < 30
        rows.append(_row(str(i + 1), "color", "red", answer="blue" if worse else "red", confidence=0.5,
                         direct="red", source="round", round_=1, baseline=1.0))  # fmt: skip
    return rows


def test_the_warning_appears_when_the_interval_is_below_zero(tmp_path: Path) -> None:
    summary = summarize(*read_results([_write(tmp_path / "w.jsonl", HEADER, _significantly_worse_rows())]))
    versus = summary["overall"]["vs_baseline"]
    assert versus["difference"] == pytest.approx(-0.6) and versus["interval"][1] < 0
    assert versus["mcnemar_p"] == pytest.approx(2 / 2**30)
    assert summary["warning"] is not None and "-60.0 points" in summary["warning"]
    console = Console(record=True, width=160, color_system=None)
    render_report(summary, console)
    text = console.export_text()
    assert text.lstrip().startswith("╭─ warning")  # first, before any table
    assert "significantly worse than its answerer alone" in text


def test_no_warning_when_the_interval_reaches_zero(tmp_path: Path) -> None:
    # One sample of 50 worse: a resample misses it with chance (49/50)^50 ≈ 0.36 > 2.5%, so the
    # interval's top is exactly 0: not below it.
    rows = _significantly_worse_rows()
    rows = [dict(r, prediction="red", score=1.0) if int(r["id"]) > 1 else r for r in rows]
    summary = summarize(*read_results([_write(tmp_path / "w.jsonl", HEADER, rows)]))
    assert summary["overall"]["vs_baseline"]["interval"][1] == 0.0
    assert summary["warning"] is None
    console = Console(record=True, width=160, color_system=None)
    render_report(summary, console)
    assert "warning" not in console.export_text()
    # Nor when the agent is worse but not significantly (the fixture: -20 points on 5), nor
    # without any baseline.
    assert summarize(*read_results([_write(tmp_path / "r.jsonl", HEADER, _rows())]))["warning"] is None
    no_baseline = [dict(row, baseline=None) for row in _rows()]
    summary = summarize(*read_results([_write(tmp_path / "n.jsonl", dict(HEADER, baseline=False), no_baseline)]))
    assert summary["warning"] is None and summary["overall"]["vs_baseline"] is None


def test_old_rows_without_a_direct_answer_leave_those_figures_out(tmp_path: Path) -> None:
    old = [_row(str(i), "color", "red", answer=a, confidence=c, direct="red", old=True, baseline=1.0)
           for i, (a, c) in enumerate([("red", 0.9), ("blue", 0.3)], start=1)]  # fmt: skip
    summary = summarize(*read_results([_write(tmp_path / "old.jsonl", HEADER, old)]))
    overall = summary["overall"]
    assert overall["loop_changes"] is None and overall["answer_sources"] is None
    assert overall["auroc"] == 1.0 and overall["brier"] == pytest.approx((0.01 + 0.09) / 2)
    console = Console(record=True, width=160, color_system=None)
    render_report(summary, console)
    text = console.export_text()
    assert "AUROC" in text and "changed the direct answer" not in text and "final answer from" not in text


def test_render_report_shows_the_trust_figures(results: Path) -> None:
    console = Console(record=True, width=160, color_system=None)
    render_report(summarize(*read_results([results])), console)
    lines = console.export_text().splitlines()
    accuracy, trust = [line for line in lines if "overall" in line]
    low, high = summarize(*read_results([results]))["overall"]["vs_baseline"]["interval"]
    assert "-20.0" in accuracy and f"{100 * low:+.1f} … {100 * high:+.1f}" in accuracy  # Δ paired, interval
    for cell in (f"{1.3725 / 6:.3f}", "0.667", f"{(1 + 1 / 2 + 1 / 3 + 1 / 4 + 2 / 5 + 1 / 2) / 6:.3f}"):
        assert cell in trust  # Brier, AUROC, AURC
    text = "\n".join(lines)
    assert "changed the direct answer" in text and "2 of 4 (50.0%)" in text
    assert "final answer from" in text and "round 1: 2  direct: 1  round 2: 1" in text
    assert "exemplar echo" in text and "2 of 10 generated texts (20.0%; target ≤ 1%)" in text


def test_the_cli_report_shows_the_trust_figures(results: Path) -> None:
    shown = invoke("report", str(results))
    assert shown.exit_code == 0, shown.output
    for words in ("AUROC", "AURC", "Brier", "McNemar p", "95% interval", "changed the direct answer",
                  "final answer from", "exemplar echo", "risk_coverage.png"):  # fmt: skip
        assert words in shown.stdout, words
    as_json = invoke("report", str(results), "--json")
    assert as_json.exit_code == 0, as_json.output
    summary = json.loads(as_json.stdout)
    overall = summary["overall"]
    assert summary["warning"] is None
    assert overall["auroc"] == pytest.approx(2 / 3) and overall["vs_baseline"]["n"] == 5
    assert overall["exemplar_echo"]["echoes"] == 2 and overall["loop_changes"]["changed"] == 2
    assert math.isclose(overall["brier"], 1.3725 / 6)
    assert (results.parent / "r.report" / "risk_coverage.png").is_file()


def test_the_cli_report_shows_the_warning(tmp_path: Path) -> None:
    path = _write(tmp_path / "w.jsonl", HEADER, _significantly_worse_rows())
    shown = invoke("report", str(path))
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.lstrip().startswith("╭─ warning") and "significantly worse" in shown.stdout
    summary = json.loads(invoke("report", str(path), "--json").stdout)
    assert "significantly worse" in summary["warning"]
