"""V* Bench and HR-Bench, read from records written in their official formats."""

from __future__ import annotations

import base64
import csv
import io
import json
import math

import numpy as np
import pytest
from PIL import Image

from idealagent.agent import IdealAgent
from idealagent.answerers import OptionScore, pick_option
from idealagent.capabilities import Capabilities
from idealagent.errors import InputError
from idealagent.evaluation.baseline import run_baseline
from idealagent.evaluation.datasets import get_benchmark, load_benchmark
from idealagent.evaluation.highres import hrbench_summary, vstar_order
from idealagent.evaluation.report import summarize
from idealagent.evaluation.runner import prepare_eval, run_eval
from idealagent.report_console import run_identity
from idealagent.settings import AgentSettings
from idealagent.testing import ScriptedAnswerer, ScriptedChatModel, flat

# --- V* Bench -----------------------------------------------------------------------------------


def _vstar(root):
    """The official layout: per test type, sa_*.jpg with a same-named json (first option right)."""
    records = {
        ("direct_attributes", "sa_4690"): {
            "target_object": ["glove"], "bbox": [[1682, 1175, 28, 31]],
            "question": "What is the color of the glove?",
            "options": ["The color of the glove is red.", "The color of the glove is blue.",
                        "The color of the glove is white.", "The color of the glove is black."],
        },
        ("relative_position", "sa_10111"): {
            "target_object": ["cup", "dog"], "bbox": [[10, 10, 20, 20], [300, 40, 50, 50]],
            "question": "Is the cup on the left or right side of the dog?",
            "options": ["The cup is on the left side of the dog.", "The cup is on the right side of the dog."],
        },
        ("relative_position", "sa_999"): {"question": "Broken: no options."},
    }
    for (folder, stem), record in records.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / f"{stem}.json").write_text(json.dumps(record))
        Image.new("RGB", (64, 48), "gray").save(root / folder / f"{stem}.jpg")
    return records


def test_vstar_reads_the_official_folder_with_options_shuffled(tmp_path):
    records = _vstar(tmp_path)
    loaded = load_benchmark("vstar", tmp_path)
    assert loaded.total == 2 and len(loaded.skipped) == 1 and "options" in loaded.skipped[0]
    by_id = {item.id: item for item in loaded.items}
    glove = by_id["direct_attributes/sa_4690"]
    right = records[("direct_attributes", "sa_4690")]["options"][0]
    assert glove.choices[glove.gold_index] == right == glove.answers[0]
    assert sorted(glove.choices) == sorted(records[("direct_attributes", "sa_4690")]["options"])
    assert glove.kind == "multiple_choice" and glove.metric == "choice"
    assert glove.question_type == "direct_attributes" and glove.image.endswith("direct_attributes/sa_4690.jpg")
    # The order is seeded by the id: the same on every load, and not always the official one.
    assert load_benchmark("vstar", tmp_path).items == loaded.items
    orders = [vstar_order(f"direct_attributes/sa_{n}", 4) for n in range(40)]
    assert sum(order[0] == 0 for order in orders) < 20 and len({tuple(o) for o in orders}) > 5


def test_vstar_needs_its_folders(tmp_path):
    with pytest.raises(InputError, match="direct_attributes"):
        load_benchmark("vstar", tmp_path)


# --- HR-Bench -----------------------------------------------------------------------------------

COLUMNS = ["index", "question", "answer", "A", "B", "C", "D", "category", "cycle_category", "image"]


def _jpeg(colour):
    buffer = io.BytesIO()
    Image.new("RGB", (80, 60), colour).save(buffer, "JPEG", quality=95)
    return base64.b64encode(buffer.getvalue()).decode()


