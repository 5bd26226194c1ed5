"""The loop, driven by scripted fakes: what was asked, how often, and how it stopped."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from idealagent import IdealAgent, Sample, Trace
from idealagent.errors import ImageError, InputError, ModelLoadError
from idealagent.testing import IDEALGPT_LOOP, ScriptedAnswerer, ScriptedChatModel, flat
from tests.conftest import sub_questions, verdict


def make_agent(replies, answer="red", **settings):
    llm = ScriptedChatModel(replies=list(replies))
    answerer = ScriptedAnswerer(answer)
    return IdealAgent(llm, answerer, **{**IDEALGPT_LOOP, **settings}), llm, answerer


def test_stops_when_confident(red_image):
    agent, llm, answerer = make_agent([sub_questions("What colour is it?"), verdict("red", 0.9)])
    trace = agent.run(red_image, "What colour is the image?")
    assert trace.stop_reason == "confident"
    assert trace.answer == "red" and trace.confidence == 0.9
    assert len(trace.rounds) == 1 and trace.rounds[0].sub_qas[0].answer == "red"
    assert llm.batches == [1, 1]  # one questioner call, one reasoner call
    assert answerer.requests == [["What colour is it?"]] and answerer.captioned == [1]
    assert trace.usage.llm_calls == 2 and trace.usage.answerer_calls == 1
    assert trace.usage.llm_input_tokens > 0 and trace.usage.llm_output_tokens > 0
    assert set(trace.timings) == {"caption", "questioner", "answerer", "reasoner"}


def test_continues_when_unsure_and_forces_the_last_round(red_image):
    agent, llm, _ = make_agent(
        [
            sub_questions("What colour is it?"),
            verdict("red", 0.3),
            sub_questions("Is it bright?"),
            verdict("red", 0.5),
        ],
        max_rounds=2,
    )
    trace = agent.run(red_image, "What colour is the image?")
    assert [r.forced for r in trace.rounds] == [False, True]
    assert trace.stop_reason == "max_rounds" and trace.answer == "red" and trace.confidence == 0.5
    # The follow-up questioner saw the evidence and the analysis; the last reasoner was told to commit.
    follow_up = llm.calls[2][-1].content
    assert "What colour is it? Answer: red" in follow_up and "Analysis so far: because" in follow_up
    assert "last round" in llm.calls[3][0].content and "last round" not in llm.calls[1][0].content


def test_a_weak_forced_answer_does_not_override_a_more_confident_one(red_image):
    agent, _, _ = make_agent(
        [sub_questions("What is in the cup?"), verdict("espresso", 0.5), sub_questions("Is it coffee?"), verdict("no", 0.1)],
        max_rounds=2,
    )
    trace = agent.run(red_image, "What is in the cup?")
    assert trace.stop_reason == "max_rounds" and trace.rounds[-1].verdict.answer == "no"
    assert trace.answer == "espresso" and trace.confidence == 0.5


def test_last_round_must_commit_to_an_answer(red_image):
    agent, llm, _ = make_agent(
        [sub_questions("What is it?"), verdict("not sure", 0.2), verdict("a ball", 0.4)], max_rounds=1
    )
    trace = agent.run(red_image, "What is it?")
    assert trace.answer == "a ball" and trace.stop_reason == "max_rounds"
    [failure] = trace.rounds[0].failures
    assert failure.role == "reasoner" and "last round" in failure.error
    assert "could not be used" in llm.calls[-1][-1].content  # the error was fed back


def test_open_answers_lose_markdown_and_full_stops(red_image):
    agent, _, _ = make_agent([sub_questions("What is it?"), verdict("**a red ball.**", 0.9)])
    assert agent.run(red_image, "What is it?").answer == "a red ball"


def test_undecided_answer_in_an_early_round_means_zero_confidence(red_image):
    agent, _, _ = make_agent(
        [sub_questions("What is it?"), verdict("unknown", 0.9), sub_questions("Is it round?"), verdict("ball", 0.8)],
        max_rounds=3,
    )
    trace = agent.run(red_image, "What is it?")
    assert trace.rounds[0].verdict.answer is None and trace.rounds[0].verdict.confidence == 0.0
    assert trace.answer == "ball" and trace.stop_reason == "confident"


def test_sub_questions_are_deduplicated(red_image):
    agent, _, answerer = make_agent(
        [
            sub_questions("What colour is it?", "what colour is it", "Is it big?"),
            verdict("red", 0.2),
            sub_questions("What colour is it?", "Is it shiny?"),
            verdict("red", 0.9),
        ],
        max_rounds=3,
    )
    trace = agent.run(red_image, "What colour is the image?")
    assert [[qa.question for qa in r.sub_qas] for r in trace.rounds] == [
        ["What colour is it?", "Is it big?"],
        ["Is it shiny?"],
    ]
    assert flat(answerer.requests) == ["What colour is it?", "Is it big?", "Is it shiny?"]


def test_only_repeats_ends_with_the_last_answer(red_image):
    """A questioner that repeats itself is not asked again (its prompt already listed what was
    asked), and the round it did not open is neither kept nor counted."""
    repeat = sub_questions("What colour is it?")
    agent, llm, _ = make_agent([repeat, verdict("red", 0.4), repeat, repeat, repeat], max_rounds=3, attempts=3)
    trace = agent.run(red_image, "What colour is the image?")
    assert trace.stop_reason == "no_new_questions"
    assert trace.answer == "red" and trace.confidence == 0.4
    assert len(llm.calls) == 3  # round 1's question and verdict, then one try at round 2
    assert len(trace.rounds) == 1 and trace.judged_rounds == 1
    assert [f.role for f in trace.failures] == ["questioner"] and "already asked" in trace.failures[0].error
    assert str(trace).endswith("after 1 round; no_new_questions")


@pytest.mark.parametrize(
    ("reply", "expected"), [("B", "dog"), ("b) dog", "dog"), ("dog", "dog"), ("A", "cat"), ("2", "dog")]
)
def test_multiple_choice_answers_map_to_a_choice(red_image, reply, expected):
    agent, _, _ = make_agent([sub_questions("What animal is it?"), verdict(reply, 0.9)])
    trace = agent.run(red_image, "Which animal?", choices=["cat", "dog"])
    assert trace.answer == expected
    assert trace.rounds[0].verdict.choice_index == ["cat", "dog"].index(expected)


def test_an_answer_outside_the_choices_is_retried(red_image):
    agent, llm, _ = make_agent([sub_questions("What animal is it?"), verdict("E", 0.9), verdict("horse", 0.9), verdict("cat", 0.8)])
    trace = agent.run(red_image, "Which animal?", choices=["cat", "dog"])
    assert trace.answer == "cat"
    assert [f.attempt for f in trace.rounds[0].failures] == [1, 2]
    assert "not one of: A (cat), B (dog)" in trace.rounds[0].failures[0].error
    assert trace.usage.llm_calls == 4


def test_yes_no_and_entailment_use_their_labels(red_image):
    agent, _, _ = make_agent([sub_questions("Is it red?"), verdict("Yes.", 0.9)])
    assert agent.run(red_image, "Is it red?", kind="yes_no").answer == "yes"
    agent, llm, _ = make_agent([sub_questions("Is it red?"), verdict("contradiction", 0.9)])
    trace = agent.run(red_image, "The image is blue.", kind="entailment")
    assert trace.answer == "contradiction" and trace.sample.choices == ["entailment", "neutral", "contradiction"]
    assert "hypothesis" in llm.calls[0][0].content


def test_prose_replies_are_parsed_without_structured_output(red_image):
    agent, _, _ = make_agent(
        ["Here are my questions:\n1. What colour is it?\n2. Is it round?", "Analysis: It is red.\nAnswer: red\nConfidence: 85%"]
    )
    trace = agent.run(red_image, "What colour is the image?")
    assert trace.sub_questions == ["What colour is it?", "Is it round?"]
    assert trace.answer == "red" and trace.confidence == 0.85


def test_garbage_is_retried_then_the_questioner_fails(red_image):
    agent, llm, answerer = make_agent(["lorem ipsum", "{}", "%%%"], attempts=3)
    trace = agent.run(red_image, "What colour is the image?")
    assert trace.stop_reason == "questioner_failed" and trace.answer is None
    assert [f.attempt for f in trace.failures] == [1, 2, 3] and trace.rounds == []  # no round was opened
    assert answerer.requests == [] and llm.batches == [1, 1, 1]


def test_garbage_from_the_reasoner_ends_the_sample(red_image):
    agent, _, _ = make_agent([sub_questions("What is it?"), "no", "json please", "{\"answer\": \"red\"}"], attempts=3)
    trace = agent.run(red_image, "What colour is the image?")
    assert trace.stop_reason == "reasoner_failed" and trace.answer is None
    assert "no confidence" in trace.rounds[0].failures[-1].error


def test_model_exceptions_are_retried_like_bad_replies(red_image):
    agent, _, _ = make_agent([RuntimeError("server busy"), sub_questions("What is it?"), verdict("red", 0.9)])
    trace = agent.run(red_image, "What colour is the image?")
    assert trace.answer == "red"
    assert "server busy" in trace.rounds[0].failures[0].error


def scripted_by_content(messages) -> str:
    """A deterministic reply that depends only on the conversation, so order doesn't matter."""
    system, last = messages[0].content, messages[-1].content
    question = re.findall(r"Main question: (.*)", last)[-1]
    colour = question.split()[-1].rstrip("?")
    if "\"sub_questions\"" in system:  # the questioner's reply format
        asked = len(re.findall(r" Answer: ", last))
        return sub_questions(f"Is there {colour} number {asked}?", f"Is it bright {asked}?")
    if colour != "blue":
        return verdict(colour, 0.9)
    return verdict(colour, 0.5 if "last round" in system else 0.3)


