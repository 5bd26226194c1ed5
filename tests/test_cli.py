"""The ``idealagent`` command, run in-process against a scripted preset.

Click ≥ 8.2's CliRunner always keeps stdout and stderr apart (``result.stdout`` /
``result.stderr``; ``result.output`` is both), so tests can check that ``--json`` writes
nothing but the trace and that every error is one line on stderr.
"""

from __future__ import annotations

import gc
import io
import json
import os
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import idealagent.presets
from idealagent.cli import app
from idealagent.console import LiveRun
from idealagent.examples import example_image
from idealagent.presets import Preset
from idealagent.testing import IDEALGPT_LOOP, ScriptedAnswerer, ScriptedChatModel
from idealagent.trace import Trace
from tests.conftest import sub_questions, verdict

CAT = str(example_image("cat"))
# Variables the CLI sets with setdefault; listing them makes CliRunner restore them afterwards.
# The rest keep rich from colouring or narrowing the captured output.
ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS",
       "TRANSFORMERS_NO_ADVISORY_WARNINGS", "TQDM_DISABLE")


class Script:
    """The scripted preset's replies, and the models it built (so tests can inspect calls)."""

    def __init__(self) -> None:
        self.replies: list[str] = []
        self.llms: list[ScriptedChatModel] = []
        self.answerers: list[ScriptedAnswerer] = []
        self.answer = lambda question: "a tabby cat" if "animal" in question else "grey"

    def build(self) -> dict:
        llm = ScriptedChatModel(replies=list(self.replies))
        answerer = ScriptedAnswerer(self.answer)
        self.llms.append(llm)
        self.answerers.append(answerer)
        return {"llm": llm, "answerer": answerer}


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Script:
    script = Script()
    script.replies = [sub_questions("What animal is it?", "What colour is it?"),
                      verdict("cat", 0.9, "A cat.")]
    preset = Preset("scripted", "Scripted replies for tests.", script.build, {"max_rounds": 2, **IDEALGPT_LOOP})
    monkeypatch.setitem(idealagent.presets.PRESETS, "scripted", preset)
    return script


def invoke(*args: str, input: str | None = None):
    env = {name: os.environ.get(name) for name in ENV}
    env.update({"NO_COLOR": "1", "FORCE_COLOR": None, "TTY_COMPATIBLE": None, "COLUMNS": "120",
                "no_proxy": "127.0.0.1"})  # the unreachable-URL test must not go through a proxy
    return CliRunner().invoke(app, list(args), input=input, env=env)


def assert_one_error_line(result, exit_code: int, *fragments: str) -> str:
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


# -- ask ---------------------------------------------------------------------------------------


def test_json_writes_only_the_trace_to_stdout(script: Script) -> None:
    result = invoke("ask", CAT, "What animal is this?", "--preset", "scripted", "--json")
    assert result.exit_code == 0, result.output
    trace = Trace.from_json(result.stdout)  # the whole of stdout parses: nothing else is there
    assert result.stdout.lstrip().startswith("{") and result.stdout.rstrip().endswith("}")
    assert len(trace.rounds) >= 1 and len(trace.sub_questions) >= 1
    assert trace.answer == "cat" and 0.0 <= trace.confidence <= 1.0
    assert trace.stop_reason == "confident"
    assert trace.sample.image == CAT  # the path as given, not a placeholder for pixels
    assert trace.rounds[0].sub_qas[0].answer == "a tabby cat"
    assert result.stderr == ""  # not a terminal: no progress drawn


def test_structured_off_parses_plain_text_and_is_recorded(script: Script) -> None:
    result = invoke("ask", CAT, "What animal is this?", "--preset", "scripted", "--json", "--structured", "off")
    assert result.exit_code == 0, result.output
    trace = Trace.from_json(result.stdout)
    assert trace.settings["structured"] == "off" and trace.answer == "cat"


