"""How the ``idealagent`` command reads: help, --version, the presets list at 80 columns, one
line for an unreachable server (and no half-drawn panel), which round an answer came from, and
the one-line text of a Round and a Trace."""

from __future__ import annotations

import io
import json
import re
import socket
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

import idealagent
import idealagent.presets
from idealagent.cli import app
from idealagent.cli.options import NOTHING_GIVEN, LoopOptions, with_loop_options
from idealagent.console import LiveRun
from idealagent.errors import ServiceDownError
from idealagent.presets import Preset
from idealagent.settings import FIELD_FLAGS, AgentSettings, _setting
from idealagent.testing import IDEALGPT_LOOP, ScriptedAnswerer, ScriptedChatModel
from idealagent.trace import Round, Sample, SubQA, Trace, Verdict
from tests.conftest import sub_questions, verdict
from tests.test_cli import CAT, ENV, Script, assert_one_error_line, invoke, script  # noqa: F401

COMMANDS = ("ask", "chat", "presets", "eval", "report", "bench")


def run(*args: str, columns: int = 120, **env: str | None):
    """Like ``invoke``, with the terminal's width and more environment variables."""
    base = {name: None for name in ENV} | {"NO_COLOR": "1", "FORCE_COLOR": None, "TTY_COMPATIBLE": None,
                                           "COLUMNS": str(columns), "no_proxy": "127.0.0.1"}
    return CliRunner().invoke(app, list(args), env={**base, **env})


def screen(drawn: str) -> list[str]:
    """The lines a terminal shows after ``drawn``: rich's cursor-up and erase-line codes applied."""
    lines, row = [""], 0
    for token in re.split(r"(\x1b\[[0-9;?]*[A-Za-z]|\r|\n)", drawn):
        if token == "\n":
            row += 1
            lines += [""] * (row + 1 - len(lines))
        elif token == "\x1b[1A":
            row = max(0, row - 1)
        elif token == "\x1b[2K":
            lines[row] = ""
        elif token and not token.startswith("\x1b") and token != "\r":
            lines[row] += token
    return [line for line in lines if line.strip()]


# -- help and --version ------------------------------------------------------------------------


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_shows_plain_metavars_and_bare_flags(command: str | None) -> None:
    result = run(*([command] if command else []), "--help")
    assert result.exit_code == 0, result.output
    text = result.stdout
    for python_style in ("<bool>", "<str>", "<int>", "<float>", "<path>", "<list[", "{image}", "{"):
        assert python_style not in text, f"{python_style!r} in the help of {command}"
    assert re.search(r"--help\s+Show this message", text)  # a flag: no metavar between
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    if command == "ask":
        assert usage.rstrip().endswith("[OPTIONS] IMAGE QUESTION")
    if command == "report":
        assert usage.rstrip().endswith("[OPTIONS] RESULTS...")


@pytest.mark.parametrize("command", ["ask", "chat", "eval", "bench"])
def test_loop_options_come_from_the_settings_model(command: str) -> None:
    import typer.main

    params = {opt: param for param in typer.main.get_command(app).commands[command].params for opt in param.opts}
    for name, flag in FIELD_FLAGS.items():
        if command == "bench" and name == "cache":
            assert "--cache" not in params  # bench never reads replies from the cache: it would time nothing
            continue
        flag = flag.split("/")[0]  # --direct-answer/--no-direct-answer
        assert params[flag].help == AgentSettings.model_fields[name].description
        assert params[flag].show_default == "from the preset" and params[flag].default is None
    text = run(command, "--help").stdout
    shown = len(FIELD_FLAGS) - (command == "bench")  # bench has no --cache
    assert text.count("[default: (from the preset)]") >= shown


@pytest.mark.parametrize("command", ["ask", "chat", "eval", "bench"])
def test_every_flag_of_the_settings_is_in_the_help(command: str) -> None:
    text = run(command, "--help", columns=200).stdout
    for name, flag in FIELD_FLAGS.items():
        if command == "bench" and name == "cache":
            continue  # bench never reads the cache (test_loop_options_come_from_the_settings_model)
        assert re.search(rf"{re.escape(flag.split('/')[0])}\s", text), (command, flag)
    # What --calibration takes besides a file; no help names a setting only Python knows.
    assert re.search(r"--calibration\s+FILE\|default\|stated\|tiny\s", text)
    assert "vote_temperature" not in text and "--vote-temperature" in text


class WithZoom(AgentSettings):
    """Settings as a branch might extend them: one new field with a flag."""

    zoom_levels: int = _setting(0, "How many times to zoom in.", flag="--zoom-levels", ge=0)


