"""The evaluation runner, in-process, on a generic jsonl fixture with deterministic fake models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

import idealagent.presets
from idealagent.errors import InputError
from idealagent.evaluation.baseline import baseline_question, read_reply
from idealagent.evaluation.items import EvalItem
from idealagent.evaluation.results import read_existing
from idealagent.evaluation.runner import (
    expected_settings,
    final_choice_index,
    parse_shard,
    prepare_eval,
    result_row,
    run_eval,
)
from idealagent.presets import load_preset
from idealagent.trace import Trace
from tests import eval_fake_preset

N_ITEMS = 30


def write_fixture(folder: Path, n: int = N_ITEMS, *, extra_lines: list[str] = ()) -> Path:
    """``test.jsonl`` with ``n`` items (every 5th multiple choice) over three small images."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, colour in enumerate(("red", "green", "blue")):
        Image.new("RGB", (8, 8), colour).save(folder / f"img{index}.png")
    lines = []
    for n_ in range(n):
        record = {"id": f"q{n_:02d}", "image": f"img{n_ % 3}.png", "question": f"What colour is item {n_}?",
                  "answer": "red", "question_type": "mc" if n_ % 5 == 0 else "colour"}
        if n_ % 5 == 0:
            record["choices"] = ["red", "blue"]
        lines.append(json.dumps(record))
    (folder / "test.jsonl").write_text("\n".join([*lines, *extra_lines]) + "\n")
    return folder


def expected_score(n: int) -> float:
    """The fake reasoner answers "A" (red) to choices, "red" for even items, "blue" for odd."""
    return 1.0 if n % 5 == 0 or n % 2 == 0 else 0.0


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(idealagent.presets.PRESETS, eval_fake_preset.NAME, eval_fake_preset.PRESET)
    return eval_fake_preset.NAME


def read_lines(path: Path) -> tuple[dict, list[dict]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return lines[0]["header"], lines[1:]


def test_a_run_writes_a_header_and_one_scored_line_per_sample(tmp_path: Path, fake: str) -> None:
    data = write_fixture(tmp_path / "data")
    seen = []
    result = run_eval("jsonl", data, out=tmp_path / "r.jsonl", preset=fake, on_progress=lambda p: seen.append(p.done))
    header, rows = read_lines(tmp_path / "r.jsonl")
    assert header["benchmark"] == "jsonl" and header["split"] == "test" and header["preset"] == fake
    assert header["settings"] == {"max_rounds": 2, "confidence_threshold": 0.7, "max_sub_questions": 3,
                                  "attempts": 1, "structured": "auto", "direct_answer": True,
                                  "calibration": {"method": "stated", "fits": {}, "fitted_on": {}, "rounds": {}},
                                  "zoom": "auto", "look_budget": 9, "look_mode": "auto", "roles_see": "auto",
                                  "option_scoring": "letter", "votes": 0, "vote_temperature": 0.7, "preset": fake}
    assert header["shard"] == [0, 1] and header["baseline"] is True and header["seed"] == 0
    assert sorted(row["id"] for row in rows) == [f"q{n:02d}" for n in range(N_ITEMS)]
    for row in rows:
        n = int(row["id"][1:])
        assert row["index"] == n and row["score"] == expected_score(n), row
        assert row["error"] is None and row["stop_reason"] == "confident" and row["confidence"] == 0.9
        assert row["trace"]["sample"]["image"] == row["image"] == str(data / f"img{n % 3}.png")
        assert row["trace"]["rounds"][0]["sub_qas"][0]["answer"] == "red"
        if n % 5 == 0:  # multiple choice: the agent said A, the baseline's "red" is option A too
            assert row["kind"] == "multiple_choice" and row["choices"] == ["red", "blue"]
            assert row["prediction"] == "red" and row["choice_index"] == 0 and row["gold_index"] == 0
            assert row["baseline"]["choice_index"] == 0 and row["baseline"]["score"] == 1.0
        else:
            assert row["baseline"] == {"prediction": "red", "choice_index": None, "score": 1.0, "error": None,
                                       "latency_s": row["baseline"]["latency_s"],
                                       "input_tokens": 0, "output_tokens": 0}  # a scripted answerer: no model
    assert result.n == result.new == N_ITEMS and result.failures == 0
    assert result.agent_accuracy == pytest.approx(sum(map(expected_score, range(N_ITEMS))) / N_ITEMS)
    assert result.baseline_accuracy == 1.0
    assert seen == list(range(N_ITEMS + 1))  # once at the start, then after every sample


def test_planned_settings_match_what_the_loaded_agent_records(fake: str) -> None:
    from idealagent.evaluation.runner import agent_settings

    for overrides in ({}, {"max_rounds": 1, "confidence_threshold": 0.5, "batch_size": 2}):
        assert expected_settings(fake, overrides) == agent_settings(load_preset(fake, **overrides))
    # A model override is part of the settings (so of the fingerprint); nothing is loaded here.
    name = next(name for name, preset in idealagent.presets.PRESETS.items() if "vlm" in preset.models)
    settings = expected_settings(name, {"vlm": "/models/mine", "max_rounds": 1})
    assert settings["preset"] == name and settings["models"]["vlm"] == "/models/mine"
    assert settings["max_rounds"] == 1 and "vlm" not in settings


def test_rerunning_skips_finished_ids_and_a_bigger_limit_adds_the_rest(tmp_path: Path, fake: str) -> None:
    data, out = write_fixture(tmp_path / "data"), tmp_path / "r.jsonl"
    first = run_eval("jsonl", data, out=out, preset=fake, limit=10, seed=3)
    again = run_eval("jsonl", data, out=out, preset=fake, limit=10, seed=3)
    assert first.new == 10 and again.new == 0 and again.n == 10  # nothing left: no model was needed
    more = run_eval("jsonl", data, out=out, preset=fake, limit=25, seed=3)
    assert more.new == 15 and more.n == 25
    _, rows = read_lines(out)
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids)) == 25
    assert out.read_text().count('"header"') == 1


