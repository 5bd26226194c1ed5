"""The ``hf`` benchmark: Hugging Face datasets built in code, saved to disk or parquet, offline."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from idealagent.agent import IdealAgent
from idealagent.errors import InputError
from idealagent.evaluation.datasets import load_benchmark
from idealagent.evaluation.runner import run_eval
from idealagent.testing import ScriptedAnswerer, ScriptedChatModel
from tests import eval_fake_preset

datasets = pytest.importorskip("datasets")

COLOURS = ("red", "green", "blue", "yellow", "white")


@pytest.fixture(autouse=True)
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Images go to a per-test idealagent cache; datasets' own (parquet) cache too."""
    monkeypatch.setenv("IDEALAGENT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    datasets.disable_progress_bars()
    return tmp_path / "cache"


def pictures(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (6, 4), COLOURS[i % len(COLOURS)]) for i in range(n)]


def vqav2_like(n: int = 12) -> datasets.Dataset:
    """The lmms-lab/VQAv2 shape: answers as 10 dicts, answer_type, question_id; row 3 has no question."""
    features = datasets.Features({
        "question_id": datasets.Value("int64"),
        "question": datasets.Value("string"),
        "image": datasets.Image(),
        "answers": datasets.List({"answer": datasets.Value("string"), "answer_id": datasets.Value("int64")}),
        "multiple_choice_answer": datasets.Value("string"),
        "answer_type": datasets.Value("string"),
    })
    return datasets.Dataset.from_dict({
        "question_id": [1000 + i for i in range(n)],
        "question": [None if i == 3 else f"What colour is item {i}?" for i in range(n)],
        "image": pictures(n),
        "answers": [[{"answer": COLOURS[i % 5], "answer_id": k} for k in range(10)] for i in range(n)],
        "multiple_choice_answer": [COLOURS[i % 5] for i in range(n)],
        "answer_type": ["other" if i % 2 else "yes/no" for i in range(n)],
    }, features=features)


def all_images(cache: Path) -> list[Path]:
    return sorted((cache / "hf-images").rglob("*.png"))


def test_a_vqav2_like_folder_loads_with_vqa_metric_and_writes_only_the_picked_images(tmp_path, caches):
    vqav2_like().save_to_disk(str(tmp_path / "vqa"))
    loaded = load_benchmark("hf", tmp_path / "vqa", "train", limit=5, seed=1)
    assert loaded.total == 11 and len(loaded.items) == 5
    assert loaded.skipped == [f"{tmp_path / 'vqa'}:train:row 3: missing field 'question'"]
    item = loaded.items[0]
    row = int(Path(item.image).stem)
    assert item.id == str(1000 + row) and item.question == f"What colour is item {row}?"
    assert item.kind == "open" and item.metric == "vqa" and item.answers == [COLOURS[row % 5]] * 10
    assert item.choices is None and item.gold_index is None
    assert item.question_type == ("other" if row % 2 else "yes/no")
    written = all_images(caches)
    assert sorted(written) == sorted(Path(i.image) for i in loaded.items)  # the picked rows only
    assert {p.parent.name for p in written} == {"train"}
    with Image.open(written[0]) as image:
        assert image.format == "PNG" and image.size == (6, 4)
        assert image.convert("RGB").getpixel((0, 0)) == Image.new("RGB", (1, 1), COLOURS[int(written[0].stem) % 5]
                                                                  ).getpixel((0, 0))
    stamps = {p: p.stat().st_mtime_ns for p in written}
    again = load_benchmark("hf", tmp_path / "vqa", "train", limit=5, seed=1)
    assert again.items == loaded.items and {p: p.stat().st_mtime_ns for p in all_images(caches)} == stamps
    bigger = load_benchmark("hf", tmp_path / "vqa", "train", limit=8, seed=1)
    assert {i.id for i in loaded.items} <= {i.id for i in bigger.items} and len(all_images(caches)) == 8
    assert all(p.stat().st_mtime_ns == stamps[p] for p in written)  # reused, not rewritten


def test_a_datasetdict_takes_the_split_and_names_the_splits_it_has(tmp_path, caches):
    datasets.DatasetDict({"validation": vqav2_like(4), "test": vqav2_like(2)}).save_to_disk(str(tmp_path / "dd"))
    loaded = load_benchmark("hf", tmp_path / "dd")  # validation by default
    assert [i.id for i in loaded.items] == ["1000", "1001", "1002"]
    assert all(Path(i.image).parent.name == "validation" and Path(i.image).is_file() for i in loaded.items)
    with pytest.raises(InputError, match=r"has no split 'train'; choose one of: validation, test$"):
        load_benchmark("hf", tmp_path / "dd", "train")