def _hrbench_rows():
    """Two questions, each in two cycles with its options rotated; row 3 refers to row 1's image."""
    red, blue = _jpeg("red"), _jpeg("blue")
    return [
        {"index": 0, "question": "What colour is the sign?", "answer": "A", "A": "red", "B": "blue",
         "C": "green", "D": "white", "category": "single", "cycle_category": "cycle1", "image": red},
        {"index": 1, "question": "Which is left of the car?", "answer": "B", "A": "tree", "B": "dog",
         "C": "bike", "D": "man", "category": "cross", "cycle_category": "cycle1", "image": blue},
        {"index": 2, "question": "What colour is the sign?", "answer": "D", "A": "blue", "B": "green",
         "C": "white", "D": "red", "category": "single", "cycle_category": "cycle2", "image": red},
        {"index": 3, "question": "Which is left of the car?", "answer": "C", "A": "dog", "B": "bike",
         "C": "man", "D": "tree", "category": "cross", "cycle_category": "cycle2", "image": "1"},
        {"index": 4, "question": "Bad answer letter", "answer": "E", "A": "a", "B": "b", "C": "c", "D": "d",
         "category": "single", "cycle_category": "cycle2", "image": red},
    ]


def _write_tsv(path, rows):
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, COLUMNS, delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)


def test_hrbench_reads_the_official_tsv_and_writes_only_picked_images(tmp_path, monkeypatch):
    monkeypatch.setenv("IDEALAGENT_CACHE", str(tmp_path / "cache"))
    _write_tsv(tmp_path / "hr_bench_4k.tsv", _hrbench_rows())
    loaded = load_benchmark("hr-bench", tmp_path, "4k")
    assert loaded.total == 4 and len(loaded.skipped) == 1 and "'E'" in loaded.skipped[0]
    by_id = {item.id: item for item in loaded.items}
    assert by_id["2"].choices == ["blue", "green", "white", "red"] and by_id["2"].gold_index == 3
    assert by_id["3"].question_type == "cross/cycle2" and by_id["3"].answers == ["man"]
    # Every image written, decoded to the colour it was; row 3's came from row 1 by reference.
    for item_id, colour in (("0", (254, 0, 0)), ("3", (0, 0, 254))):
        with Image.open(by_id[item_id].image) as image:
            assert np.abs(np.asarray(image)[30, 40].astype(int) - colour).max() <= 3

    picked = load_benchmark("hr-bench", tmp_path, "4k", limit=1, seed=3)
    assert len(picked.items) == 1


def test_hrbench_writes_nothing_it_did_not_pick(tmp_path, monkeypatch):
    monkeypatch.setenv("IDEALAGENT_CACHE", str(tmp_path / "cache"))
    _write_tsv(tmp_path / "hr_bench_8k.tsv", _hrbench_rows())
    picked = load_benchmark("hr-bench", tmp_path, "8k", limit=2, seed=0)
    written = sorted(p.name for p in (tmp_path / "cache").rglob("*.jpg"))
    assert written == sorted(f"{item.id}.jpg" for item in picked.items)


def test_hrbench_parquet(tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    monkeypatch.setenv("IDEALAGENT_CACHE", str(tmp_path / "cache"))
    rows = _hrbench_rows()[:2]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "hr_bench_4k.parquet")
    loaded = load_benchmark("hr-bench", tmp_path, "4k")
    assert [item.id for item in loaded.items] == ["0", "1"] and all(p.exists() for p in
                                                                     (tmp_path / "cache").rglob("*.jpg"))


def test_hrbench_missing_file_names_it(tmp_path):
    with pytest.raises(InputError, match="hr_bench_4k.tsv"):
        load_benchmark("hr-bench", tmp_path, "4k")


