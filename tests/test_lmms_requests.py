"""lmms-eval prompts as Samples, and answers as replies (idealagent/integrations/lmms_requests.py),
on prompts written the way lmms-eval's own tasks write them."""

from __future__ import annotations

import pytest

from idealagent.integrations.lmms_requests import limit_reply, reply, to_request
from idealagent.trace import Trace

SCIENCEQA = ("Context: A magnet is near a paper clip.\nWhich force acts on the paper clip?\n"
             "A. magnetic\nB. gravity\nC. friction\nAnswer with the option's letter from the given choices directly.")


def test_options_become_choices_and_the_rest_stays_the_question() -> None:
    request = to_request("<image>\n" + SCIENCEQA, {"max_new_tokens": 16}, "scienceqa_img/7")
    sample = request.sample
    assert (sample.kind, sample.choices, sample.id) == ("multiple_choice", ["magnetic", "gravity", "friction"],
                                                        "scienceqa_img/7")
    assert sample.question == ("Context: A magnet is near a paper clip.\nWhich force acts on the paper clip?\n"
                               "Answer with the option's letter from the given choices directly.")
    assert request.letter and request.max_words == 16 and sample.image is None


@pytest.mark.parametrize(("prompt", "choices", "letter"), [
    ("Which is it?\n(A) cat\n(B) dog\nAnswer the question with A, B, C, or D.", ["cat", "dog"], True),
    ("Which is it?\nA) cat\nB) dog\nC) bird\nAnswer with the option letter only.", ["cat", "dog", "bird"], True),
    ("Which is it?\nA. cat\nB. dog\n请直接使用所提供的选项字母作为答案回答。", ["cat", "dog"], True),
    ("Which is it?\nA. cat\nB. dog\nOnly give the best option.", ["cat", "dog"], False),
])
def test_option_styles_and_what_asks_for_a_letter(prompt: str, choices: list[str], letter: bool) -> None:
    request = to_request(prompt, None, "t/0")
    assert (request.sample.choices, request.letter) == (choices, letter)


@pytest.mark.parametrize(("prompt", "kind"), [
    ("A. cat is on the mat. What colour is it?\nAnswer the question using a single word or phrase.", "open"),
    ("Options in the wrong order:\nB. cat\nA. dog\nWhich?", "open"),
    ("Same options twice:\nA. 1\nB. 1\nWhich?", "open"),  # cannot be told apart: the prompt is the question
    ("Is there a dog in the image? Please answer yes or no.", "yes_no"),
])
def test_other_prompts(prompt: str, kind: str) -> None:
    sample = to_request(prompt, {}, "t/0").sample
    assert sample.kind == kind
    if kind == "open":
        assert sample.question == prompt


def _trace(request, **fields) -> Trace:
    return Trace(sample=request.sample, stop_reason="confident", **fields)


def test_the_reply_is_the_letter_when_asked_else_the_text() -> None:
    asked = to_request(SCIENCEQA, {}, "t/0")
    plain = to_request("Which?\nA. magnetic\nB. gravity", {}, "t/1")
    assert reply(asked, _trace(asked, answer="gravity", choice_index=1)) == "B"
    assert reply(plain, _trace(plain, answer="B", choice_index=1)) == "gravity"
    yes_no = to_request("Is it red? Please answer yes or no.", {}, "t/2")
    assert reply(yes_no, _trace(yes_no, answer="yes", choice_index=0)) == "yes"
    assert reply(asked, Trace(sample=asked.sample, stop_reason="error", error="unreadable image")) == ""


def test_until_and_max_new_tokens_limit_the_reply() -> None:
    request = to_request("What is written?", {"until": ["\n", "ASSISTANT:"], "max_new_tokens": 3}, "t/0")
    assert request.until == ("\n", "ASSISTANT:")
    assert reply(request, _trace(request, answer="stop here\nnot this")) == "stop here"
    assert reply(request, _trace(request, answer="one two three four")) == "one two three"
    assert limit_reply("a ASSISTANT: b", ["ASSISTANT:"], None) == "a"
    assert to_request("Q?", {"until": "\n\n"}, "t/0").until == ("\n\n",)
