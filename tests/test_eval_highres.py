"""V* Bench and HR-Bench, read from records written in their official formats."""

from __future__ import annotations

import base64
import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from idealagent.errors import InputError
from idealagent.evaluation.datasets import get_benchmark, load_benchmark
from idealagent.evaluation.highres import hrbench_summary, vstar_order
from idealagent.evaluation.report import summarize

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