def test_hrbench_score_is_averaged_over_cycles():
    def row(qtype, score, base):
        return {"id": qtype + str(score), "question_type": qtype, "score": score, "confidence": 0.5,
                "error": None, "baseline": {"score": base}}

    rows = [row("single/cycle1", 1.0, 0.0), row("cross/cycle1", 0.0, 0.0), row("single/cycle1", 1.0, 1.0),
            row("single/cycle2", 0.0, 1.0), row("cross/cycle2", 1.0, 1.0)]
    summary = hrbench_summary(rows)
    assert summary["cycles"]["cycle1"] == {"all": pytest.approx(2 / 3), "cross": 0.0, "single": 1.0}
    assert summary["cycles"]["cycle2"] == {"all": 0.5, "cross": 1.0, "single": 0.0}
    # The average of the cycles' accuracies (2/3 and 1/2), not the pooled accuracy (3/5).
    assert summary["average"]["all"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert summary["average"]["single"] == pytest.approx(0.5)
    assert summary["baseline_average"]["all"] == pytest.approx((1 / 3 + 1.0) / 2)
    # The report carries it for HR-Bench runs, and nothing for other benchmarks.
    header = {"benchmark": "hr-bench", "split": "4k", "baseline": True}
    assert summarize(header, rows)["benchmark_summary"]["average"] == summary["average"]
    assert summarize({**header, "benchmark": "jsonl"}, rows)["benchmark_summary"] is None
    assert get_benchmark("hr-bench").summary is hrbench_summary


def test_the_report_prints_the_official_hrbench_score():
    from rich.console import Console

    from idealagent.report_console import render_report

    rows = [{"id": str(i), "question_type": f"single/cycle{i % 2}", "score": float(i % 2), "confidence": 0.5,
             "error": None, "prediction": "A"} for i in range(4)]
    console = Console(record=True, width=200)
    render_report(summarize({"benchmark": "hr-bench", "split": "4k", "baseline": False}, rows), console)
    assert "hr-bench official score, accuracy per cycle_category, averaged over cycles: all 50.0%" \
        in console.export_text()


# --- V* Bench scored by likelihood --------------------------------------------------------------


class LikelihoodAnswerer(ScriptedAnswerer):
    """A scripted answerer that also scores options: ``scores(option)`` gives (sum, tokens) for
    each option; it records every option request."""

    capabilities = Capabilities(logprobs=True, likelihood=True)

    def __init__(self, scores) -> None:
        super().__init__(answer="A")
        self.scores = scores
        self.option_requests: list[tuple[str, list[str]]] = []

    def option_logprobs(self, requests):
        self.option_requests += [(question, list(options)) for _, question, options in requests]
        return [[OptionScore(*self.scores(option)) for option in options] for _, _, options in requests]


def _right_first(option: str) -> tuple[float, int]:
    """The official first option of each record scores best per token, though not in sum."""
    right = option in ("The color of the glove is red.", "The cup is on the left side of the dog.")
    return (-6.0, 6) if right else (-4.0, 1)  # per token: -1.0 against -4.0


def test_the_best_option_per_token_is_chosen_and_its_share_is_the_largest():
    index, share = pick_option([OptionScore(-2.5, 1), OptionScore(-6.0, 6), OptionScore(-9.0, 3)])
    assert index == 1  # -1.0 per token beats -2.5 and -3.0, although -2.5 is the largest sum
    expected = 1 / (1 + math.exp(-1.5) + math.exp(-2.0))
    assert share == pytest.approx(expected)
    assert pick_option([OptionScore(-1.0, 1), OptionScore(-1.0, 1)]) == (0, 0.5)  # a tie: the first


def test_vstar_by_likelihood_records_and_reports_the_scoring(tmp_path):
    records = _vstar(tmp_path / "data")
    answerer = LikelihoodAnswerer(_right_first)
    agent = IdealAgent(ScriptedChatModel(), answerer, option_scoring="likelihood", zoom="off")
    out = tmp_path / "r.jsonl"
    run_eval("vstar", tmp_path / "data", out=out, preset="scripted", agent=agent)
    header, *rows = [json.loads(line) for line in out.read_text().splitlines()]
    header = header["header"]
    assert header["settings"]["option_scoring"] == "likelihood"
    assert len(rows) == 2 and all(row["score"] == 1.0 and row["baseline"]["score"] == 1.0 for row in rows)
    for row in rows:
        record = records[tuple(row["id"].split("/"))]
        direct = row["trace"]["direct"]
        assert row["prediction"] == record["options"][0] == row["choices"][row["choice_index"]]
        assert direct["question"] == record["question"]  # bare: the options are scored, not listed
        assert direct["option_logprobs"] == [_right_first(o)[0] for o in row["choices"]]
        assert direct["option_tokens"] == [_right_first(o)[1] for o in row["choices"]]
        assert row["trace"]["answer_source"] == "direct" and row["stop_reason"] == "confident"
        assert row["trace"]["settings"]["option_scoring"] == "likelihood"
    # The answerer was asked nothing: every option of every question was scored, once.
    assert flat(answerer.requests) == []
    assert sorted(answerer.option_requests) == sorted(
        (r["question"], row["choices"]) for row in rows for r in [records[tuple(row["id"].split("/"))]])
    summary = summarize(header, rows)
    assert summary["option_scoring"] == "likelihood" and summary["overall"]["accuracy"] == 1.0
    assert "options by likelihood" in run_identity(summary)
    # Letter and likelihood results never share a file.
    with pytest.raises(InputError, match="option_scoring"):
        prepare_eval("vstar", tmp_path / "data", None, out=out, preset="scripted",
                     settings={**header["settings"], "option_scoring": "letter"})


def test_the_baseline_alone_chooses_by_likelihood_too(tmp_path):
    _vstar(tmp_path)
    items = load_benchmark("vstar", tmp_path).items
    images = {item.id: Image.new("RGB", (8, 8)) for item in items}
    answerer = LikelihoodAnswerer(_right_first)
    results = run_baseline(answerer, items, images, "likelihood")
    assert all(results[item.id].prediction == item.answers[0] for item in items)
    assert all(results[item.id].choice_index == item.gold_index for item in items)
    assert flat(answerer.requests) == [] and len(answerer.option_requests) == len(items)
    by_letter = run_baseline(answerer, items, images)  # the default: the options in the question
    assert all("Options: A)" in question for question in flat(answerer.requests))
    assert all(result.prediction == item.choices[0] for item, result in zip(items, by_letter.values()))


def test_likelihood_is_refused_for_an_answerer_that_cannot_score_options():
    with pytest.raises(InputError, match="--scoring likelihood needs an answerer that scores given options"):
        IdealAgent(ScriptedChatModel(), ScriptedAnswerer(), option_scoring="likelihood")


def test_likelihood_is_refused_where_no_sample_has_options(tmp_path):
    data = tmp_path / "open.jsonl"
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    data.write_text(json.dumps({"id": "1", "image": "a.png", "question": "What?", "answers": ["x"]}) + "\n")
    settings = {**AgentSettings(option_scoring="likelihood").fingerprint(), "preset": "scripted"}
    with pytest.raises(InputError, match="has no multiple-choice samples"):
        prepare_eval("jsonl", data, None, out=tmp_path / "r.jsonl", preset="scripted", settings=settings)


def test_the_closer_look_answers_by_likelihood_too():
    answerer = LikelihoodAnswerer(_right_first)
    agent = IdealAgent(ScriptedChatModel(), answerer, option_scoring="likelihood", zoom="on", look_mode="answers",
                       look_budget=4)
    choices = ["The color of the glove is blue.", "The color of the glove is red."]
    trace = agent.run(Image.new("RGB", (2048, 1536), "gray"), "What is the color of the glove?", choices=choices)
    looks = trace.search.looks
    assert looks and all(look.kind == "answer" and look.reply == choices[1] for look in looks)
    assert all(look.question == "What is the color of the glove?" for look in looks)  # bare, as scored
    assert all(look.probability == pytest.approx(1 / (1 + math.exp(-3.0))) for look in looks)
    assert trace.search.answer.choice_index == 1 and trace.choice_index == 1
    assert flat(answerer.requests) == []  # every main question was scored, none asked
