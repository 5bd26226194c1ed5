"""``answerers.Answer`` is a record (text plus token counts), not a ``str`` that loses its counts
under any string operation; plain ``str`` answers from other answerers still work."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import pytest
from PIL import Image

from idealagent import IdealAgent
from idealagent.answerers import Answer, Answerer, text_of, tokens_of
from idealagent.evaluation.baseline import run_baseline
from idealagent.evaluation.items import EvalItem
from idealagent.testing import IDEALGPT_LOOP, ScriptedAnswerer, ScriptedChatModel
from tests.conftest import sub_questions, verdict


class CountingAnswerer:
    """Answers with ``Answer`` records whose counts depend on the question, as a model's would."""

    def answer(self, requests: Sequence[tuple[Any, str]]) -> list[Answer]:
        return [Answer("red", len(question), 2) for _, question in requests]

    def caption(self, images: Sequence[Any]) -> list[Answer]:
        return [Answer("a red square", 100, 4) for _ in images]


def test_an_answer_is_a_record_whose_text_is_its_str() -> None:
    answer = Answer("red", 12, 1)
    assert not isinstance(answer, str) and str(answer) == text_of(answer) == "red"
    assert tokens_of(answer) == (12, 1) and tokens_of("red") == (0, 0) and text_of("red") == "red"
    assert answer.with_text("Red.") == Answer("Red.", 12, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        answer.text = "blue"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        answer.strip()  # type: ignore[attr-defined]  # a string operation fails loudly


def test_answer_counts_survive_the_path_to_the_trace(red_image: Image.Image) -> None:
    questions = ["What colour is it?", "Is it round?"]
    llm = ScriptedChatModel(replies=[sub_questions(*questions), verdict("red", 0.9)])
    answerer = CountingAnswerer()
    assert isinstance(answerer, Answerer)
    trace = IdealAgent(llm, answerer, **IDEALGPT_LOOP).run(red_image, "What colour is the image?")
    assert trace.caption == "a red square"
    assert [qa.answer for qa in trace.rounds[0].sub_qas] == ["red", "red"]
    assert trace.usage.answerer_input_tokens == 100 + sum(map(len, questions))
    assert trace.usage.answerer_output_tokens == 4 + 2 * len(questions)
    record = json.loads(trace.model_dump_json())  # what a results line holds
    assert record["rounds"][0]["sub_qas"][0]["answer"] == "red"
    assert record["usage"]["answerer_input_tokens"] == trace.usage.answerer_input_tokens


def test_plain_str_answers_still_work_with_no_counts(red_image: Image.Image) -> None:
    llm = ScriptedChatModel(replies=[sub_questions("What colour is it?"), verdict("red", 0.9)])
    trace = IdealAgent(llm, ScriptedAnswerer("red"), **IDEALGPT_LOOP).run(red_image, "What colour is the image?")
    assert trace.answer == "red" and trace.rounds[0].sub_qas[0].answer == "red"
    assert trace.usage.answerer_calls == 1
    assert trace.usage.answerer_input_tokens == trace.usage.answerer_output_tokens == 0


@pytest.mark.parametrize(("answerer", "tokens"), [(CountingAnswerer(), (len("What is it?"), 2)),
                                                  (ScriptedAnswerer("red"), (0, 0))])
def test_the_baseline_reads_text_and_counts_from_either_form(answerer: Any, tokens: tuple[int, int]) -> None:
    item = EvalItem(id="q1", image="unused.png", question="What is it?", kind="open", choices=None,
                    answers=["red"], gold_index=None, metric="exact")
    result = run_baseline(answerer, [item], {"q1": Image.new("RGB", (8, 8), "red")})["q1"]
    assert result.error is None and result.prediction == "red"
    assert (result.input_tokens, result.output_tokens) == tokens
