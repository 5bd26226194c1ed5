"""``idealagent eval`` and ``idealagent report``: in-process with a fake preset, a SIGKILL'd
subprocess that resumes, sharded runs merged by the report, and one real tiny-preset run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

import idealagent.presets
from tests import eval_fake_preset
from tests.test_cli import assert_one_error_line, invoke
from tests.test_eval_highres import _vstar
from tests.test_eval_runner import N_ITEMS, expected_score, read_lines, write_fixture

ROOT = Path(__file__).resolve().parent.parent


class Builds:
    """Counts how often the fake preset's models were built (0 = no model loaded)."""

    def __init__(self) -> None:
        self.count = 0

    def build(self, **kwargs):
        self.count += 1
        return eval_fake_preset.build(**kwargs)


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> Builds:
    builds = Builds()
    preset = eval_fake_preset.PRESET
    monkeypatch.setitem(idealagent.presets.PRESETS, preset.name,
                        idealagent.presets.Preset(preset.name, preset.description, builds.build, preset.settings))
    return builds


def run_eval_cli(data: Path, out: Path, *extra: str):
    return invoke("eval", "jsonl", "--data", str(data), "--out", str(out), "--preset", "fake-eval", *extra)


def test_eval_writes_results_and_a_summary(tmp_path: Path, builds: Builds) -> None:
    data, out = write_fixture(tmp_path / "data"), tmp_path / "r.jsonl"
    result = run_eval_cli(data, out)
    assert result.exit_code == 0, result.output
    header, rows = read_lines(out)
    assert len(rows) == N_ITEMS and header["preset"] == "fake-eval"
    accuracy = sum(map(expected_score, range(N_ITEMS))) / N_ITEMS
    assert f"{N_ITEMS} samples (0 failed): agent {accuracy:.1%}, baseline 100.0%" in result.stdout
    assert f"idealagent report {out}" in result.stdout
    # Not a terminal: what it loads, what it runs, then (the run being shorter than the
    # progress interval) only the final progress line.
    assert result.stderr.splitlines() == [
        "loading the fake-eval preset's models…",
        f"running {N_ITEMS} samples; a progress line every 30s and at the end",
        result.stderr.splitlines()[-1]]
    assert result.stderr.splitlines()[-1].startswith(f"{N_ITEMS}/{N_ITEMS} done, agent {accuracy:.1%}")
    again = run_eval_cli(data, out)  # all done: the models do not even load
    assert again.exit_code == 0 and builds.count == 1
    assert "30 of 30 samples already in" in again.stderr


