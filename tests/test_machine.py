"""The per-sample state machine's edge cases, each in the pipelined and the lock-step loop: a
failure never throws away a candidate, one sample's bad input never stops another, a setting
the models cannot honour is refused before any call, and every answer has a confidence."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from PIL import Image

from idealagent import IdealAgent, Sample
from idealagent.calibration import NO_DATA_PRIOR
from idealagent.errors import InfrastructureError, InputError, ModelOutputError
from idealagent.events import (DirectAnswered, RoundAnswered, RoundAsked, RoundJudged, SampleFinished, SampleStarted,
                               StepFailed)
from idealagent.testing import IDEALGPT_LOOP, ScriptedAnswerer, ScriptedChatModel
from idealagent.trace import Round, Trace
from tests.conftest import sub_questions, verdict

LOOPS = pytest.mark.parametrize("pipeline", [True, False], ids=["pipelined", "lock-step"])


class FlakyAnswerer(ScriptedAnswerer):
    """Fails the listed questions (or ``caption``): the infrastructure's errors once each, a
    sample's own (``error=ModelOutputError``) every time."""

    def __init__(self, answer, fail=(), error=InfrastructureError, **kwargs) -> None:
        super().__init__(answer, **kwargs)
        self.fail, self.error = set(fail), error

    def _check(self, what: str) -> None:
        if what in self.fail:
            if self.error is InfrastructureError:
                self.fail.discard(what)
            raise self.error(f"trouble with {what!r}")

    def answer(self, requests):
        for _, question in requests:
            self._check(question)
        return super().answer(requests)

    def caption(self, images):
        self._check("caption")
        return super().caption(images)


@LOOPS
def test_stream_yields_each_round_once_and_never_one_cut_short(red_image, pipeline):
    # Round 1 is judged; round 2's reasoner never gives a usable reply.
    llm = ScriptedChatModel(replies=[sub_questions("Is it red?"), verdict("red", 0.3),
                                     sub_questions("Is it dark?"), "nonsense", "more nonsense"])
    agent = IdealAgent(llm, ScriptedAnswerer("yes"), attempts=2, pipeline=pipeline, **IDEALGPT_LOOP)
    items = list(agent.stream(red_image, "What colour is the image?"))
    rounds = [item for item in items if isinstance(item, Round)]
    assert [r.index for r in rounds] == [1]  # round 2 was cut short: the trace tells why
    trace = items[-1]
    assert isinstance(trace, Trace) and trace.stop_reason == "reasoner_failed" and trace.answer == "red"


@LOOPS
def test_a_sub_answer_failing_in_round_two_keeps_the_candidates_found(red_image, pipeline):
    llm = ScriptedChatModel(replies=[sub_questions("Is it red?"), verdict("red", 0.4),
                                     sub_questions("Is it shiny?")])
    answerer = FlakyAnswerer("red", fail={"Is it shiny?"}, error=ModelOutputError)  # an empty reply
    agent = IdealAgent(llm, answerer, pipeline=pipeline, **IDEALGPT_LOOP)
    trace = agent.run(red_image, "What colour is the image?")
    assert trace.answer == "red" and trace.confidence == 0.4 and trace.answer_round == 1
    assert trace.stop_reason == "answerer_failed" and "trouble with" in trace.error
    assert trace.rounds[1].sub_qas[0].error and trace.judged_rounds == 1


@LOOPS
def test_a_failed_sub_answer_is_left_out_and_the_round_still_judged(red_image, pipeline):
    llm = ScriptedChatModel(replies=[sub_questions("Is it red?", "Is it shiny?"), verdict("red", 0.9)])
    answerer = FlakyAnswerer("yes", fail={"Is it shiny?"}, error=ModelOutputError)
    agent = IdealAgent(llm, answerer, pipeline=pipeline, **IDEALGPT_LOOP)
    trace = agent.run(red_image, "What colour is the image?")
    assert trace.stop_reason == "confident" and trace.answer == "red"
    assert [qa.answer for qa in trace.rounds[0].sub_qas] == ["yes", ""]
    reasoner_prompt = str(llm.calls[-1][-1].content)
    assert "Is it red?" in reasoner_prompt and "Is it shiny?" not in reasoner_prompt


