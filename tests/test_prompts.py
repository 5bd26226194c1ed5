"""Prompt files: strict rendering, validation, every kind renders, and they ship in the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from idealagent.prompts import PromptError, available, load_prompt
from idealagent.trace import TASK_KINDS, SubQA

ROOT = Path(__file__).resolve().parent.parent
VARIABLES = {
    "question": "Which animal is it?",
    "choices": ["cat", "dog"],
    "caption": "probably a tabby cat",
    "evidence": [SubQA(question="What animal is it?", answer="a cat")],
    "analysis": "It looks like a cat.",
    "direct_answer": "a cat",
    "max_sub_questions": 3,
    "final": True,
}


def test_shipped_prompts_are_listed():
    assert {"questioner", "reasoner", "repair", "answerer"} <= set(available())


@pytest.mark.parametrize("name", ["questioner", "reasoner"])
@pytest.mark.parametrize("kind", TASK_KINDS)
def test_every_kind_renders_with_exemplars(name, kind):
    messages = load_prompt(name).render(kind, kind=kind, **VARIABLES)
    assert messages[0].type == "system" and messages[-1].type == "human"
    assert len(messages) >= 4, "each kind has at least one few-shot exemplar"
    assert "Which animal is it?" in messages[-1].content
    assert [m.type for m in messages[1:-1]] == ["human", "ai"] * ((len(messages) - 2) // 2)


def test_a_missing_variable_is_an_error():
    variables = {k: v for k, v in VARIABLES.items() if k != "caption"}
    with pytest.raises(PromptError, match="caption"):
        load_prompt("questioner").render("open", kind="open", **variables)


def test_unknown_fields_and_names_are_refused(tmp_path):
    (tmp_path / "odd.yaml").write_text("system: hi\nuser: there\nmodel: gpt\n")
    with pytest.raises(PromptError, match="invalid prompt file"):
        load_prompt("odd", tmp_path)
    with pytest.raises(PromptError, match="no prompt named 'nope'.*odd"):
        load_prompt("nope", tmp_path)


def test_kinds_fall_back_to_the_default_variant(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "system: '{{ instructions }}'\nuser: '{{ q }}'\n"
        "kinds:\n  default:\n    instructions: generic\n    exemplars: [{vars: {q: ex}, reply: {a: 1}}]\n"
        "  yes_no:\n    instructions: say yes or no\n"
    )
    prompt = load_prompt("p", tmp_path)
    assert [m.content for m in prompt.render("yes_no", q="real")] == ["say yes or no", "ex", '{"a": 1}', "real"]
    assert prompt.render("open", q="real")[0].content == "generic"


@pytest.mark.real_weights
def test_prompts_ship_inside_a_non_editable_wheel(tmp_path):
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
    )
    [wheel] = out.glob("idealagent-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "idealagent/prompts/questioner.yaml" in names and "idealagent/examples/cat.jpg" in names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True)
    code = "from idealagent.prompts import default_prompts_dir as d, load_prompt; print(d()); load_prompt('reasoner')"
    found = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(target)}, capture_output=True, text=True, check=True
    )
    assert Path(found.stdout.strip()) == target / "idealagent" / "prompts"