def test_without_a_terminal_progress_lines_follow_the_clock(tmp_path: Path, builds: Builds,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import idealagent.cli.evaluation

    clock = iter(range(0, 10_000, 7))  # each look at the clock is 7 s after the one before
    monkeypatch.setattr(idealagent.cli.evaluation, "_now", lambda: float(next(clock)))
    monkeypatch.setattr(idealagent.cli.evaluation, "PROGRESS_EVERY_S", 20.0)
    data, out = write_fixture(tmp_path / "data", n=12), tmp_path / "r.jsonl"
    result = run_eval_cli(data, out, "--batch-size", "1")
    assert result.exit_code == 0, result.output
    progress = [line for line in result.stderr.splitlines() if " done, " in line]
    # Started at 0 s; updates at 7, 14, 21 (printed), 28, 35, 42 (printed), ...: every third one,
    # so every 21 s, and the last sample's line whatever the clock says.
    done = [int(line.split("/")[0]) for line in progress]
    assert done == [3, 6, 9, 12]
    assert result.stderr.splitlines()[:2] == [
        "loading the fake-eval preset's models…", "running 12 samples; a progress line every 20s and at the end"]


def test_a_slow_first_sample_is_not_a_silent_minute(tmp_path: Path, builds: Builds,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Before any sample finishes, the line still comes every interval: what is in flight and
    how many model calls were made, and no estimate yet."""
    import idealagent.cli.evaluation

    monkeypatch.setattr(idealagent.cli.evaluation, "PROGRESS_EVERY_S", 0.2)
    monkeypatch.setenv("FAKE_EVAL_DELAY", "0.5")  # each reasoner reply: the first sample takes > 1 s
    data, out = write_fixture(tmp_path / "data", n=2), tmp_path / "r.jsonl"
    result = run_eval_cli(data, out, "--batch-size", "2")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if " done, " in line]
    early = [line for line in lines if line.startswith("0/2 done")]
    assert early, lines  # printed while nothing had finished
    assert re.search(r"0/2 done, .*, 2 in flight, [1-9]\d* model calls$", early[-1]), early[-1]
    assert lines[-1].startswith("2/2 done") and "0 in flight" in lines[-1]


def test_the_interrupt_line_says_what_the_response_cache_kept(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from idealagent.cli.evaluation import _kept
    from idealagent.evaluation.runner import Progress
    from idealagent.events import RoundAsked
    from idealagent.response_cache import ResponseCache
    from idealagent.trace import Round, Sample, Trace

    cache = ResponseCache(tmp_path / "responses")
    for key in ("a" * 64, "b" * 64, "c" * 64):
        cache.store(key, {"text": "red"})
    progress = Progress(total=10, pending=10)
    progress.add(1.0, 1.0, False, new=True)
    trace = Trace(sample=Sample(question="What colour?"), caption="a red ball")
    trace.usage.llm_calls, trace.usage.answerer_calls = 2, 1
    progress.observe(RoundAsked(trace, Round(index=1)))
    line = _kept(progress, SimpleNamespace(response_cache=cache), tmp_path / "r.jsonl")
    assert line == (f"1 sample finished by this run is kept in {tmp_path / 'r.jsonl'}; 1 sample in flight had "
                    "made 4 model calls, and 3 replies are in the response cache, so the rerun does not pay "
                    "for them again")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["eval", "vqa9", "--out", "r.jsonl"], ["unknown benchmark", "vqav2", "easy-vqa", "jsonl"]),
        (["eval", "vqav2", "--out", "r.jsonl", "--data", "no/such/dir"], ["no/such/dir", "does not exist"]),
        (["eval", "vqav2", "--out", "r.jsonl"], ["needs --data"]),
        (["eval", "easy-vqa", "--out", "r.jsonl", "--shard", "2/2"], ["--shard", "i/n"]),
        (["eval", "easy-vqa", "--out", "r.jsonl", "--shard", "x"], ["--shard"]),
        (["eval", "easy-vqa", "--out", "r.jsonl", "--split", "dev"], ["no split", "test", "train"]),
        (["eval", "easy-vqa", "--out", "r.jsonl", "--limit", "0"], ["--limit"]),
        (["eval", "easy-vqa", "--out", "r.jsonl", "--threshold", "2"], ["--threshold: ", "got 2"]),
        (["eval", "easy-vqa", "--out", "r.jsonl", "--batch-size", "0"], ["--batch-size"]),
        (["eval", "easy-vqa", "--out", "r.jsonl", "--scoring", "best"], ["--scoring: ", "letter", "likelihood"]),
        (["eval", "easy-vqa", "--out", "r.jsonl", "--preset", "huge"], ["unknown preset", "huge"]),
    ],
)
def test_bad_arguments_exit_2_in_one_line_before_any_model_loads(builds: Builds, args, fragments, tmp_path,
                                                                 monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    preset = [] if "--preset" in args else ["--preset", "fake-eval"]
    assert_one_error_line(invoke(*args, *preset), 2, *fragments)
    assert builds.count == 0 and not (tmp_path / "r.jsonl").exists()


def test_another_configuration_in_out_is_refused_and_force_overwrites(tmp_path: Path, builds: Builds) -> None:
    data, out = write_fixture(tmp_path / "data", n=4), tmp_path / "r.jsonl"
    assert run_eval_cli(data, out).exit_code == 0
    refused = run_eval_cli(data, out, "--max-rounds", "3")
    assert_one_error_line(refused, 2, str(out), "another configuration", "max_rounds", "--force")
    assert builds.count == 1
    assert run_eval_cli(data, out, "--max-rounds", "3", "--force").exit_code == 0
    header, rows = read_lines(out)
    assert header["settings"]["max_rounds"] == 3 and len(rows) == 4


def test_likelihood_scoring_is_refused_in_one_line_for_an_answerer_that_cannot_score(tmp_path: Path,
                                                                                   builds: Builds) -> None:
    _vstar(tmp_path / "vstar")
    out = tmp_path / "r.jsonl"
    result = invoke("eval", "vstar", "--data", str(tmp_path / "vstar"), "--out", str(out), "--preset", "fake-eval",
                    "--scoring", "likelihood")
    # The models load (the answerer says what it can do), then one error line, before any model call.
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [result.stderr.strip().splitlines()[-1]] and builds.count == 1
    assert errors[0] == ("error: --scoring likelihood needs an answerer that scores given options (option_logprobs); "
                         "ScriptedAnswerer cannot (use --scoring letter)")
    assert not out.exists() or read_lines(out)[1] == []  # no sample was run


def test_shards_merge_in_the_report_to_the_unsharded_result(tmp_path: Path, builds: Builds) -> None:
    data = write_fixture(tmp_path / "data")
    whole, part0, part1 = (tmp_path / name for name in ("all.jsonl", "s0.jsonl", "s1.jsonl"))
    for out, shard in ((whole, "0/1"), (part0, "0/2"), (part1, "1/2")):
        assert run_eval_cli(data, out, "--limit", "20", "--seed", "4", "--shard", shard).exit_code == 0
    assert len(read_lines(part0)[1]) == len(read_lines(part1)[1]) == 10

    def report(*paths: Path) -> dict:
        result = invoke("report", *map(str, paths), "--json", "--out-dir", str(tmp_path / paths[0].stem))
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)  # stdout holds the summary alone

    merged, single = report(part0, part1), report(whole)
    assert merged["overall"]["n"] == single["overall"]["n"] == 20
    # Everything that does not depend on line order or timing agrees (ties in confidence make
    # accuracy@coverage order-dependent; latencies differ between runs).
    order_free = ("n", "accuracy", "failures", "unknown_rate", "ece", "accuracy_by_rounds", "baseline_accuracy",
                  "baseline_failures")
    for group in ("overall", *single["by_type"]):
        got = merged["overall"] if group == "overall" else merged["by_type"][group]
        want = single["overall"] if group == "overall" else single["by_type"][group]
        assert {k: got[k] for k in order_free} == {k: want[k] for k in order_free}
    assert merged["by_type"].keys() == single["by_type"].keys() == {"colour", "mc"}
    assert (tmp_path / "s0" / "summary.json").exists()
    assert {p.name for p in (tmp_path / "s0").glob("*.png")} == {
        "reliability.png", "accuracy_vs_rounds.png", "accuracy_vs_coverage.png", "risk_coverage.png"}


def test_report_renders_a_table_next_to_the_first_file_by_default(tmp_path: Path, builds: Builds) -> None:
    data, out = write_fixture(tmp_path / "data", n=6), tmp_path / "r.jsonl"
    assert run_eval_cli(data, out).exit_code == 0
    result = invoke("report", str(out))
    assert result.exit_code == 0, result.output
    assert "baseline" in result.stdout.lower() and "summary.json" in result.stdout
    summary = json.loads((tmp_path / "r.report" / "summary.json").read_text())
    assert summary["overall"]["n"] == 6
    # Which calibration the numbers were made under, even where the preset names no models.
    assert summary["calibration"] == "stated" and "calibration stated" in result.stdout  # the fake preset's
    assert_one_error_line(invoke("report", str(tmp_path / "none.jsonl")), 2, "none.jsonl")


def test_a_killed_run_resumes_without_losing_or_repeating_a_sample(tmp_path: Path, builds: Builds) -> None:
    data, out = write_fixture(tmp_path / "data"), tmp_path / "r.jsonl"
    command = [sys.executable, "-c",
               "from tests.eval_fake_preset import register; register(); from idealagent.cli import main; main()",
               "eval", "jsonl", "--data", str(data), "--out", str(out), "--preset", "fake-eval",
               "--batch-size", "2"]
    env = {**os.environ, "FAKE_EVAL_DELAY": "0.15", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= 6:  # the header and 5 samples
                break
            time.sleep(0.02)
        assert process.poll() is None, process.stderr.read().decode()
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    _, partial_rows = read_lines(out) if out.read_bytes().endswith(b"\n") else (None, None)
    assert partial_rows is None or 5 <= len(partial_rows) < N_ITEMS
    rerun = run_eval_cli(data, out, "--batch-size", "2")  # in this process: only the file carries over
    assert rerun.exit_code == 0, rerun.output
    _, rows = read_lines(out)  # every line parses: no torn line is left
    assert out.read_text().count('"header"') == 1
    assert sorted(row["id"] for row in rows) == [f"q{n:02d}" for n in range(N_ITEMS)]
    assert all(row["score"] == expected_score(int(row["id"][1:])) for row in rows)


@pytest.mark.long  # CI runs it, beside the evaluation notebook (30 s alone); fakes test the CLI's path
@pytest.mark.real_weights
@pytest.mark.tiny_replies  # its 3 samples are among the evaluation notebook's 5 (seed 0)
def test_easy_vqa_end_to_end_with_the_tiny_preset(tmp_path: Path) -> None:
    out = tmp_path / "easy.jsonl"
    result = invoke("eval", "easy-vqa", "--out", str(out), "--limit", "3", "--preset", "tiny")
    assert result.exit_code == 0, result.output
    header, rows = read_lines(out)
    assert header["benchmark"] == "easy-vqa" and header["split"] == "test" and len(rows) == 3
    for row in rows:
        assert row["error"] is None and row["score"] in (0.0, 1.0)
        assert row["trace"]["rounds"] and row["baseline"]["score"] in (0.0, 1.0)
        assert Image.open(row["image"]).size[0] > 0
    report = invoke("report", str(out), "--json")
    assert report.exit_code == 0, report.output
    summary = json.loads(report.stdout)
    assert summary["overall"]["n"] == 3
    assert sorted(p.name for p in (tmp_path / "easy.report").glob("*.png")) == [
        "accuracy_vs_coverage.png", "accuracy_vs_rounds.png", "reliability.png", "risk_coverage.png"]


def test_on_a_terminal_a_progress_bar_shows_counts_and_accuracies(tmp_path: Path, builds: Builds) -> None:
    import io

    from rich.console import Console

    from idealagent.cli.evaluation import _run_with_bar
    from idealagent.evaluation.runner import expected_settings, prepare_eval
    from idealagent.presets import load_preset

    data = write_fixture(tmp_path / "data", n=10)
    plan = prepare_eval("jsonl", data, None, out=tmp_path / "r.jsonl", preset="fake-eval",
                        settings=expected_settings("fake-eval"))
    buffer = io.StringIO()
    result = _run_with_bar(plan, load_preset("fake-eval"), Console(file=buffer, force_terminal=True, width=120))
    assert result.new == 10
    drawn = buffer.getvalue()
    assert "10/10" in drawn and "agent 60.0%" in drawn and "baseline 100.0%" in drawn and "failed 0" in drawn


def test_bench_measures_agent_and_baseline_at_each_batch_size(builds: Builds) -> None:
    result = invoke("bench", "--preset", "fake-eval", "--samples", "4", "-b", "1", "-b", "4", "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(line["mode"], line["batch_size"]) for line in lines] == [
        ("agent", 1), ("agent", 4), ("baseline", 1), ("baseline", 4)]
    for line in lines:
        assert line["preset"] == "fake-eval" and line["samples"] == 4 and line["failures"] == 0
        assert line["samples_per_s"] > 0 and line["seconds"] >= 0
    # One round a sample at most; a round whose verdict was unusable (the fake answers "A" to a
    # yes/no question) does not count.
    assert all(0 < line["mean_rounds"] <= 1 and line["sub_questions_per_s"] > 0 for line in lines[:2])
    # Where the calls went, per sample and step: one caption and one direct answer each.
    assert all(line["calls_by_step"]["caption"] == 1 and line["calls_by_step"]["direct"] == 1 for line in lines[:2])
    assert builds.count == 1
    table = invoke("bench", "--preset", "fake-eval", "--samples", "2", "-b", "2", "--mode", "baseline")
    assert table.exit_code == 0 and "samples/s" in table.stdout and "baseline" in table.stdout
    table = invoke("bench", "--preset", "fake-eval", "--samples", "2", "-b", "2", "--mode", "agent")
    assert table.exit_code == 0 and "calls/sample by step" in table.stdout and "caption 1 · direct 1" in table.stdout


def test_bench_bad_arguments_exit_2_before_any_model_loads(builds: Builds) -> None:
    assert_one_error_line(invoke("bench", "--preset", "fake-eval", "--mode", "fast"), 2, "unknown --mode 'fast'")
    assert_one_error_line(invoke("bench", "--preset", "fake-eval", "-b", "0"), 2, "at least 1")
    assert_one_error_line(invoke("bench", "--preset", "fake-eval", "--benchmark", "nope"), 2, "unknown benchmark")
    assert builds.count == 0


def test_calibrate_fits_on_a_run_and_eval_applies_the_file(tmp_path: Path, builds: Builds) -> None:
    data, train = write_fixture(tmp_path / "data"), tmp_path / "train.jsonl"
    assert run_eval_cli(data, train).exit_code == 0
    calibration = tmp_path / "calibration.json"
    result = invoke("calibrate", str(train), "--out", str(calibration))
    assert result.exit_code == 0, result.output
    assert f"verdict: {N_ITEMS} candidates" in result.stdout and f"wrote {calibration}" in result.stdout
    saved = json.loads(calibration.read_text())
    assert saved["method"] == "logistic" and saved["fitted_on"]["files"] == ["train.jsonl"]
    # What each round did in the fitted run is kept, and said.
    assert saved["rounds"] and all(set(record) == {"reached", "fixed"} for record in saved["rounds"].values())
    assert re.search(r"round 1: \d+ of \d+ samples? fixed", result.stdout)
    # Applied: recorded in every trace and in the results file's fingerprint.
    test = tmp_path / "test.jsonl"
    result = run_eval_cli(data, test, "--calibration", str(calibration))
    assert result.exit_code == 0, result.output
    header, rows = read_lines(test)
    assert header["settings"]["calibration"]["method"] == "logistic"
    assert all(row["trace"]["settings"]["calibration"]["fits"] == saved["fits"] for row in rows)
    report = invoke("report", str(test), "--json")
    assert json.loads(report.stdout)["calibration"] == "logistic (train.jsonl)"
    for row in rows:  # every final answer is its most confident candidate
        trace = row["trace"]
        calibrated = [v["calibrated"] for r in trace["rounds"] if (v := r["verdict"]) and v["answer"]]
        assert row["confidence"] == pytest.approx(max([trace["direct"]["calibrated"], *calibrated]))
    # The fake answerer's direct answers were all right: the fit trusts them, and they win.
    assert {row["trace"]["answer_source"] for row in rows} == {"direct"}
    # Resuming under another calibration is another configuration.
    other = invoke("eval", "jsonl", "--data", str(data), "--out", str(test), "--preset", "fake-eval")
    assert_one_error_line(other, 2, "another configuration", "calibration")


def test_calibrate_refuses_what_it_cannot_fit_in_one_line(tmp_path: Path) -> None:
    missing = invoke("calibrate", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "c.json"))
    assert_one_error_line(missing, 2, "none.jsonl not found")
    method = invoke("calibrate", str(tmp_path / "none.jsonl"), "--method", "magic")
    assert_one_error_line(method, 2, "--method must be logistic or isotonic")
    bad_file = invoke("ask", str(tmp_path / "none.png"), "Q?", "--calibration", str(tmp_path / "missing.json"))
    assert_one_error_line(bad_file, 2, "no calibration file")