def test_rendered_output_shows_rounds_answer_and_confidence(script: Script) -> None:
    result = invoke("ask", CAT, "What animal is this?", "--preset", "scripted")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in ("What animal is it?", "a tabby cat", "What colour is it?", "grey", "A cat.", "0.90",
                 "Round 1", "confident"):
        assert text in out
    assert result.stderr == ""


def test_each_round_is_printed_once_when_not_a_terminal(script: Script) -> None:
    script.replies = [sub_questions("What animal is it?"), verdict("dog", 0.3, "Unclear."),
                      sub_questions("Does it have whiskers?"), verdict("cat", 0.6, "Whiskers.")]
    result = invoke("ask", CAT, "What animal is this?", "--preset", "scripted")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("Round 1") == 1 and result.stdout.count("Round 2 · final round") == 1
    assert result.stdout.count("Does it have whiskers?") == 1
    assert "reached the last round" in result.stdout


def test_loop_options_reach_the_agent(script: Script) -> None:
    script.replies = [sub_questions("What animal is it?"), verdict("cat", 0.9)]
    result = invoke("ask", CAT, "What animal is this?", "--preset", "scripted", "--json",
                    "--max-rounds", "1", "--threshold", "0.95", "--max-sub-questions", "1")
    trace = Trace.from_json(result.stdout)
    # 0.9 < 0.95, but round 1 of 1 is final: the agent stops there with the forced answer.
    assert trace.stop_reason == "max_rounds" and trace.rounds[0].forced
    assert "Ask 1 to 1 sub-questions" in script.llms[0].calls[0][0].content


def test_choices_make_a_multiple_choice_question(script: Script) -> None:
    script.replies = [sub_questions("What animal is it?"), verdict("A", 0.8)]
    result = invoke("ask", CAT, "Which animal?", "--preset", "scripted", "--json", "-c", "cat", "-c", "dog")
    trace = Trace.from_json(result.stdout)
    assert trace.sample.kind == "multiple_choice" and trace.sample.choices == ["cat", "dog"]
    assert trace.answer == "cat"


def test_no_answer_exits_1_but_still_prints_the_trace(script: Script) -> None:
    script.replies = ["no idea"] * 3  # the questioner never gives usable sub-questions
    result = invoke("ask", CAT, "What animal is this?", "--preset", "scripted", "--json")
    assert_one_error_line(result, 1, "no answer", "questioner")
    assert Trace.from_json(result.stdout).stop_reason == "questioner_failed"


def test_a_failing_answerer_is_logged_in_one_line_and_exits_1(script: Script) -> None:
    def broken(question: str) -> str:
        raise RuntimeError("the vision model fell over")

    script.answer = broken
    result = invoke("ask", CAT, "What animal is this?", "--preset", "scripted", "--json")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    warning, error = result.stderr.strip().splitlines()
    assert warning.startswith("warning: answerer failed") and "fell over" in warning
    assert error.startswith("error: no answer") and "fell over" in error
    trace = Trace.from_json(result.stdout)
    assert trace.stop_reason == "answerer_failed" and "fell over" in trace.error


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["   "], ["question is empty"]),
        (["Which?", "--choice", "cat"], ["at least 2"]),
        # The flag the user typed, not the setting's name in Python.
        (["Which?", "--threshold", "2"], ["error: --threshold: input should be less than or equal to 1, got 2"]),
        (["Which?", "--max-rounds", "0"], ["error: --max-rounds: input should be greater than or equal to 1"]),
        (["Which?", "--max-sub-questions", "9"], ["error: --max-sub-questions: "]),
        (["Which?", "--vote-temperature", "0"], ["error: --vote-temperature: input should be greater than 0"]),
        (["Which?", "--calibration", "nofile"], ["error: --calibration: no calibration file nofile", "stated"]),
        (["Which?", "--preset", "huge"], ["huge", "scripted", "tiny"]),
        (["Which?", "--kind", "essay"], ["essay", "open", "multiple_choice", "yes_no", "entailment"]),
        (["Which?", "--kind", "open", "-c", "a", "-c", "b"], ["no choices"]),
        (["Which?", "--structured", "maybe"], ["--structured: ", "'auto', 'on' or 'off'", "'maybe'"]),
    ],
)
def test_bad_arguments_exit_2_before_any_model_loads(script: Script, args, fragments) -> None:
    preset = [] if "--preset" in args else ["--preset", "scripted"]
    result = invoke("ask", CAT, *args, *preset)
    assert_one_error_line(result, 2, *fragments)
    assert script.llms == []