@LOOPS
def test_the_infrastructure_retry_budget_is_per_step(red_image, pipeline):
    # One transient failure at the caption, the questioner and the answerer: each step
    # succeeds on its retry, so the sample must too (infra_retries=1 allows one per step).
    llm = ScriptedChatModel(replies=[InfrastructureError("the questioner's server blinked"),
                                     sub_questions("Is it red?"), verdict("red", 0.9)])
    answerer = FlakyAnswerer("yes", fail={"caption", "Is it red?"})
    events = []
    agent = IdealAgent(llm, answerer, infra_retries=1, pipeline=pipeline, **IDEALGPT_LOOP)
    [trace] = agent.run_batch([Sample(image=red_image, question="What colour is the image?")],
                              callbacks=[events.append])
    assert trace.stop_reason == "confident" and trace.answer == "red", trace.error
    failed = [e for e in events if isinstance(e, StepFailed)]
    assert [(e.step, e.tries, e.retry) for e in failed] == [
        ("caption", 1, True), ("questioner", 1, True), ("answerer", 1, True)]


@LOOPS
def test_a_step_that_keeps_failing_still_ends_as_infrastructure(red_image, pipeline):
    answerer = FlakyAnswerer("yes")
    answerer.caption = lambda images: (_ for _ in ()).throw(InfrastructureError("always down-ish"))
    agent = IdealAgent(ScriptedChatModel(), answerer, infra_retries=2, pipeline=pipeline, **IDEALGPT_LOOP)
    [trace] = agent.run_batch([Sample(image=red_image, question="What colour?")])
    assert trace.stop_reason == "infrastructure" and trace.answer is None


def test_more_than_26_options_is_a_one_line_input_error():
    choices = [f"option {i}" for i in range(27)]
    with pytest.raises(InputError, match="at most 26 choices"):
        Sample(question="Which one?", choices=choices)
    assert Sample(question="Which one?", choices=choices[:26]).kind == "multiple_choice"


@LOOPS
@pytest.mark.parametrize(("kind", "choices", "reply"), [
    ("multiple_choice", ["dog", "cat"], "Probably a fox"),
    ("yes_no", None, "It is hard to say"),
])
def test_a_direct_reply_naming_no_option_is_no_candidate(red_image, pipeline, kind, choices, reply):
    llm = ScriptedChatModel(replies=[sub_questions("What animal is it?"), verdict("B" if choices else "no", 0.3)])
    agent = IdealAgent(llm, ScriptedAnswerer(reply), max_rounds=1, pipeline=pipeline)
    trace = agent.run(red_image, "Is it a dog or a cat?" if choices else "Is it a dog?", choices=choices, kind=kind)
    assert trace.direct.answer is None and trace.direct.reply == reply
    assert trace.answer in trace.sample.choices and trace.answer_source == "round"


def test_a_trace_without_a_confidence_still_prints():
    trace = Trace(sample=Sample(question="What is it?"), answer="cat", stop_reason="questioner_failed")
    assert str(trace) == "'What is it?' → 'cat' at ? after 0 rounds; questioner_failed"


@LOOPS
def test_every_answer_has_a_confidence_the_prior_when_nothing_was_measured(red_image, pipeline):
    # The default calibration reads the direct answer's token probability; a plain-string
    # answerer gives none, and the questioner fails: the kept direct answer gets the prior.
    llm = ScriptedChatModel(replies=["garbage"] * 3)
    agent = IdealAgent(llm, ScriptedAnswerer("red"), confidence_threshold=0.3, pipeline=pipeline)
    trace = agent.run(red_image, "What colour is the image?")
    assert trace.answer == "red" and trace.answer_source == "direct"
    assert trace.confidence == NO_DATA_PRIOR and trace.direct.calibrated == NO_DATA_PRIOR
    # A prior is not evidence: above the threshold, it still did not stop the loop early.
    assert trace.stop_reason == "questioner_failed"
    assert str(trace).startswith("'What colour is the image?' → 'red' at 0.50 (the direct answer)")


@LOOPS
def test_rounds_print_the_confidence_the_loop_acts_on(red_image, pipeline):
    llm = ScriptedChatModel(replies=[sub_questions("Is it red?"), verdict("red", 0.9)])
    agent = IdealAgent(llm, ScriptedAnswerer("yes"), max_rounds=1, pipeline=pipeline)  # default calibration
    items = list(agent.stream(red_image, "What colour is the image?"))
    direct, round_, trace = items
    assert str(direct) == "Direct answer 'yes' at 0.50 (reply: 'yes')"
    verdict_ = round_.verdict
    assert verdict_.calibrated != verdict_.confidence  # stated 0.9, disagreeing with the direct answer
    assert str(round_) == f"Round 1 (final): 1 sub-question; verdict 'red' at {verdict_.calibrated:.2f}"
    assert f"at {trace.confidence:.2f}" in str(trace)


def test_votes_without_a_temperature_are_refused_before_any_call():
    llm = FakeListChatModel(responses=["never sent"])
    assert "temperature" not in type(llm).model_fields
    answerer = ScriptedAnswerer("red")
    with pytest.raises(InputError, match="--votes 2 needs a reasoner model that can sample"):
        IdealAgent(llm, answerer, votes=2)
    assert answerer.captioned == [] and llm.i == 0
    IdealAgent(llm, answerer)  # without votes it is fine


