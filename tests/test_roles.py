"""The roles' validation of replies parsed from text: what is accepted, what is sent back."""

from __future__ import annotations

import pytest

from idealagent.roles import Reasoner
from idealagent.testing import ScriptedChatModel
from idealagent.trace import Sample, Trace


def judge(replies, *, final=False, **sample):
    """One reasoner call (text mode) over a scripted model; returns (outcome, model)."""
    llm = ScriptedChatModel(replies=list(replies))
    reasoner = Reasoner(llm, structured="off", attempts=len(replies))
    trace = Trace(sample=Sample(**{"question": "What is it?", **sample}))
    [outcome] = reasoner.judge([trace], [final])
    return outcome, llm


def test_a_truncated_json_verdict_keeps_its_answer_and_confidence():
    outcome, _ = judge(['{"analysis": "ok", "answer": "yes", "confidence": 0.7'])
    assert (outcome.value.answer, outcome.value.confidence, outcome.value.analysis) == ("yes", 0.7, "ok")
    assert outcome.failures == []


@pytest.mark.parametrize(
    "bad",
    ['{"analysis": "ok", "answer": "yes, confidence: 0.7}", "confidence": 0.7}',
     '{"analysis": "ok", "answer": "{{car}}", "confidence": 0.7}',
     '{"analysis": "ok", "answer": ".01", "confidence": 0.7}'],
)
def test_an_open_answer_parsed_from_text_is_held_to_the_schema_pattern(bad):
    outcome, llm = judge([bad, '{"analysis": "ok", "answer": "a car", "confidence": 0.8}'])
    assert outcome.value.answer == "a car" and outcome.value.confidence == 0.8
    [failure] = outcome.failures
    assert "not a short phrase" in failure.error
    assert "not a short phrase" in llm.calls[-1][-1].content  # the reason was sent back


def test_none_is_a_final_answer_and_unknown_is_not():
    outcome, _ = judge(['{"analysis": "empty plate", "answer": "none", "confidence": 0.8}'], final=True)
    assert outcome.value.answer == "none" and outcome.value.confidence == 0.8
    outcome, _ = judge(['{"analysis": "?", "answer": "unknown", "confidence": 0.8}',
                        '{"analysis": "guess", "answer": "none", "confidence": 0.3}'], final=True)
    assert outcome.value.answer == "none" and "last round" in outcome.failures[0].error


@pytest.mark.parametrize(("confidence", "expected"), [('"8/10"', 0.8), ('"4 out of 5"', 0.8), ('"85%"', 0.85)])
def test_confidences_written_as_fractions_or_percentages(confidence, expected):
    outcome, _ = judge([f'{{"analysis": "ok", "answer": "red", "confidence": {confidence}}}'])
    assert outcome.value.confidence == pytest.approx(expected)


def test_an_out_of_range_confidence_is_sent_back_not_shrunk():
    outcome, _ = judge(['{"analysis": "ok", "answer": "red", "confidence": 1.5}',
                        '{"analysis": "ok", "answer": "red", "confidence": 0.6}'])
    assert outcome.value.confidence == 0.6 and "no confidence" in outcome.failures[0].error


def test_a_count_among_numeric_choices_is_that_choice():
    outcome, _ = judge(['{"analysis": "I see three", "answer": "3 dogs", "confidence": 0.9}'],
                       question="How many dogs?", kind="multiple_choice", choices=["2", "3", "4", "5"])
    assert outcome.value.answer == "3" and outcome.value.choice_index == 1