def test_argument_errors_come_before_image_errors(script: Script) -> None:
    # Both are wrong; the argument error is found first, without touching the disk.
    result = invoke("ask", "missing.jpg", "", "--preset", "scripted")
    assert_one_error_line(result, 2, "question is empty")


def make_text_jpg(tmp_path: Path) -> str:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    return str(path)


def make_truncated_jpg(tmp_path: Path) -> str:
    path = tmp_path / "truncated.jpg"
    data = Path(CAT).read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return str(path)


@pytest.mark.parametrize(
    ("make_image", "fragment"),
    [
        (lambda tmp: str(tmp / "missing.jpg"), "no such file"),
        (lambda tmp: str(tmp), "directory"),
        (make_text_jpg, "not a readable image"),
        (make_truncated_jpg, "not a readable image"),
        (lambda tmp: "http://127.0.0.1:9/x.jpg", "unreachable"),
    ],
    ids=["missing", "directory", "text-file", "truncated-jpeg", "unreachable-url"],
)
def test_image_problems_exit_1_before_any_model_loads(script: Script, tmp_path, make_image, fragment) -> None:
    result = invoke("ask", make_image(tmp_path), "What is it?", "--preset", "scripted")
    assert_one_error_line(result, 1, fragment)
    assert script.llms == []


def test_model_load_errors_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    from idealagent.errors import ModelLoadError

    def build():
        raise ModelLoadError("the weights are missing: pip install something")

    def build_without_package():
        import idealagent_no_such_package  # noqa: F401

    monkeypatch.setitem(idealagent.presets.PRESETS, "broken", Preset("broken", "", build))
    monkeypatch.setitem(idealagent.presets.PRESETS, "nopkg", Preset("nopkg", "", build_without_package))
    assert_one_error_line(invoke("ask", CAT, "What?", "--preset", "broken"), 1, "weights are missing")
    assert_one_error_line(invoke("ask", CAT, "What?", "--preset", "nopkg"), 1, "idealagent_no_such_package")


def test_debug_shows_the_traceback(script: Script) -> None:
    result = invoke("ask", str(Path("missing.jpg")), "What?", "--preset", "scripted", "--debug")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_usage_errors_keep_click_exit_code_2() -> None:
    assert invoke("ask", CAT).exit_code == 2  # the question is missing
    assert invoke("ask", CAT, "What?", "--max-rounds", "many").exit_code == 2


def test_models_load_without_the_collector_and_stay_frozen_until_the_command_ends(
        script: Script, monkeypatch: pytest.MonkeyPatch) -> None:
    """load_agent loads with the garbage collector off, then freezes what is alive, so later
    collections skip the models' objects; when the command ends the collector has them back."""
    seen: dict[str, object] = {}

    def build() -> dict:
        seen["collecting while loading"] = gc.isenabled()
        return script.build()

    def answer(question: str) -> str:
        seen["frozen while running"] = gc.get_freeze_count() > 0
        return "a tabby cat"

    script.answer = answer
    monkeypatch.setitem(idealagent.presets.PRESETS, "scripted",
                        Preset("scripted", "Scripted.", build, {"max_rounds": 2, **IDEALGPT_LOOP}))
    assert gc.get_freeze_count() == 0
    result = invoke("ask", CAT, "What animal is this?", "--preset", "scripted", "--json")
    assert result.exit_code == 0, result.output
    assert seen == {"collecting while loading": False, "frozen while running": True}
    assert gc.isenabled() and gc.get_freeze_count() == 0


