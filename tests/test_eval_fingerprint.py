"""What makes two runs comparable: the results fingerprint on resume and on merge, end to end.

The openai preset's served model names come from the environment; the stub server
(tests/openai_stub.py, on 127.0.0.1) answers every role, so the runs are real CLI runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import idealagent
from idealagent.evaluation.results import prompts_sha256
from tests.openai_stub import StubServer
from tests.test_cli import assert_one_error_line, invoke
from tests.test_eval_cli import Builds, builds  # noqa: F401  (the fixture)
from tests.test_eval_runner import read_lines, write_fixture
from tests.test_openai_backends import scripted_endpoint


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """One stub server for every role of the openai preset, its model named by IDEALAGENT_LLM_MODEL."""
    with StubServer() as stub:
        stub.reply = scripted_endpoint
        monkeypatch.setenv("IDEALAGENT_LLM_BASE_URL", stub.base_url)
        monkeypatch.setenv("IDEALAGENT_LLM_MODEL", "model-a")
        for name in ("IDEALAGENT_VLM_BASE_URL", "IDEALAGENT_VLM_MODEL"):
            monkeypatch.delenv(name, raising=False)
        yield monkeypatch


def run_openai(data: Path, out: Path, *extra: str):
    return invoke("eval", "jsonl", "--data", str(data), "--preset", "openai", "--out", str(out), *extra)


def test_the_header_records_the_served_models_prompts_version_and_metric(served, tmp_path: Path) -> None:
    data, out = write_fixture(tmp_path / "data", n=2), tmp_path / "r.jsonl"
    served.setenv("IDEALAGENT_VLM_MODEL", "model-v")
    assert run_openai(data, out).exit_code == 0
    header, rows = read_lines(out)
    assert header["settings"]["models"] == {"llm": "model-a", "vlm": "model-v"}
    assert header["prompts_sha256"] == prompts_sha256() and len(header["prompts_sha256"]) == 16
    assert header["idealagent_version"] == idealagent.__version__
    assert header["vqa_metric"] == "vqa2021"
    # The trace records the same names: what was run, not only what was planned.
    assert all(row["trace"]["settings"]["models"] == {"llm": "model-a", "vlm": "model-v"} for row in rows)


def test_resuming_with_another_served_model_is_refused_unless_forced(served, tmp_path: Path) -> None:
    data, out = write_fixture(tmp_path / "data", n=4), tmp_path / "r.jsonl"
    assert run_openai(data, out).exit_code == 0
    served.setenv("IDEALAGENT_LLM_MODEL", "model-b")  # the VLM borrows it too
    refused = run_openai(data, out)
    assert_one_error_line(refused, 2, str(out), "another configuration", "settings.models.llm",
                          "settings.models.vlm", '"model-a" in the file, "model-b" now', "--force")
    assert len(read_lines(out)[1]) == 4  # untouched
    forced = run_openai(data, out, "--force")
    assert forced.exit_code == 0, forced.output
    header, rows = read_lines(out)
    assert header["settings"]["models"] == {"llm": "model-b", "vlm": "model-b"} and len(rows) == 4


def test_only_the_served_vlm_changing_is_named_alone(served, tmp_path: Path) -> None:
    data, out = write_fixture(tmp_path / "data", n=2), tmp_path / "r.jsonl"
    assert run_openai(data, out).exit_code == 0
    served.setenv("IDEALAGENT_VLM_MODEL", "model-v")
    line = assert_one_error_line(run_openai(data, out), 2,
                                 'settings.models.vlm: "model-a" in the file, "model-v" now')
    assert "settings.models.llm" not in line


def test_an_openai_run_without_its_variables_fails_before_writing(tmp_path: Path, monkeypatch) -> None:
    for name in ("IDEALAGENT_LLM_BASE_URL", "IDEALAGENT_LLM_MODEL", "IDEALAGENT_VLM_BASE_URL",
                 "IDEALAGENT_VLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    data, out = write_fixture(tmp_path / "data", n=2), tmp_path / "r.jsonl"
    assert_one_error_line(run_openai(data, out), 2, "IDEALAGENT_VLM_BASE_URL")
    assert not out.exists()


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda h: h.update(prompts_sha256="0" * 16), '"0000000000000000" in the file'),
        (lambda h: h.update(idealagent_version="0.0.1"), 'idealagent_version: "0.0.1" in the file'),
        # A file from before these fields: scored with the old VQA processing, prompts unknown.
        (lambda h: [h.pop(k) for k in ("vqa_metric", "prompts_sha256", "idealagent_version")],
         'vqa_metric: "vqa-legacy" in the file, "vqa2021" now'),
    ],
)
def test_a_file_from_other_prompts_or_another_version_is_not_resumed(
    tmp_path: Path, builds: Builds, edit, named: str  # noqa: F811
) -> None:
    data, out = write_fixture(tmp_path / "data", n=3), tmp_path / "r.jsonl"
    args = ("eval", "jsonl", "--data", str(data), "--out", str(out), "--preset", "fake-eval")
    assert invoke(*args).exit_code == 0
    lines = out.read_text().splitlines()
    header = json.loads(lines[0])["header"]
    edit(header)
    out.write_text("\n".join([json.dumps({"header": header}), *lines[1:]]) + "\n")
    assert_one_error_line(invoke(*args), 2, named, "--force")
    assert builds.count == 1


def test_prompts_sha256_changes_with_any_prompt_file(tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "questioner.yaml").write_text("user: '{{ question }}'\n")
    (folder / "reasoner.yaml").write_text("user: 'judge'\n")
    first = prompts_sha256(folder)
    assert prompts_sha256(folder) == first
    (folder / "reasoner.yaml").write_text("user: 'judge!'\n")
    assert prompts_sha256(folder) != first
    (folder / "reasoner.yaml").write_text("user: 'judge'\n")
    (folder / "notes.txt").write_text("not a prompt")
    assert prompts_sha256(folder) == first  # only the prompt files count


def write_vqa_fixture(folder: Path) -> Path:
    """Two VQA-scored items whose human answers differ only in case from the fake's "red"."""
    folder = write_fixture(folder, n=1)
    lines = [json.dumps({"id": f"v{n}", "image": "img0.png", "question": f"What colour is item {n}?",
                         "answers": ["Red", "Red", "Red", "no"], "question_type": "colour"}) for n in (2, 4)]
    (folder / "test.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_vqa_metric_option_scores_and_is_recorded(tmp_path: Path, builds: Builds) -> None:  # noqa: F811
    data = write_vqa_fixture(tmp_path / "data")
    official, legacy = tmp_path / "official.jsonl", tmp_path / "legacy.jsonl"
    base = ("eval", "jsonl", "--data", str(data), "--preset", "fake-eval", "--out")
    assert invoke(*base, str(official)).exit_code == 0
    assert invoke(*base, str(legacy), "--vqa-metric", "vqa-legacy").exit_code == 0
    # "red" against Red, Red, Red, no: since 2021 all are normalised, 3 of 4 match: (3 x 2/3 + 1) / 4.
    header, rows = read_lines(official)
    assert header["vqa_metric"] == "vqa2021"
    assert [(r["metric"], r["score"], r["baseline"]["score"]) for r in rows] == [("vqa", 0.75, 0.75)] * 2
    # The legacy code leaves the humans' case alone: no match.
    header, rows = read_lines(legacy)
    assert header["vqa_metric"] == "vqa-legacy"
    assert [(r["score"], r["baseline"]["score"]) for r in rows] == [(0.0, 0.0)] * 2
    # Resuming under the other metric is refused; an unknown one fails before anything runs.
    assert_one_error_line(invoke(*base, str(legacy)), 2,
                          'vqa_metric: "vqa-legacy" in the file, "vqa2021" now')
    assert_one_error_line(invoke(*base, str(tmp_path / "x.jsonl"), "--vqa-metric", "lmms"), 2,
                          "unknown VQA metric 'lmms'", "vqa2021, vqa-legacy")
    assert not (tmp_path / "x.jsonl").exists() and builds.count == 2

    # The report refuses to merge the two, in one line, unless forced; it shows what it merged.
    merged = invoke("report", str(official), str(legacy), "--out-dir", str(tmp_path / "merged"))
    assert_one_error_line(merged, 2, "different run", 'vqa_metric: "vqa2021" in official.jsonl, '
                          '"vqa-legacy" in legacy.jsonl', "--force")
    forced = invoke("report", str(official), str(legacy), "--json", "--force",
                    "--out-dir", str(tmp_path / "m"))
    assert forced.exit_code == 0, forced.output
    summary = json.loads(forced.stdout)
    # The ids repeat, so the first file's rows and header are the merge.
    assert summary["overall"]["n"] == 2 and summary["vqa_metric"] == "vqa2021"
    assert any("merged anyway (--force)" in warning for warning in summary["warnings"])


def test_the_report_shows_the_fingerprint_fields(served, tmp_path: Path) -> None:
    data, out = write_fixture(tmp_path / "data", n=2), tmp_path / "r.jsonl"
    assert run_openai(data, out, "--vqa-metric", "vqa-legacy").exit_code == 0
    table = invoke("report", str(out))
    assert table.exit_code == 0, table.output
    text = " ".join(table.stdout.split())  # the line may wrap
    assert (f"models llm model-a, vlm model-a · calibration default · prompts {prompts_sha256()} · "
            f"idealagent {idealagent.__version__} · VQA metric vqa-legacy") in text
    summary = json.loads((tmp_path / "r.report" / "summary.json").read_text())
    assert summary["models"] == {"llm": "model-a", "vlm": "model-a"}
    assert summary["vqa_metric"] == "vqa-legacy" and summary["prompts_sha256"] == prompts_sha256()
    assert summary["idealagent_version"] == idealagent.__version__