def test_run_batch_matches_one_by_one_runs():
    images = {c: Image.new("RGB", (16, 16), c) for c in ("red", "blue", "green")}
    samples = [Sample(image=img, question=f"Is the image {c}?", id=c) for c, img in images.items()]

    def agent_and_llm(batch_size):
        llm = ScriptedChatModel(replies=[scripted_by_content] * 50)
        return IdealAgent(llm, ScriptedAnswerer(lambda q: q.split()[2]), max_rounds=3, batch_size=batch_size,
                          **IDEALGPT_LOOP), llm

    batch_agent, batch_llm = agent_and_llm(batch_size=8)
    batched = batch_agent.run_batch(samples)
    single_agent, _ = agent_and_llm(batch_size=1)
    singles = [single_agent.run(s.image, s.question) for s in samples]

    def comparable(trace: Trace):
        return trace.model_dump(exclude={"timings", "latency_s", "sample", "settings"})

    assert [t.sample.id for t in batched] == ["red", "blue", "green"]
    assert [comparable(t) for t in batched] == [comparable(t) for t in singles]
    assert [t.stop_reason for t in batched] == ["confident", "max_rounds", "confident"]
    # One call per phase for the whole batch: round 1 has 3 samples, rounds 2 and 3 only "blue".
    assert batch_llm.batches == [3, 3, 1, 1, 1, 1]