def test_a_setting_given_a_flag_becomes_an_option_with_no_other_edit() -> None:
    seen: list[dict] = []

    def command(preset: str = "tiny", loop: LoopOptions = NOTHING_GIVEN, verbose: bool = False) -> None:
        seen.append({"preset": preset, **loop})

    one = typer.Typer()
    one.command()(with_loop_options(command, WithZoom))
    result = CliRunner().invoke(one, ["--zoom-levels", "2", "--threshold", "0.5"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert seen == [{"preset": "tiny", "zoom_levels": 2, "confidence_threshold": 0.5}]  # not given: absent
    text = CliRunner().invoke(one, ["--help"], env={"COLUMNS": "200", "NO_COLOR": "1"}).stdout
    assert re.search(r"--zoom-levels\s+N\s+How many times to zoom in\.", text)
    assert all(flag.split("/")[0] in text for flag in FIELD_FLAGS.values())

    def clashing(confidence_threshold: float = 0.5, loop: LoopOptions = NOTHING_GIVEN) -> None:
        pass

    with pytest.raises(TypeError, match="confidence_threshold"):  # two options by one name: our bug
        with_loop_options(clashing)


def test_version_prints_the_package_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout == f"idealagent {idealagent.__version__}\n"


# -- presets at 80 columns -----------------------------------------------------------------------


def test_presets_fit_80_columns_and_keep_each_setting_whole() -> None:
    result = run("presets", columns=80)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= 80
    for name, preset in idealagent.presets.PRESETS.items():
        assert f"{name}  pip install 'idealagent[{preset.extra}]'" in lines, name
        for key, value in preset.settings.items():
            assert f"{key}={value}" in result.stdout  # not broken across lines
        for role, model in preset.models.items():
            assert f"{role}: {model}" in result.stdout
    # Every preset shows every setting some preset sets: tiny's batch size too (the default).
    tiny = result.stdout.split("tiny  pip install")[1]
    assert f"batch_size={AgentSettings().batch_size}" in tiny and "max_rounds=2" in tiny


# -- one line for an unreachable server -------------------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:  # bound and closed: nothing listens there afterwards
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("terminal", [False, True], ids=["pipe", "terminal"])
def test_an_unreachable_server_is_one_error_line(closed_port: int, terminal: bool) -> None:
    pytest.importorskip("langchain_openai")
    result = run("ask", CAT, "What is it?", "--preset", "openai",
                 IDEALAGENT_LLM_BASE_URL=f"http://127.0.0.1:{closed_port}/v1", IDEALAGENT_LLM_MODEL="x",
                 IDEALAGENT_LLM_RETRY_WAIT="0.01", TTY_COMPATIBLE="1" if terminal else None)
    assert result.exit_code == 1
    # On a terminal the loading spinner and the live view draw and then erase themselves.
    errors = screen(result.stderr)
    assert len(errors) == 1 and errors[0].startswith("error: ") and f"127.0.0.1:{closed_port}" in errors[0]
    assert "no answer" not in errors[0] and "Traceback" not in result.stderr
    assert screen(result.stdout) == []  # no result panel


def test_a_service_going_down_mid_round_leaves_no_half_drawn_panel() -> None:
    def down(question: str) -> str:
        raise ServiceDownError("VLM endpoint down")

    llm = ScriptedChatModel(replies=[sub_questions("What animal is it?")])
    preset = Preset("down", "", lambda: {"llm": llm, "answerer": ScriptedAnswerer(down)}, IDEALGPT_LOOP)
    idealagent.presets.PRESETS["down"] = preset
    try:
        agent = idealagent.presets.load_preset("down")
    finally:
        del idealagent.presets.PRESETS["down"]
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=80)
    with pytest.raises(ServiceDownError):
        LiveRun(console, agent.confidence_threshold).run(agent, CAT, "What animal is this?")
    assert "Round 1" in buffer.getvalue()  # the round was drawn while it ran...
    assert screen(buffer.getvalue()) == []  # ...and is gone from the screen


# -- the result panel --------------------------------------------------------------------------------


def test_an_answer_kept_from_an_earlier_round_says_so(script: Script) -> None:
    script.replies = [sub_questions("What animal is it?"), verdict("cat", 0.6, "Maybe a cat."),
                      sub_questions("Does it bark?"), verdict("dog", 0.3, "Forced guess.")]
    result = invoke("ask", CAT, "What animal is this?", "--preset", "scripted")
    assert result.exit_code == 0, result.output
    panel = result.stdout[result.stdout.index("Result"):].splitlines()
    answer = next(line for line in panel if "answer  " in line)
    assert "cat" in answer and "(from round 1)" in answer


def test_the_last_rounds_answer_names_no_round_and_counts_agree(script: Script) -> None:
    script.replies = [sub_questions("What animal is it?"), verdict("cat", 0.9)]
    result = invoke("ask", CAT, "What animal is this?", "--preset", "scripted")
    assert result.exit_code == 0, result.output
    assert "cat" in result.stdout and "from round" not in result.stdout
    assert "1 (1 sub-question)" in result.stdout and "1 answer" in result.stdout
    assert "1 answers" not in result.stdout and "1 sub-questions" not in result.stdout


@pytest.mark.parametrize("kind", ["yes_no", "entailment"])
def test_fixed_label_kinds_refuse_choices(script: Script, kind: str) -> None:
    result = invoke("ask", CAT, "Is it a cat?", "--preset", "scripted", "--kind", kind, "-c", "a", "-c", "b")
    assert_one_error_line(result, 2, f"--kind {kind}", "--choice")
    assert script.llms == []


# -- Round and Trace as text ----------------------------------------------------------------------


def test_round_and_trace_print_as_one_readable_line() -> None:
    judged = Round(index=1, sub_qas=[SubQA(question="What?", answer="a cat"), SubQA(question="Colour?")],
                   verdict=Verdict(analysis="A cat.", answer="cat", confidence=0.9))
    assert str(judged) == "Round 1: 2 sub-questions; verdict 'cat' at 0.90"
    forced = Round(index=2, sub_qas=[SubQA(question="Fur?")], forced=True,
                   verdict=Verdict(analysis="?", answer=None, confidence=0.2))
    assert str(forced) == "Round 2 (final): 1 sub-question; undecided"  # no candidate: no confidence to show
    assert str(Round(index=3)) == "Round 3: 0 sub-questions, 0 answered; not judged yet"
    trace = Trace(sample=Sample(question="What animal?"), rounds=[judged], answer="cat", confidence=0.9,
                  stop_reason="confident")
    assert str(trace) == "'What animal?' → 'cat' at 0.90 after 1 round; confident"
    assert "no answer after 0 rounds; running" in str(Trace(sample=Sample(question="Q?")))
    unjudged = Trace(sample=Sample(question="What animal?"), rounds=[judged, Round(index=2)], answer="cat",
                     answer_source="round", answer_round=1, confidence=0.9, stop_reason="questioner_failed")
    assert str(unjudged) == "'What animal?' → 'cat' at 0.90 (from round 1) after 1 round; questioner_failed"


def test_summary_json_records_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import eval_fake_preset
    from tests.test_eval_runner import write_fixture

    monkeypatch.setitem(idealagent.presets.PRESETS, eval_fake_preset.NAME, eval_fake_preset.PRESET)
    data, out = write_fixture(tmp_path / "data", n=6), tmp_path / "r.jsonl"
    ran = invoke("eval", "jsonl", "--data", str(data), "--out", str(out), "--preset", "fake-eval", "--limit", "4")
    assert ran.exit_code == 0, ran.output
    report = invoke("report", str(out), "--json")
    assert report.exit_code == 0, report.output
    assert json.loads(report.stdout)["limit"] == 4
    assert json.loads((tmp_path / "r.report" / "summary.json").read_text())["limit"] == 4


def test_loading_weights_prints_no_progress_bar(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("transformers")
    from transformers.utils import logging as hf_logging

    from idealagent.llms.local import LocalChatModel
    from tests.tiny_models import make_tiny_llama

    folder = make_tiny_llama(tmp_path / "llama")
    hf_logging.enable_progress_bar()  # as in a notebook, where nothing turned it off
    capfd.readouterr()
    LocalChatModel.from_pretrained(folder)
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # put back as it was


def test_cli_modules_import_downwards_only() -> None:
    # __init__ assembles the app from ask and evaluation; they share common and options, which
    # import no other CLI module; nothing imports the package back.
    import ast

    import idealagent.cli

    folder = Path(idealagent.cli.__file__).parent
    imports = {path.stem: {node.module.removeprefix("idealagent.cli.") for node in ast.walk(ast.parse(path.read_text()))
                           if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("idealagent.cli.")}
               for path in folder.glob("*.py") if path.stem != "__main__"}
    assert imports["common"] == imports["options"] == set()
    assert imports["ask"] <= {"common", "options"} and imports["evaluation"] <= {"common", "options"}
    assert "idealagent.cli" not in {node.module for path in folder.glob("*.py") if path.stem != "__main__"
                                    for node in ast.walk(ast.parse(path.read_text()))
                                    if isinstance(node, ast.ImportFrom)}