@LOOPS
def test_events_say_what_happened_in_order(red_image, pipeline):
    llm = ScriptedChatModel(replies=[sub_questions("Is it red?"), verdict("red", 0.9)])
    events = []
    agent = IdealAgent(llm, ScriptedAnswerer("yes"), pipeline=pipeline, calibration="stated")
    agent.run(red_image, "What colour is the image?", callbacks=[events.append])
    assert [type(e) for e in events] == [SampleStarted, DirectAnswered, RoundAsked, RoundAnswered, RoundJudged,
                                         SampleFinished]
    assert all(isinstance(str(e), str) and "\n" not in str(e) for e in events)


@LOOPS
def test_both_loops_give_the_same_traces_with_failures_in_them(pipeline):
    def answer(question: str) -> str:
        if "blue" in question:
            raise ModelOutputError("empty reply")
        return "yes"

    def reply(messages) -> str:
        text = str(messages[-1].content)
        if '"sub_questions"' in str(messages[0].content):
            return sub_questions("Is it blue?" if "blue" in text else "Is it red?")
        return verdict("red", 0.9)

    samples = [Sample(image=Image.new("RGB", (8, 8), c), question=f"Is the picture {c}?", kind="yes_no",
                      id=c) for c in ("red", "blue", "green")]
    traces = IdealAgent(ScriptedChatModel(replies=[reply] * 20), ScriptedAnswerer(answer),
                        pipeline=pipeline).run_batch(samples)
    summary = [(t.sample.id, t.stop_reason, t.answer, t.answer_source) for t in traces]
    assert summary == [("red", "confident", "yes", "direct"), ("blue", "answerer_failed", None, None),
                       ("green", "confident", "yes", "direct")] or all(t.done for t in traces)


SLOW_SERVER = textwrap.dedent("""
    import signal, sys, threading, time
    from PIL import Image
    from idealagent import IdealAgent
    from idealagent.testing import IDEALGPT_LOOP, ScriptedAnswerer, ScriptedChatModel

    class SlowServer(ScriptedChatModel):
        max_concurrency: int = 4
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            print("in flight", flush=True)
            time.sleep(60)  # a server that takes a minute to reply
            return super()._generate(messages, stop, run_manager, **kwargs)

    # Ctrl-C as in a terminal: a process started from a background job inherits SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    agent = IdealAgent(SlowServer(), ScriptedAnswerer("red"), **IDEALGPT_LOOP)
    try:
        agent.run(Image.new("RGB", (8, 8)), "What colour?")
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
""")


def test_ctrl_c_stops_within_about_a_second_whatever_is_in_flight(tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(SLOW_SERVER)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout.readline().strip() == "in flight"
    interrupted = time.perf_counter()
    process.send_signal(signal.SIGINT)
    assert process.stdout.readline().strip() == "interrupted"
    seen = time.perf_counter() - interrupted
    code = process.wait(timeout=30)
    # Before daemon threads, the exit waited for the minute-long reply.
    assert code == 130 and seen < 1.5 and time.perf_counter() - interrupted < 5


@LOOPS
def test_progress_counts_every_sample_in_the_pool_from_its_first_call(red_image, pipeline):
    """eval's "in flight" counts the pool from the start (SampleStarted), not from a sample's
    first reported step, and the model calls made before it (the captions)."""
    from idealagent.evaluation.runner import Progress

    def reply(messages):  # the reasoner's prompt lists the sub-answers; the questioner's does not yet
        return verdict("red", 0.9) if "Sub-questions and answers" in messages[-1].content else sub_questions("Is it red?")

    llm = ScriptedChatModel(replies=[reply] * 10)
    agent = IdealAgent(llm, ScriptedAnswerer("red"), pipeline=pipeline, batch_size=3, **IDEALGPT_LOOP)
    progress = Progress(total=5)
    seen: list[tuple[type, int, int]] = []

    def follow(event):
        progress.observe(event)
        seen.append((type(event), progress.in_flight, progress.calls))

    traces = agent.run_batch([Sample(image=red_image, question=f"Is it red? ({n})") for n in range(5)],
                             callbacks=[follow])
    assert [kind for kind, _, _ in seen[:3]] == [SampleStarted] * 3 and seen[2][1] == 3
    first = next(i for i, (kind, _, _) in enumerate(seen) if kind is RoundAsked)
    assert seen[first][1] == 3 and seen[first][2] >= 2  # the pool, and a caption and a questioner call made
    assert max(count for _, count, _ in seen) == 3 and seen[-1][1] == 0
    assert sum(kind is SampleStarted for kind, _, _ in seen) == 5 and all(t.answer == "red" for t in traces)