# -- chat --------------------------------------------------------------------------------------


def test_chat_answers_piped_questions_and_survives_a_bad_image(script: Script) -> None:
    script.replies = [
        sub_questions("What animal is it?"), verdict("cat", 0.9, "It is a cat."),
        sub_questions("What colour is it?"), verdict("grey", 0.8, "It looks grey."),
    ]
    lines = ["What animal is this?", "/trace", "/image missing.jpg", "What colour is the cat?", "/trace json",
             "/quit", "Never asked?"]
    result = invoke("chat", CAT, "--preset", "scripted", input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "What animal is it?" in out and "a tabby cat" in out and "cat" in out
    assert "What colour is it?" in out and "grey" in out and "0.80" in out
    assert "caption" in out and "a test image" in out  # /trace showed the full trace
    assert_one_error_line(result, 0, "missing.jpg", "no such file")  # /image failed; the session went on
    # The models loaded once, and /quit stopped reading: "Never asked?" was not sent.
    assert len(script.llms) == 1 and len(script.llms[0].calls) == 4
    last = json.loads(out[out.index("{"):out.rindex("}") + 1])
    assert last["sample"]["question"] == "What colour is the cat?" and last["sample"]["image"] == CAT


def test_chat_choices_apply_to_the_next_question_only(script: Script) -> None:
    script.replies = [sub_questions("What animal is it?"), verdict("B", 0.9),
                      sub_questions("What animal is it?"), verdict("cat", 0.9)]
    lines = ["/choices dog | cat", "Which animal?", "What is it?", "/trace json"]
    result = invoke("chat", CAT, "--preset", "scripted", input="\n".join(lines))  # EOF ends the session
    assert result.exit_code == 0, result.output
    first, second = (calls[-1].content for calls in (script.llms[0].calls[0], script.llms[0].calls[2]))
    assert "dog" in first and "dog" not in second
    last = json.loads(result.stdout[result.stdout.index("{"):result.stdout.rindex("}") + 1])
    assert last["sample"]["kind"] == "open" and last["answer"] == "cat"


def test_chat_bad_question_and_unknown_command_are_one_line_errors(script: Script) -> None:
    lines = ["/choices onlyone", "Which animal?", "/frobnicate", "/help", "/trace"]
    result = invoke("chat", CAT, "--preset", "scripted", input="\n".join(lines))
    assert result.exit_code == 0
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors)
    assert "at least 2" in errors[0] and "/frobnicate" in errors[1] and "no trace yet" in errors[2]
    assert "/image PATH" in result.stdout  # the help
    assert script.llms[0].calls == []


def test_chat_checks_its_image_before_loading(script: Script) -> None:
    result = invoke("chat", "missing.jpg", "--preset", "scripted", input="/quit\n")
    assert_one_error_line(result, 1, "no such file")
    assert script.llms == []


# -- presets and the live view ------------------------------------------------------------------


def test_presets_lists_names_and_descriptions(script: Script) -> None:
    result = invoke("presets")
    assert result.exit_code == 0
    assert "tiny" in result.stdout and "SmolLM2" in result.stdout
    assert "scripted" in result.stdout and "Scripted replies for tests." in result.stdout


def test_live_run_on_a_terminal_returns_the_trace_and_keeps_finished_rounds(script: Script) -> None:
    script.replies = [sub_questions("What animal is it?"), verdict("dog", 0.3),
                      sub_questions("Does it have whiskers?"), verdict("cat", 0.8)]
    agent = idealagent.presets.load_preset("scripted")
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100)
    trace = LiveRun(console, agent.confidence_threshold).run(agent, CAT, "What animal is this?")
    assert trace.answer == "cat" and len(trace.rounds) == 2
    assert "Does it have whiskers?" in buffer.getvalue() and "Round 2" in buffer.getvalue()
