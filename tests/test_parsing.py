"""The tolerant parsers: hand-picked cases plus property tests on arbitrary text."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idealagent import parsing

question_text = st.text(
    alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd", "Zs"), whitelist_characters=",'-"),
    min_size=3,
    max_size=40,
).map(lambda s: " ".join(s.split())).filter(lambda s: len(s) >= 3 and s[0].isalpha()).map(lambda s: s + "?")


@given(st.text())
@settings(max_examples=300)
def test_parsers_never_raise_on_arbitrary_text(text):
    assert isinstance(parsing.parse_sub_questions(text), list)
    assert isinstance(parsing.parse_verdict_fields(text), dict)
    data = parsing.extract_json(text)
    assert data is None or isinstance(data, dict)
    confidence = parsing.parse_confidence(text)
    assert confidence is None or 0.0 <= confidence <= 1.0
    assert isinstance(parsing.short_answer(text), str)
    parsing.is_undecided(text)


@given(st.one_of(st.floats(allow_nan=True), st.integers(), st.text(), st.booleans(), st.none()))
def test_confidence_is_always_within_bounds(value):
    confidence = parsing.parse_confidence(value)
    assert confidence is None or 0.0 <= confidence <= 1.0


@given(st.one_of(st.text(), st.integers()), st.lists(st.text(min_size=1, max_size=12), min_size=2, max_size=5, unique=True))
def test_match_choice_returns_a_valid_index_or_none(answer, choices):
    index = parsing.match_choice(answer, choices)
    assert index is None or 0 <= index < len(choices)


@given(st.lists(question_text, min_size=1, max_size=5))
def test_sub_questions_survive_json_and_numbered_lists(questions):
    assert parsing.parse_sub_questions(json.dumps({"sub_questions": questions})) == questions
    numbered = "Here you go:\n" + "\n".join(f"{i + 1}. {q}" for i, q in enumerate(questions))
    assert parsing.parse_sub_questions(numbered) == [q.strip() for q in questions]


@given(st.text(max_size=60), st.text(max_size=20), st.floats(min_value=0, max_value=1))
def test_verdict_fields_survive_json_wrapped_in_prose(analysis, answer, confidence):
    reply = f"Sure.\n```json\n{json.dumps({'analysis': analysis, 'answer': answer, 'confidence': confidence})}\n```"
    assert parsing.parse_verdict_fields(reply) == {"analysis": analysis, "answer": answer, "confidence": confidence}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"sub_questions": ["Is it red?",],}', ["Is it red?"]),
        ("Sub-question 1: What is it?\nSub-question 2: Where is it?", ["What is it?", "Where is it?"]),
        ("- Is it red? Is it big?\n* Q3: Is it old?", ["Is it red?", "Is it big?", "Is it old?"]),
        ("I don't know.", []),
    ],
)
def test_sub_question_formats(text, expected):
    assert parsing.parse_sub_questions(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.7, 0.7), ("0.7", 0.7), (1, 1.0), ("85%", 0.85), ("85 %", 0.85), ("85 percent", 0.85), ("85", 0.85),
        (85, 0.85), ("high", 0.85), ("8/10", 0.8), ("4 out of 5", 0.8), ("confidence 3 / 4", 0.75),
        # Out of range or ambiguous: refused (None), never clamped or divided into a small number.
        ("1.5", None), (1.5, None), ("8", None), (250, None), (-3, None), ("12/10", None), ("1/0", None),
        ("150%", None), (float("inf"), None), ("none", None),
    ],
)
def test_confidence_formats(value, expected):
    confidence = parsing.parse_confidence(value)
    assert confidence is None if expected is None else confidence == pytest.approx(expected)


@pytest.mark.parametrize(
    ("answer", "index"),
    [
        ("B", 1), ("(b)", 1), ("B) dog", 1), ("Answer 1", 0), ("option 2: dog", 1), ("(2)", 1), ("DOG.", 1),
        ("It is a dog", 1), ("a cat", 0), ("dogg", 1), ("E", None), ("both", None), ("a", 0), ("2", 1), ("2. cat", 0),
        ("2 cats", None),  # a count, not the second choice
    ],
)
def test_match_choice(answer, index):
    assert parsing.match_choice(answer, ["cat", "dog"]) == index


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("3 dogs", "3"), ("3", "3"), ("answer 4", "4"), ("option 4", "4"), ("B", "3"), ("(a)", "2"), ("five", None)],
)
def test_a_number_among_numeric_choices_is_the_choice_not_a_position(answer, expected):
    choices = ["2", "3", "4", "5"]
    index = parsing.match_choice(answer, choices)
    assert (choices[index] if index is not None else None) == expected


@pytest.mark.parametrize("answer", ["none", "None.", "zero", "nothing"])
def test_none_is_an_answer(answer):
    assert not parsing.is_undecided(answer)


@pytest.mark.parametrize("answer", ["unknown", "Not sure.", "cannot tell", "I don't know", "", "  ", None, "N/A"])
def test_non_answers_are_undecided(answer):
    assert parsing.is_undecided(answer)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"analysis": "ok", "answer": "yes", "confidence": 0.7', {"analysis": "ok", "answer": "yes", "confidence": 0.7}),
        ('{"analysis": "ok", "answer": "yes", "confidence": 0.7,', {"analysis": "ok", "answer": "yes", "confidence": 0.7}),
        ('{"analysis": "ok", "answer": "yes", "confidence": 0.', {"analysis": "ok", "answer": "yes"}),
        ('{"analysis": "ok", "answer": "ye', {"analysis": "ok"}),
        ('{"analysis": "a {brace}, and more", "answer": "no", "conf', {"analysis": "a {brace}, and more", "answer": "no"}),
        ("analysis: ok\nanswer: yes, confidence: 0.7}", {"analysis": "ok", "answer": "yes", "confidence": "0.7"}),
        ('"answer": "yes", "confidence": 0.7', {"answer": "yes", "confidence": "0.7"}),
    ],
)
def test_truncated_and_broken_verdicts_keep_only_complete_fields(text, expected):
    assert parsing.parse_verdict_fields(text) == expected


def test_truncated_sub_questions_keep_the_complete_ones():
    assert parsing.extract_json('{"sub_questions": ["Is it red?", "Is it bi') == {"sub_questions": ["Is it red?"]}
    assert parsing.extract_json("{not json} and {\"a\": 1}") == {"a": 1}
    assert parsing.extract_json("{not json at all") is None


def test_escaped_quotes_and_brackets_inside_strings_are_text_whole_or_cut_off():
    # One scanner serves both: a closed object with a quoted "}" in it, and a cut-off one
    # whose string holds an escaped quote, a comma and an opening brace.
    assert parsing.extract_json(r'noise {"answer": "a \"}\" b", "n": [1, {"x": "]"}]} tail') == {
        "answer": 'a "}" b', "n": [1, {"x": "]"}]}
    assert parsing.extract_json(r'{"analysis": "he said \"stop, now\" {", "answer": "no", "conf') == {
        "analysis": 'he said "stop, now" {', "answer": "no"}
    assert parsing.extract_json(r'{"analysis": "ok", "answer": "cut \", mid') == {"analysis": "ok"}


def test_plain_verdict_lines():
    text = "Let me think.\nAnalysis: The sub-answers agree.\nMore likely answer: B\nConfidence: very high"
    assert parsing.parse_verdict_fields(text) == {"analysis": "The sub-answers agree.", "answer": "B", "confidence": "very high"}
    assert parsing.parse_confidence("very high") == 0.95


def test_short_answer_and_undecided():
    assert parsing.short_answer("A red ball. It is on the floor.\nMore text") == "A red ball"
    assert parsing.short_answer("one two three four five six seven eight nine ten") == "one two three four five six seven eight"
    assert parsing.is_undecided("Not sure.") and parsing.is_undecided(None) and not parsing.is_undecided("cat")
    assert parsing.normalize_question("  What's  THAT? ") == parsing.normalize_question("whats that")