def test_a_torn_last_line_is_cut_off_and_its_sample_run_again(tmp_path: Path, fake: str) -> None:
    data, out = write_fixture(tmp_path / "data", n=6), tmp_path / "r.jsonl"
    run_eval("jsonl", data, out=out, preset=fake)
    text = out.read_text()
    last = text.splitlines()[-1]
    out.write_text(text[: len(text) - len(last) // 2])  # what a kill in the middle of a write leaves
    existing = read_existing(out)
    assert existing.has_torn_tail and len(existing.done) == 5
    result = run_eval("jsonl", data, out=out, preset=fake)
    assert result.new == 1 and result.n == 6
    _, rows = read_lines(out)  # every line parses again
    assert sorted(row["id"] for row in rows) == [f"q{n:02d}" for n in range(6)]


def test_an_unparseable_last_line_is_dropped_but_a_bad_middle_line_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    header = json.dumps({"header": {"benchmark": "jsonl"}})
    row = json.dumps({"id": "a", "score": 1.0, "error": None, "baseline": None})
    out.write_text(f"{header}\n{row}\n{{\"id\": \"b\", \"sco\n")
    existing = read_existing(out)
    assert list(existing.done) == ["a"] and existing.complete_bytes == len(f"{header}\n{row}\n")
    out.write_text(f"{header}\nnot json\n{row}\n")
    with pytest.raises(InputError, match=r"r.jsonl:2: not a valid JSON line.*--force"):
        read_existing(out)
    out.write_text(f"{row}\n")
    with pytest.raises(InputError, match="not an idealagent results file"):
        read_existing(out)


def test_another_configuration_is_refused_unless_forced(tmp_path: Path, fake: str) -> None:
    data, out = write_fixture(tmp_path / "data", n=4), tmp_path / "r.jsonl"
    run_eval("jsonl", data, out=out, preset=fake)
    for change, fragment in [({"seed": 1}, "seed: 0 in the file, 1 now"),
                             ({"max_rounds": 3}, "settings"),
                             ({"baseline": False}, "baseline")]:
        with pytest.raises(InputError, match=fragment):
            run_eval("jsonl", data, out=out, preset=fake, **change)
    # The batch size and the shard may change between runs of one configuration.
    run_eval("jsonl", data, out=out, preset=fake, batch_size=1, shard=(1, 2))
    forced = run_eval("jsonl", data, out=out, preset=fake, max_rounds=3, force=True)
    header, rows = read_lines(out)
    assert forced.new == 4 and header["settings"]["max_rounds"] == 3 and len(rows) == 4


def test_a_missing_image_is_a_failed_line_and_the_run_goes_on(tmp_path: Path, fake: str) -> None:
    missing = json.dumps({"id": "gone", "image": "nowhere.png", "question": "What colour is item 2?",
                          "answer": "red"})
    data = write_fixture(tmp_path / "data", n=5, extra_lines=[missing])
    result = run_eval("jsonl", data, out=tmp_path / "r.jsonl", preset=fake)
    _, rows = read_lines(tmp_path / "r.jsonl")
    failed = {row["id"]: row for row in rows if row["error"]}
    assert list(failed) == ["gone"] and len(rows) == 6 and result.failures == 1
    row = failed["gone"]
    assert row["score"] is None and row["stop_reason"] == "error" and "no such file" in row["error"]
    assert row["baseline"]["score"] is None and "no such file" in row["baseline"]["error"]


def test_malformed_records_are_counted_and_skipped(tmp_path: Path, fake: str) -> None:
    data = write_fixture(tmp_path / "data", n=5, extra_lines=["{not json", json.dumps({"image": "img0.png"})])
    settings = expected_settings(fake)
    plan = prepare_eval("jsonl", data, None, out=tmp_path / "r.jsonl", preset=fake, settings=settings)
    assert len(plan.items) == 5 and len(plan.skipped) == 2
    assert plan.skipped[0].startswith("test.jsonl:6:")


def test_an_agent_crash_stops_the_run_and_records_nothing_in_flight(tmp_path: Path, fake: str) -> None:
    data = write_fixture(tmp_path / "data", n=10)
    agent = load_preset(fake, batch_size=2)
    real_iter_batch = agent.iter_batch

    def crashing(samples, **options):  # a backend bug surfacing while q04 is in the pool
        for trace in real_iter_batch(samples, **options):
            if trace.sample.id == "q04":
                raise RuntimeError("CUDA error: device-side assert")
            yield trace

    agent.iter_batch = crashing
    with pytest.raises(RuntimeError, match="CUDA error"):  # a bug is nobody's wrong answer
        run_eval("jsonl", data, out=tmp_path / "r.jsonl", preset=fake, agent=agent)
    _, rows = read_lines(tmp_path / "r.jsonl")
    assert sorted(row["id"] for row in rows) == ["q00", "q01", "q02", "q03"]
    assert not any(row["error"] for row in rows)
    rerun = run_eval("jsonl", data, out=tmp_path / "r.jsonl", preset=fake)  # resumes with the rest
    assert rerun.new == 6 and rerun.failures == 0
    assert sorted(row["id"] for row in read_lines(tmp_path / "r.jsonl")[1]) == [f"q{n:02d}" for n in range(10)]


def test_shards_partition_the_selection(tmp_path: Path, fake: str) -> None:
    data = write_fixture(tmp_path / "data")
    settings = expected_settings(fake)

    def ids(shard: tuple[int, int]) -> list[str]:
        plan = prepare_eval("jsonl", data, "test", out=tmp_path / f"{shard}.jsonl", preset=fake,
                            settings=settings, limit=20, seed=1, shard=shard)
        return [item.id for item in plan.items]

    whole, parts = ids((0, 1)), [ids((i, 3)) for i in range(3)]
    assert sorted(i for part in parts for i in part) == sorted(whole) and len(whole) == 20
    assert parts[1] == whole[1::3]


@pytest.mark.parametrize("text", ["2/2", "-1/2", "a/b", "1", "0/0", "1/2/3"])
def test_bad_shards_are_input_errors(text: str) -> None:
    with pytest.raises(InputError, match="i/n"):
        parse_shard(text)
    assert parse_shard("3/4") == (3, 4)


def test_the_baseline_question_carries_the_options_and_the_reply_maps_back() -> None:
    def item(kind: str, choices=None, gold=None) -> EvalItem:
        return EvalItem(id="1", image="x.png", question="Which one?", kind=kind, choices=choices,
                        answers=["cat"], gold_index=gold, metric="exact" if kind == "open" else "choice")

    mc = item("multiple_choice", ["cat", "dog"], 0)
    assert baseline_question(mc) == "Which one? Options: A) cat B) dog. Answer with one option."
    assert read_reply(mc, "B) dog") == ("dog", 1) and read_reply(mc, "a fish") == (None, None)  # no option: no answer
    assert baseline_question(item("yes_no", gold=0)) == "Which one? Answer yes or no."
    assert read_reply(item("yes_no", gold=0), "Yes, it is.") == ("yes", 0)
    entailment = baseline_question(item("entailment", gold=2))
    assert '"Which one?"' in entailment and "C) contradiction" in entailment
    assert baseline_question(item("open")) == "Which one?"
    assert read_reply(item("open"), "A cat.\nIt sits.") == ("A cat", None)


def test_the_row_takes_the_final_choice_from_the_trace_and_matches_only_old_traces() -> None:
    item = EvalItem(id="1", image="x.png", question="How many?", kind="multiple_choice", choices=["3.", "3"],
                    answers=["3."], gold_index=0, metric="choice")
    header = {"benchmark": "fixture", "split": "test"}
    # The loop kept option 0, whose text is "3."; matching that text would give "3" (index 1).
    trace = Trace(sample=item.to_sample(), answer="3.", choice_index=0, stop_reason="confident")
    row = result_row(item, trace, header, None)
    assert (row["choice_index"], row["score"]) == (0, 1.0)
    # A trace written before Trace.choice_index existed has no such key: its answer is matched,
    # with the old (here wrong) result. A new trace that names no option keeps None.
    old = trace.model_dump(mode="json")
    del old["choice_index"]
    assert final_choice_index(Trace.model_validate(old)) == 1
    assert result_row(item, Trace.model_validate(old), header, None)["score"] == 0.0
    assert final_choice_index(trace.model_copy(update={"choice_index": None})) is None
