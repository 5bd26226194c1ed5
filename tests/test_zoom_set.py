"""eval/make_zoom_set.py: seeded large pictures with one small shape, readable by the jsonl loader."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from idealagent.evaluation.datasets import load_benchmark

pytest.importorskip("easy_vqa")

SCRIPT = Path(__file__).resolve().parent.parent / "eval" / "make_zoom_set.py"


@pytest.fixture(scope="module")
def zoom_set():
    spec = importlib.util.spec_from_file_location("make_zoom_set", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_same_seed_writes_the_same_files(zoom_set, tmp_path):
    options = {"seed": 7, "count": 3, "size": (320, 240), "object_scale": 0.06}
    zoom_set.make_set(tmp_path / "a", **options)
    zoom_set.make_set(tmp_path / "b", **options)
    assert _files(tmp_path / "a") == _files(tmp_path / "b") and len(_files(tmp_path / "a")) == 4
    zoom_set.make_set(tmp_path / "c", **{**options, "seed": 8})
    assert _files(tmp_path / "c")["test.jsonl"] != _files(tmp_path / "a")["test.jsonl"]


def test_records_load_and_hold_one_small_object(zoom_set, tmp_path):
    path = zoom_set.make_set(tmp_path, seed=0, count=4, size=(400, 300), object_scale=0.05, multiple_choice=True)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    items = load_benchmark("jsonl", path).items
    assert [item.id for item in items] == [r["id"] for r in records]
    for record, item in zip(records, items):
        x0, y0, x1, y1 = record["box"]
        assert x1 - x0 == 20 and 0 <= x0 < x1 <= 400 and 0 <= y0 < y1 <= 300
        assert (tmp_path / record["image"]).is_file() and item.image == str(tmp_path / record["image"])
        assert item.kind == "multiple_choice" and item.choices[item.gold_index] == record["answer"]
        assert record["answer"] in (zoom_set.COLOURS if record["question_type"] == "color" else zoom_set.SHAPES)


def test_bad_options_are_one_line_errors(zoom_set, tmp_path, capsys):
    with pytest.raises(SystemExit):
        zoom_set.main(["--out", str(tmp_path), "--size", "big"])
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        zoom_set.main(["--out", str(tmp_path), "--object-scale", "2"])
    assert "--object-scale" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        zoom_set.main(["--out", str(tmp_path), "--questions", "smell"])
    assert "--questions" in capsys.readouterr().err


def test_questions_can_be_limited_to_colour(zoom_set, tmp_path):
    path = zoom_set.make_set(tmp_path, seed=1, count=4, size=(256, 192), object_scale=0.1, questions=("color",))
    assert {json.loads(line)["question_type"] for line in path.read_text().splitlines()} == {"color"}
