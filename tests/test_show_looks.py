"""Seeing where the agent looked: ``draw_looks``, the console's look lines, and ``--show-looks``
of ``ask`` and ``report``.

The pictures are those of test_looking_loop.py: large and white with one small red square,
and an answerer that sees only the pixels of the view it is given.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

import idealagent.presets
from idealagent.capabilities import Capabilities
from idealagent.console import LiveRun, print_trace, result_panel
from idealagent.console_looks import look_line, looks_summary
from idealagent.looking.draw import BEST_COLOUR, FAILED_COLOUR, LOOK_COLOUR, draw_looks, no_look_reason
from idealagent.presets import Preset
from idealagent.testing import ScriptedChatModel
from idealagent.trace import Look, Sample, Search, Trace
from tests.test_cli import assert_one_error_line, invoke
from tests.test_looking_loop import QUESTIONS, VERDICT, SeeingAnswerer, agent_for, picture_file

QUESTION = "What color is the small square?"


def search_of(*looks: Look, best: list[int] | None = None) -> Search:
    return Search(mode="quadtree", target="small square", size=[400, 300], looks=list(looks), best=best)


# -- draw_looks ------------------------------------------------------------------------------------


def test_draw_looks_draws_each_box_scaled_to_the_image_and_the_best_in_its_colour():
    search = search_of(
        Look(box=[0, 0, 200, 150], kind="exists", question="Is there...?", reply="no", p_yes=0.1),
        Look(box=[200, 150, 400, 300], kind="exists", question="Is there...?", error="ValueError: broken"),
        Look(box=[240, 180, 340, 280], kind="answer", question=QUESTION, reply="red"),
        best=[240, 180, 340, 280])
    image = Image.new("RGB", (200, 150), "white")  # half the size the boxes are in
    drawn = draw_looks(image, search)
    assert drawn.size == (200, 150) and image.getpixel((0, 99)) == (255, 255, 255)  # the input is untouched
    # Look 1: [0, 0, 100, 75] here; its edges amber, its inside white.
    assert drawn.getpixel((0, 60)) == LOOK_COLOUR and drawn.getpixel((99, 60)) == LOOK_COLOUR
    assert drawn.getpixel((60, 74)) == LOOK_COLOUR and drawn.getpixel((60, 40)) == (255, 255, 255)
    # Look 2 failed: grey at [100, 75, 200, 150]; the best view, [120, 90, 170, 140], in cyan inside it.
    assert drawn.getpixel((199, 120)) == FAILED_COLOUR and drawn.getpixel((150, 149)) == FAILED_COLOUR
    assert drawn.getpixel((169, 120)) == BEST_COLOUR and drawn.getpixel((150, 139)) == BEST_COLOUR
    assert drawn.getpixel((145, 115)) == (255, 255, 255)
    # Each look is numbered at its box's upper left corner: a label in the box's colour with dark text.
    for corner, colour in (((0, 0), LOOK_COLOUR), ((100, 75), FAILED_COLOUR), ((120, 90), BEST_COLOUR)):
        label = drawn.crop((corner[0], corner[1], corner[0] + 12, corner[1] + 14))
        colours = {pixel for pixel in label.getdata()}
        assert colour in colours and any(sum(pixel) < 200 for pixel in colours), corner


def test_looks_at_one_place_get_their_numbers_side_by_side():
    box = [100, 100, 300, 250]

    def label_row(*looks: Look) -> list[tuple[int, int, int]]:
        drawn = draw_looks(Image.new("RGB", (400, 300), "white"), search_of(*looks))
        return [drawn.getpixel((x, 103)) for x in range(103, 200)]  # inside the box's edge, through the labels

    once = label_row(Look(box=box, kind="exists", question="Q?", reply="yes", p_yes=0.9))
    twice = label_row(Look(box=box, kind="exists", question="Q?", reply="yes", p_yes=0.9),
                      Look(box=box, kind="exists", question="Q?", reply="yes", p_yes=0.8))
    assert once.count(LOOK_COLOUR) > 3 and twice.count(LOOK_COLOUR) > once.count(LOOK_COLOUR) + 3


# -- the console -----------------------------------------------------------------------------------


def test_look_lines_say_where_what_was_asked_and_the_reply():
    exists = Look(box=[0, 0, 10, 10], kind="exists", question="Q?", reply="yes", p_yes=0.95,
                  where="lower right, about a tenth of the width")
    assert look_line(3, exists).plain == "look 3 · lower right, about a tenth of the width · exists? yes (p 0.95)"
    answer = Look(box=[0, 0, 10, 10], kind="answer", question=QUESTION, reply="Red.", probability=0.6, where="x")
    assert look_line(4, answer).plain == "look 4 · x · answer: Red. (p 0.60)"
    failed = Look(box=[0, 0, 10, 10], kind="describe", question="Q?", error="ValueError: no", where="x")
    assert look_line(1, failed).plain == "look 1 · x · describe: failed: ValueError: no"


def test_live_run_prints_each_look_and_the_result_sums_the_search_up(tmp_path):
    agent, _ = agent_for(SeeingAnswerer(Capabilities(logprobs=True)), look_budget=9)
    buffer = io.StringIO()
    console = Console(file=buffer, width=120, no_color=True)
    trace = LiveRun(console, agent.confidence_threshold).run(agent, picture_file(tmp_path), QUESTION)
    search = trace.search
    lines = [line for line in buffer.getvalue().splitlines() if line.startswith("look ")]
    assert len(lines) == search.calls and lines[0].startswith("look 1 · ")
    assert lines[-1].startswith(f"look {search.calls} · lower right") and "answer: red" in lines[-1]
    summary = looks_summary(search)
    assert summary.startswith(f"{search.calls} looks (quadtree), best view at lower right")
    console.print(result_panel(trace, agent.confidence_threshold))
    assert "looked closer" in buffer.getvalue() and summary in buffer.getvalue()
    print_trace(console, trace, agent.confidence_threshold)
    assert "Looked closer for the small square" in buffer.getvalue()


def test_no_look_reason_reads_the_trace():
    def trace(**fields):
        return Trace(sample=Sample(question=QUESTION), **fields)

    assert "--zoom off" in no_look_reason(trace(settings={"zoom": "off"}))
    assert "--no-direct-answer" in no_look_reason(trace(settings={"zoom": "auto", "direct_answer": False}))
    assert "confident enough" in no_look_reason(trace(settings={"zoom": "auto"}, answer="red",
                                                      answer_source="direct", stop_reason="confident"))
    small = no_look_reason(trace(settings={"zoom": "auto"}, stop_reason="max_rounds"), (640, 480), 224)
    assert "not 4 times larger" in small and "640x480" in small


# -- ask --show-looks ------------------------------------------------------------------------------


@pytest.fixture
def seeing(monkeypatch: pytest.MonkeyPatch) -> str:
    """A preset whose answerer sees only its view (and gives probabilities, so zoom=auto searches)."""
    def build() -> dict:
        return {"llm": ScriptedChatModel(replies=[QUESTIONS, VERDICT] * 4),
                "answerer": SeeingAnswerer(Capabilities(logprobs=True))}

    preset = Preset("seeing", "A scripted answerer that sees its view.", build,
                    {"max_rounds": 1, "calibration": "stated"})
    monkeypatch.setitem(idealagent.presets.PRESETS, "seeing", preset)
    return "seeing"


def test_ask_show_looks_draws_the_search_on_the_picture(seeing, tmp_path):
    out = tmp_path / "looks.png"
    result = invoke("ask", picture_file(tmp_path), QUESTION, "--preset", seeing, "--show-looks", str(out))
    assert result.exit_code == 0, result.output
    assert "look 1 · " in result.stdout and "looked closer" in result.stdout
    assert f"wrote {out}: " in result.stdout
    drawn = Image.open(out).convert("RGB")
    assert drawn.size == (2048, 1536)
    assert BEST_COLOUR in {drawn.getpixel((x, 1150)) for x in range(1024, 2048)}  # the best view, lower right


def test_ask_show_looks_with_json_keeps_stdout_for_the_trace(seeing, tmp_path):
    out = tmp_path / "looks.png"
    result = invoke("ask", picture_file(tmp_path), QUESTION, "--preset", seeing, "--json", "--show-looks", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["search"]["mode"] == "quadtree" and out.is_file()
    assert f"wrote {out}" in result.stderr


def test_ask_show_looks_without_a_search_writes_nothing_and_says_why(seeing, tmp_path):
    out = tmp_path / "looks.png"
    result = invoke("ask", picture_file(tmp_path), QUESTION, "--preset", seeing, "--zoom", "off",
                    "--show-looks", str(out))
    assert result.exit_code == 0, result.output
    assert "no closer look was taken, so --show-looks wrote nothing: zoom is off" in result.stdout
    assert not out.exists()
    small = Image.new("RGB", (400, 300), "white")
    small.save(tmp_path / "small.png")
    result = invoke("ask", str(tmp_path / "small.png"), QUESTION, "--preset", seeing, "--show-looks", str(out))
    assert "not 4 times larger than what the answerer takes in (400x300 against about 224 px)" in result.stdout
    assert not out.exists()


@pytest.mark.parametrize(("name", "fragment"), [("missing/looks.png", "does not exist"),
                                                ("looks.txt", "not an image file name")])
def test_ask_show_looks_to_a_bad_path_is_one_error_line_before_any_model_loads(seeing, tmp_path, name, fragment):
    result = invoke("ask", picture_file(tmp_path), QUESTION, "--preset", seeing,
                    "--show-looks", str(tmp_path / name))
    assert_one_error_line(result, 2, "--show-looks", fragment)
    assert "look 1" not in result.output


# -- report --sample ID --show-looks ---------------------------------------------------------------


@pytest.fixture
def results(seeing, tmp_path) -> Path:
    """A results file of one sample that looked closer."""
    data = tmp_path / "data"
    data.mkdir()
    Image.open(picture_file(tmp_path)).save(data / "big.png")
    record = {"id": "q1", "image": "big.png", "question": QUESTION, "answer": "red"}
    (data / "test.jsonl").write_text(json.dumps(record) + "\n")
    out = tmp_path / "r.jsonl"
    ran = invoke("eval", "jsonl", "--data", str(data), "--out", str(out), "--preset", seeing)
    assert ran.exit_code == 0, ran.output
    return out


def test_report_show_looks_draws_that_samples_trace(results, tmp_path):
    out = tmp_path / "q1.png"
    result = invoke("report", str(results), "--sample", "q1", "--show-looks", str(out))
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: " in result.stdout and "(quadtree), best view at lower right" in result.stdout
    assert Image.open(out).size == (2048, 1536)


@pytest.mark.parametrize(("args", "fragment"), [
    (["--sample", "nope", "--show-looks", "x.png"], "no sample 'nope' in the results (its ids: q1)"),
    (["--sample", "q1"], "--sample ID and --show-looks FILE.png go together"),
    (["--show-looks", "x.png", "--json", "--sample", "q1"], "takes no --json"),
])
def test_report_show_looks_errors_are_one_line(results, tmp_path, args, fragment):
    args = [str(tmp_path / arg) if arg == "x.png" else arg for arg in args]
    assert_one_error_line(invoke("report", str(results), *args), 2, fragment)
    assert not (tmp_path / "x.png").exists()