def test_multiple_choice_with_an_int_label_and_classlabel_tasks(tmp_path):
    choice = datasets.Dataset.from_dict({
        "query": ["Which colour?", "Which shape?", "Which one?"],
        "image": pictures(3),
        "options": [["red", "blue"], ["circle", "square", "star"], ["a", "b"]],
        "label": [1, 2, 5],  # the last is out of range
        "category": ["colour", "shape", "other"],
    }, features=datasets.Features({"query": datasets.Value("string"), "image": datasets.Image(),
                                   "options": datasets.List(datasets.Value("string")),
                                   "label": datasets.Value("int64"), "category": datasets.Value("string")}))
    choice.save_to_disk(str(tmp_path / "mc"))
    loaded = load_benchmark("hf", tmp_path / "mc", "test")
    first, second = loaded.items
    assert (first.kind, first.metric, first.choices, first.gold_index, first.answers, first.question_type) == (
        "multiple_choice", "choice", ["red", "blue"], 1, ["blue"], "colour")
    assert second.gold_index == 2 and second.answers == ["star"] and second.id == "1"
    assert loaded.skipped == [f"{tmp_path / 'mc'}:test:row 2: answer index 5 is out of range for 2 choices"]

    entail = datasets.Dataset.from_dict({
        "sentence2": ["A dog runs.", "Nobody is there.", "It rains."],
        "image": pictures(3),
        "label": [0, 2, -1],  # -1: no gold label, as the Hub stores it
    }, features=datasets.Features({"sentence2": datasets.Value("string"), "image": datasets.Image(),
                                   "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"])}))
    entail.save_to_disk(str(tmp_path / "ve"))
    loaded = load_benchmark("hf", tmp_path / "ve", "dev")
    assert [(i.kind, i.metric, i.gold_index, i.answers) for i in loaded.items] == [
        ("entailment", "choice", 0, ["entailment"]), ("entailment", "choice", 2, ["contradiction"])]
    assert loaded.skipped == [f"{tmp_path / 've'}:dev:row 2: label -1 is not a class (-1 means no gold label)"]

    animals = datasets.Dataset.from_dict(
        {"question": ["What animal?", "And here?"], "image": pictures(2), "label": [1, 0]},
        features=datasets.Features({"question": datasets.Value("string"), "image": datasets.Image(),
                                    "label": datasets.ClassLabel(names=["cat", "dog"])}))
    animals.save_to_disk(str(tmp_path / "cls"))
    items = load_benchmark("hf", tmp_path / "cls", "test").items
    assert [(i.kind, i.metric, i.answers) for i in items] == [("open", "exact", ["dog"]), ("open", "exact", ["cat"])]


def test_parquet_folder_by_split_and_a_single_parquet_file(tmp_path, caches):
    folder = tmp_path / "pq" / "data"
    folder.mkdir(parents=True)
    vqav2_like(6).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    vqav2_like(3).to_parquet(str(folder / "validation-00000-of-00001.parquet"))
    train = load_benchmark("hf", tmp_path / "pq", "train", limit=2)
    assert len(train.items) == 2 and train.total == 5 and train.items[0].metric == "vqa"
    assert all(Path(i.image).is_file() for i in train.items) and len(all_images(caches)) == 2
    stamps = {p: p.stat().st_mtime_ns for p in all_images(caches)}
    assert load_benchmark("hf", tmp_path / "pq", "train", limit=2).items == train.items
    assert {p: p.stat().st_mtime_ns for p in all_images(caches)} == stamps
    assert len(load_benchmark("hf", tmp_path / "pq", "validation").items) == 3
    with pytest.raises(InputError, match=r"cannot read 'dev' from .*Unknown split"):
        load_benchmark("hf", tmp_path / "pq", "dev")
    single = load_benchmark("hf", folder / "validation-00000-of-00001.parquet", "anything")
    assert [i.id for i in single.items] == ["1000", "1001", "1002"]