def test_pool_refill_keeps_the_batch_full():
    samples = [Sample(image=Image.new("RGB", (8, 8), c), question=f"Is the image {c}?") for c in ("blue", "red", "green")]
    llm = ScriptedChatModel(replies=[scripted_by_content] * 50)
    answerer = ScriptedAnswerer("yes")
    agent = IdealAgent(llm, answerer, max_rounds=2, batch_size=2, **IDEALGPT_LOOP)
    finished = [t.sample.question for t in agent.iter_batch(samples)]
    # red finishes in round 1, so green joins blue's second round: batches stay at 2.
    assert finished == ["Is the image red?", "Is the image blue?", "Is the image green?"]
    assert llm.batches == [2, 2, 2, 2]
    assert answerer.captioned == [2, 1]


def test_an_unreadable_image_fails_only_its_sample(tmp_path, red_image):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    samples = [Sample(image=str(bad), question="Q?"), Sample(image=red_image, question="What colour?")]
    agent, _, _ = make_agent([sub_questions("What colour is it?"), verdict("red", 0.9)])
    broken, fine = agent.run_batch(samples)
    assert broken.stop_reason == "error" and "not a readable image" in broken.error and broken.rounds == []
    assert fine.answer == "red"
    with pytest.raises(ImageError, match="no such file"):
        agent.run(str(tmp_path / "missing.png"), "Q?")
    with pytest.raises(ImageError):  # at the call, not at the first next()
        agent.stream(str(tmp_path / "missing.png"), "Q?")


