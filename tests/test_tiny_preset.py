"""The embedded `tiny` preset end to end on its real weights (SmolLM2-135M + EfficientNet-Lite0).

The model is far too small to be right often, so these tests check what must hold whatever it
says: the loop runs, every reply was usable, the records are complete and within bounds.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from idealagent import Sample, Trace, load_preset
from idealagent.examples import example_image
from idealagent.parsing import normalize_question

# Their questions are asked in the README's quick start and the quickstart notebook too, so
# with the shared response cache a full run of the suite generates each reply once.
pytestmark = [pytest.mark.real_weights, pytest.mark.tiny_replies]


@pytest.fixture(scope="module")
def agent(tiny_replies):
    # Built before the autouse fixture sets each test's cache folder (a module fixture comes
    # first): without this it would read the user's own cache of earlier runs.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IDEALAGENT_RESPONSE_CACHE", str(tiny_replies))
        return load_preset("tiny")


def check_trace(trace: Trace) -> None:
    assert trace.stop_reason in {"confident", "max_rounds", "no_new_questions", "rounds_do_not_pay"}, trace.rounds[-1].failures
    assert trace.error is None and trace.caption and "Colours:" in trace.caption
    assert 1 <= len(trace.rounds) <= trace.settings["max_rounds"]
    asked = [normalize_question(q) for q in trace.sub_questions]
    assert asked and len(asked) == len(set(asked)), "sub-questions never repeat"
    for round_ in trace.rounds:
        assert len(round_.sub_qas) <= trace.settings["max_sub_questions"]
        assert all(qa.question.endswith("?") and qa.answer.strip() for qa in round_.sub_qas)
    assert trace.answer and 0.0 <= trace.confidence <= 1.0
    assert trace.usage.llm_calls >= 2 and trace.usage.llm_output_tokens > 0
    # every sub-question, and the direct answer to the main question
    assert trace.usage.answerer_calls == len(trace.sub_questions) + (trace.direct is not None)
    assert trace.usage.answerer_input_tokens > 0 and trace.usage.answerer_output_tokens > 0  # SmolLM2 answers


def test_open_question_about_an_example_photo(agent):
    trace = agent.run(example_image("cat"), "What animal is in the picture?")
    check_trace(trace)
    assert "cat" in trace.caption  # the classifier sees a cat


@pytest.mark.long  # CI runs it, beside the quickstart notebook that asks the same (17 s alone)
def test_choice_kinds_always_answer_with_a_choice(agent):
    # One of each kind: the README quick start's two and the quickstart notebook's entailment.
    samples = [
        Sample(image=str(example_image("cat")), question="Is it a cat or a dog?", choices=["cat", "dog"]),
        Sample(image=str(example_image("coffee")), question="Is it a drink?", kind="yes_no"),
        Sample(image=str(example_image("coffee")), question="The cup is full of milk.", kind="entailment"),
    ]
    traces = agent.run_batch(samples)
    for sample, trace in zip(samples, traces):
        check_trace(trace)
        assert trace.answer in sample.choices
        # The winning candidate, the direct answer or a round's verdict, names that choice.
        winner = trace.direct if trace.answer_source == "direct" else trace.rounds[trace.answer_round - 1].verdict
        assert winner.choice_index == sample.choices.index(trace.answer)


def test_cli_json_prints_only_the_trace():
    result = subprocess.run(
        [sys.executable, "-m", "idealagent.cli", "ask", str(example_image("cat")), "What animal is in the picture?", "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    trace = Trace.from_json(result.stdout)
    assert json.loads(result.stdout)["sample"]["image"] == str(example_image("cat"))
    check_trace(trace)