def test_unusable_data_gives_one_line_errors(tmp_path):
    datasets.Dataset.from_dict({"prompt": ["Hi?"], "image": pictures(1), "answer": ["x"]}).save_to_disk(
        str(tmp_path / "noq"))
    with pytest.raises(InputError, match=r"no question column found among prompt, image, answer; see"):
        load_benchmark("hf", tmp_path / "noq", "train")
    datasets.Dataset.from_dict({"question": ["Hi?"], "answer": ["x"]}).save_to_disk(str(tmp_path / "noimg"))
    with pytest.raises(InputError, match=r"no image column found among question, answer"):
        load_benchmark("hf", tmp_path / "noimg", "train")
    datasets.Dataset.from_dict({"question": ["", "  "], "image": pictures(2), "answer": ["x", "y"]}).save_to_disk(
        str(tmp_path / "empty"))
    with pytest.raises(InputError, match=r"hf train has no usable records \(2 skipped\); first problem: .*row 0: "
                                         r"the question is empty"):
        load_benchmark("hf", tmp_path / "empty", "train")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hi")
    for data, message in [(tmp_path / "junk", "holds neither a save_to_disk dataset nor parquet files"),
                          (tmp_path / "junk" / "notes.txt", "is not a parquet file"),
                          (tmp_path / "missing", "does not exist"), ("not an/id!", "neither an existing folder")]:
        with pytest.raises(InputError, match=message) as err:
            load_benchmark("hf", data, "train")
        assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="hf needs --data"):
        load_benchmark("hf", None, "train")


def test_image_paths_as_text_are_used_as_files_and_bad_images_fail_at_run_time(tmp_path, caches):
    folder = tmp_path / "paths"
    datasets.Dataset.from_dict({"question": ["Q?"], "image": ["pics/a.png"], "answer": ["x"]}).save_to_disk(
        str(folder))
    assert load_benchmark("hf", folder, "train").items[0].image == str(folder / "pics/a.png")
    cmyk = io.BytesIO()
    Image.new("CMYK", (3, 3), (0, 255, 255, 0)).save(cmyk, format="JPEG")  # PNG cannot hold CMYK
    broken = datasets.Dataset.from_dict(
        {"question": ["Q0?", "Q1?"], "image": [{"bytes": b"not an image", "path": None},
                                               {"bytes": cmyk.getvalue(), "path": None}],
         "answer": ["x", "y"]},
        features=datasets.Features({"question": datasets.Value("string"), "image": datasets.Image(decode=False),
                                    "answer": datasets.Value("string")}))
    broken.save_to_disk(str(tmp_path / "broken"))
    bad, cmyk_item = load_benchmark("hf", tmp_path / "broken", "train").items
    assert not Path(bad.image).exists()  # that sample fails when it runs, like a missing image file
    with Image.open(cmyk_item.image) as image:
        assert image.mode == "RGB" and image.getpixel((1, 1))[0] > 200
    assert all_images(caches) == [Path(cmyk_item.image)]


def test_an_uncached_hub_id_offline_is_one_line_naming_the_id(tmp_path):
    script = ("from idealagent.evaluation.datasets import load_benchmark\n"
              "from idealagent.errors import InputError\n"
              "try:\n    load_benchmark('hf', 'someone/not-cached:cfg', 'validation')\n"
              "except InputError as err:\n    print('INPUT', err)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "IDEALAGENT_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], check=False, env=env, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("INPUT "), (done.stdout, done.stderr)
    assert "'someone/not-cached'" in lines[0]
    assert "hf download --repo-type dataset someone/not-cached --local-dir DIR" in lines[0]


def test_run_eval_on_a_hub_folder_writes_scored_lines(tmp_path, caches):
    vqav2_like(8).save_to_disk(str(tmp_path / "vqa"))
    agent = IdealAgent(ScriptedChatModel(replies=[eval_fake_preset.reply] * 1000), ScriptedAnswerer("red"),
                       max_rounds=2, attempts=1, batch_size=4, calibration="stated")
    result = run_eval("hf", tmp_path / "vqa", "train", out=tmp_path / "r.jsonl", preset="fake", agent=agent, limit=4)
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    header, rows = lines[0]["header"], lines[1:]
    assert header["benchmark"] == "hf" and header["split"] == "train" and result.n == 4 == len(rows)
    for row in rows:
        n = int(row["id"]) - 1000
        red = n % 5 == 0  # the gold answer: 10 x COLOURS[n % 5]; the fake says red for even n
        assert row["error"] is None and row["stop_reason"] == "confident", row  # the PNG was there
        assert row["prediction"] == ("red" if n % 2 == 0 else "blue")
        assert row["score"] == (1.0 if red and n % 2 == 0 else 0.0)
        assert row["baseline"]["score"] == (1.0 if red else 0.0)


def test_without_the_datasets_package_the_error_says_what_to_install(tmp_path, monkeypatch):
    from idealagent.errors import ModelLoadError

    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(ModelLoadError, match=r"^reading Hugging Face datasets needs the datasets package: "
                                             r"pip install 'idealagent\[hub\]'$"):
        load_benchmark("hf", "lmms-lab/VQAv2", "validation")