def test_an_answerer_crash_fails_only_the_sample_at_fault():
    def answer(question: str) -> str:
        if "blue" in question:
            raise RuntimeError("processor rejected the image")
        return "yes"

    llm = ScriptedChatModel(replies=[scripted_by_content] * 20)
    agent = IdealAgent(llm, ScriptedAnswerer(answer), max_rounds=1, **IDEALGPT_LOOP)
    samples = [Sample(image=Image.new("RGB", (8, 8), c), question=f"Is the image {c}?") for c in ("red", "blue")]
    red, blue = agent.run_batch(samples)
    assert red.answer == "red" and red.stop_reason == "confident"
    # Only the sub-answer at fault fails: it is recorded and left out, and the round is judged
    # on the other one.
    first, second = blue.rounds[0].sub_qas
    assert "processor rejected the image" in first.error and first.answer == "" and second.answer == "yes"
    assert blue.stop_reason == "max_rounds" and blue.answer == "blue" and blue.error is None


def test_an_unreachable_answerer_stops_the_run_at_once_not_sample_by_sample():
    calls = []

    class DownServer(ScriptedAnswerer):
        def answer(self, requests):
            calls.append(len(requests))
            raise ModelLoadError("cannot reach http://127.0.0.1:9/v1 after 5 attempts")

    llm = ScriptedChatModel(replies=[scripted_by_content] * 20)
    agent = IdealAgent(llm, DownServer(), max_rounds=1)
    samples = [Sample(image=Image.new("RGB", (8, 8), c), question=f"Is the image {c}?") for c in ("red", "blue")]
    with pytest.raises(ModelLoadError, match="cannot reach"):  # not a result for any sample
        agent.run_batch(samples)
    assert len(calls) == 1  # one batched call; no per-sample retries against a dead server


@pytest.mark.parametrize(
    "settings", [{"confidence_threshold": 1.5}, {"confidence_threshold": -0.1}, {"max_rounds": 0}, {"max_sub_questions": 6}]
)
def test_bad_settings_are_input_errors(settings):
    with pytest.raises(InputError):
        IdealAgent(ScriptedChatModel(), ScriptedAnswerer(), **settings)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"question": "  "}, "question is empty"),
        ({"question": "Which?", "choices": ["only one"]}, "at least 2"),
        ({"question": "Which?", "choices": ["a", "A"]}, "repeat"),
        ({"question": "Which?", "kind": "open", "choices": ["a", "b"]}, "takes no choices"),
    ],
)
def test_bad_samples_are_input_errors(kwargs, message):
    with pytest.raises(InputError, match=message):
        Sample(**kwargs)


def test_trace_round_trips_through_json(red_image):
    agent, _, _ = make_agent([sub_questions("What colour is it?"), verdict("E", 0.9), verdict("B", 0.8)])
    trace = agent.run(red_image, "Which colour?", choices=["blue", "red"])
    again = Trace.from_json(trace.to_json())
    assert again.model_dump(exclude={"sample"}) == trace.model_dump(exclude={"sample"})
    assert again.sample.image == "<in-memory image 32x32>"
    assert json.loads(trace.to_json())["rounds"][0]["failures"][0]["role"] == "reasoner"
