"""Trustworthy runs: an infrastructure failure (a server down, retries exhausted, Ctrl-C) is
never a result, transient faults cost time and not samples, and every sample gets exactly one
trace whatever fails."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.runnables import RunnableLambda
from PIL import Image

from idealagent import IdealAgent, Sample, Trace
from idealagent.errors import InfrastructureError, ModelOutputError, ServiceDownError
from idealagent.evaluation.results import read_existing
from idealagent.evaluation.runner import run_eval
from idealagent.roles import Questioner
from idealagent.testing import IDEALGPT_LOOP, ScriptedAnswerer, ScriptedChatModel
from tests.conftest import sub_questions, verdict
from tests.openai_stub import Slow, Status, StubServer
from tests.test_cli import invoke
from tests.test_eval_cli import builds  # noqa: F401  (a fixture: the fake-eval preset in this process)
from tests.test_eval_runner import read_lines, write_fixture
from tests.test_openai_backends import scripted_endpoint

ROOT = Path(__file__).resolve().parent.parent
FAKE_CLI = "from tests.eval_fake_preset import register; register(); from idealagent.cli import main; main()"


# -- the fault-injecting server ----------------------------------------------------------------


class Faults:
    """A seeded fault mix in front of ``scripted_endpoint``: 20% 429 with ``Retry-After: 0``,
    10% 500/502/503, 5% replies slower than the client's timeout, the rest answered."""

    def __init__(self, seed: int, slow_s: float) -> None:
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.slow_s = slow_s
        self.injected = 0

    def __call__(self, body: dict):
        with self.lock:
            draw, code = self.random.random(), self.random.choice((500, 502, 503))
            self.injected += draw < 0.35
        if draw < 0.20:
            return Status(429, "slow down", retry_after="0")
        if draw < 0.30:
            return Status(code, "the server hiccupped")
        if draw < 0.35:
            return Slow(self.slow_s, scripted_endpoint(body))
        return scripted_endpoint(body)


def use_server(monkeypatch: pytest.MonkeyPatch, base_url: str, timeout: float = 2.0) -> None:
    """Point the openai preset at one server for every role, with short waits for tests."""
    monkeypatch.setenv("IDEALAGENT_LLM_BASE_URL", base_url)
    monkeypatch.setenv("IDEALAGENT_LLM_MODEL", "stub-llm")
    monkeypatch.setenv("IDEALAGENT_LLM_TIMEOUT", str(timeout))
    monkeypatch.setenv("IDEALAGENT_LLM_RETRY_WAIT", "0.02")
    for name in ("IDEALAGENT_VLM_BASE_URL", "IDEALAGENT_VLM_MODEL", "IDEALAGENT_LLM_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def assert_stops_in_one_line(result, exit_code: int, *fragments: str) -> None:
    """One ``error:`` line saying all of ``fragments``, no traceback; eval's progress lines
    (loading, running) may stand before it."""
    assert result.exit_code == exit_code, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and all(f in errors[0] for f in fragments), result.stderr
    assert "Traceback" not in result.stderr and "warning:" not in result.stderr, result.stderr


def eval_openai(data: Path, out: Path, *extra: str):
    return invoke("eval", "jsonl", "--data", str(data), "--preset", "openai", "--out", str(out),
                  "--batch-size", "16", "--calibration", "stated", *extra)


@pytest.mark.parametrize("seed", range(5))
def test_transient_faults_cost_time_not_samples(seed, tmp_path, monkeypatch):
    data, out = write_fixture(tmp_path / "data", 40), tmp_path / "r.jsonl"
    faults = Faults(seed, slow_s=0.3)
    with StubServer(faults) as stub:
        use_server(monkeypatch, stub.base_url, timeout=0.15)
        result = eval_openai(data, out)
    assert result.exit_code == 0, result.output
    _, rows = read_lines(out)
    assert sorted(row["id"] for row in rows) == [f"q{n:02d}" for n in range(40)]
    assert all(row["error"] is None and row["prediction"] is not None for row in rows)
    assert all(row["baseline"]["error"] is None for row in rows)
    assert faults.injected > 50  # the faults really happened


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_dead_server_stops_the_run_in_one_line_and_the_rerun_completes(tmp_path, monkeypatch):
    data, out = write_fixture(tmp_path / "data", 12), tmp_path / "r.jsonl"
    port = free_port()  # nothing listens there yet
    use_server(monkeypatch, f"http://127.0.0.1:{port}/v1")
    started = time.perf_counter()
    dead = eval_openai(data, out)
    assert_stops_in_one_line(dead, 1, "cannot connect", "run the same command again to resume")
    assert time.perf_counter() - started < 20
    assert read_existing(out).done == {}  # no sample was scored
    with StubServer(scripted_endpoint, port=port):
        rerun = eval_openai(data, out)
    assert rerun.exit_code == 0, rerun.output
    _, rows = read_lines(out)
    assert sorted(row["id"] for row in rows) == [f"q{n:02d}" for n in range(12)]
    assert all(row["error"] is None and row["score"] == 1.0 for row in rows)


def test_a_refused_key_on_the_llm_is_not_scored_as_wrong_answers(tmp_path, monkeypatch):
    data, out = write_fixture(tmp_path / "data", 6), tmp_path / "r.jsonl"

    def refuse_the_llm(body):
        return Status(401, "invalid api key") if body.get("response_format") else scripted_endpoint(body)

    with StubServer(refuse_the_llm) as stub:
        use_server(monkeypatch, stub.base_url)
        result = eval_openai(data, out)
    assert_stops_in_one_line(result, 1, "HTTP 401", "API key was refused")
    assert read_existing(out).done == {}


# -- the agent: in-run retries, the down detector, one trace per sample ------------------------


def replies_by_content(messages) -> str:
    """The questioner asks one question; the reasoner says the main question's last word."""
    system, last = str(messages[0].content), str(messages[-1].content)
    if '"sub_questions"' in system:
        return sub_questions("What is in the picture?")
    return verdict(last.split("Main question: ")[-1].split("\n")[0].split()[-1].rstrip("?"), 0.9)


def colour_samples(*colours: str) -> list[Sample]:
    return [Sample(image=Image.new("RGB", (8, 8), c), question=f"Is it {c}?", id=f"{c}{i}")
            for i, c in enumerate(colours)]


class FlakyAnswerer(ScriptedAnswerer):
    """Fails on the infrastructure for questions about ``colour``, ``times`` times in all."""

    def __init__(self, colour: str, times: int) -> None:
        super().__init__("yes")
        self.colour, self.left = colour, times

    def answer(self, requests):
        if self.left and any(self.colour in str(image.getpixel((0, 0))) for image, _ in requests):
            self.left -= 1
            raise InfrastructureError("HTTP 503 after 5 tries; the server is overloaded or failing")
        return super().answer(requests)


def red_pixel_answerer(times: int) -> FlakyAnswerer:
    return FlakyAnswerer(str((255, 0, 0)), times)


def test_a_step_the_infrastructure_failed_is_tried_again_later_in_the_run():
    answerer = red_pixel_answerer(times=2)
    agent = IdealAgent(ScriptedChatModel(replies=[replies_by_content] * 50), answerer, max_rounds=2, **IDEALGPT_LOOP)
    red, blue = agent.run_batch(colour_samples("red", "blue"))
    assert (red.stop_reason, red.answer) == ("confident", "red") and red.error is None
    assert (blue.stop_reason, blue.answer) == ("confident", "blue")
    assert len(red.rounds) == 1 and red.rounds[0].sub_qas[0].answer == "yes"


def test_a_sample_the_infrastructure_keeps_failing_ends_without_an_answer():
    agent = IdealAgent(ScriptedChatModel(replies=[replies_by_content] * 50), red_pixel_answerer(times=99),
                       **IDEALGPT_LOOP)
    red, blue = agent.run_batch(colour_samples("red", "blue"))
    assert red.stop_reason == "infrastructure" and red.answer is None and "HTTP 503" in red.error
    assert blue.stop_reason == "confident"
    with pytest.raises(InfrastructureError, match="HTTP 503"):  # a single run raises: no result
        agent.run(Image.new("RGB", (8, 8), "red"), "Is it red?")


def test_many_requests_failing_in_a_row_mean_the_service_is_down():
    class Overloaded(ScriptedAnswerer):
        def answer(self, requests):
            self.requests.append([q for _, q in requests])
            raise InfrastructureError("HTTP 503 after 5 tries")

    answerer = Overloaded()
    agent = IdealAgent(ScriptedChatModel(replies=[replies_by_content] * 200), answerer, batch_size=4)
    with pytest.raises(ServiceDownError, match="requests in a row failed"):
        agent.run_batch(colour_samples(*["red", "green", "blue", "white", "black"] * 4))
    assert sum(map(len, answerer.requests)) < 40  # it stopped early, not after every retry


def test_a_refused_key_at_the_questioner_stops_the_run_instead_of_failing_the_sample():
    def refused(_messages):
        raise ServiceDownError("endpoint http://llm/v1: HTTP 401, the API key was refused; check the key")

    agent = IdealAgent(ScriptedChatModel(replies=[refused] * 10), ScriptedAnswerer("yes"))
    with pytest.raises(ServiceDownError, match="HTTP 401"):
        agent.run_batch(colour_samples("red", "blue"))


def test_a_plain_chat_openai_that_is_refused_stops_the_run(tmp_path):
    from langchain_openai import ChatOpenAI

    with StubServer(lambda body: Status(401, "bad key")) as stub:
        llm = ChatOpenAI(model="m", base_url=stub.base_url, api_key="k", max_retries=0)
        agent = IdealAgent(llm, ScriptedAnswerer("yes"))
        with pytest.raises(ServiceDownError, match="AuthenticationError"):
            agent.run(Image.new("RGB", (8, 8)), "Is it red?")
        assert len(stub.requests) == 1


def test_ctrl_c_inside_a_langchain_batch_is_raised_not_taken_for_a_reply():
    class Interrupted(ScriptedChatModel):
        def with_structured_output(self, schema, **kwargs):
            def interrupt(_):
                raise KeyboardInterrupt

            return RunnableLambda(interrupt) | RunnableLambda(lambda x: x)  # a RunnableSequence

    traces = [Trace(sample=Sample(image=None, question=f"Is it {c}?")) for c in ("red", "blue")]
    with pytest.raises(KeyboardInterrupt):
        Questioner(Interrupted()).ask(traces)


FAILURES = ("none", "image", "caption", "answer", "answer_infra_once", "answer_infra_always",
            "questioner_garbage", "questioner_infra_once", "reasoner_garbage", "reasoner_infra_always")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=st.lists(st.sampled_from(FAILURES), min_size=1, max_size=9), batch_size=st.integers(1, 4),
       whole_batch=st.booleans())
def test_one_trace_per_sample_in_input_order_for_any_failure_pattern(plan, batch_size, whole_batch, tmp_path):
    """Each sample fails (or not) in its own way; ``whole_batch`` makes every batched answerer
    call of more than one request raise, so the agent must isolate the samples itself."""
    seen: dict[tuple[str, str], int] = {}

    def failure_of(text: str) -> str:
        return next(f for f in FAILURES if f"{f} sample" in text) if " sample" in text else "none"

    def once(key: tuple[str, str]) -> bool:
        seen[key] = seen.get(key, 0) + 1
        return seen[key] == 1

    def llm_reply(messages) -> str:
        system, last = str(messages[0].content), str(messages[-1].content)
        asked = [str(m.content) for m in messages if "Main question: " in str(m.content)][-1]  # not a repair turn
        failure = failure_of(asked.split("Main question: ")[-1].split("\n")[0])
        if '"sub_questions"' in system:
            if failure == "questioner_garbage":
                return "{}"
            if failure == "questioner_infra_once" and once((failure, last)):
                raise InfrastructureError("HTTP 429 after 5 tries")
            return sub_questions("What colour is it?")
        if failure == "reasoner_garbage":
            return "hmm"
        if failure == "reasoner_infra_always":
            raise InfrastructureError("timed out after 5 tries")
        return verdict("red", 0.9)

    class Answerer(ScriptedAnswerer):
        def caption(self, images):
            if whole_batch and len(images) > 1:
                raise RuntimeError("the batch broke")
            if any(image.size == (9, 9) for image in images):
                raise ModelOutputError("the caption came back empty")
            return super().caption(images)

        def answer(self, requests):
            if whole_batch and len(requests) > 1:
                raise RuntimeError("the batch broke")
            for image, _ in requests:
                kind = FAILURES[image.size[0] - 10] if image.size[0] >= 10 else "none"
                if kind == "answer":
                    raise ModelOutputError("no answer in the reply")
                if kind == "answer_infra_always" or (kind == "answer_infra_once" and once((kind, str(id(image))))):
                    raise InfrastructureError("HTTP 503 after 5 tries")
            return super().answer(requests)

    samples = []
    for i, failure in enumerate(plan):
        size = 9 if failure == "caption" else 10 + FAILURES.index(failure)
        image = str(tmp_path / "missing.png") if failure == "image" else Image.new("RGB", (size, size))
        samples.append(Sample(image=image, question=f"Is the {failure} sample {i} red?", id=str(i)))
    def agent() -> IdealAgent:
        # down_after: this test is about isolation, not about declaring the service down
        return IdealAgent(ScriptedChatModel(replies=[llm_reply] * 1000), Answerer("red"), max_rounds=2,
                          batch_size=batch_size, attempts=2, down_after=100, **IDEALGPT_LOOP)

    traces = agent().run_batch(samples)
    assert [t.sample.id for t in traces] == [s.id for s in samples]
    streamed = list(agent().iter_batch(samples))
    assert sorted(t.sample.id for t in streamed) == sorted(s.id for s in samples)
    expected = {"none": "confident", "image": "error", "caption": "error", "answer": "answerer_failed",
                "answer_infra_once": "confident", "answer_infra_always": "infrastructure",
                "questioner_garbage": "questioner_failed", "questioner_infra_once": "confident",
                "reasoner_garbage": "reasoner_failed", "reasoner_infra_always": "infrastructure"}
    for failure, trace in zip(plan, traces):
        assert trace.stop_reason == expected[failure], (failure, trace.stop_reason, trace.error)
        assert (trace.answer == "red") == (expected[failure] == "confident")


# -- the runner: infrastructure failures are not written, and the rerun retries them ---------


def test_the_runner_leaves_infrastructure_failures_to_the_rerun(tmp_path):
    data, out = write_fixture(tmp_path / "data", 6), tmp_path / "r.jsonl"

    def agent(answerer):
        return IdealAgent(ScriptedChatModel(replies=[replies_by_content] * 200), answerer, max_rounds=1,
                          **IDEALGPT_LOOP)

    first = run_eval("jsonl", data, out=out, agent=agent(red_pixel_answerer(times=99)), preset="scripted")
    rows = read_lines(out)[1]
    red_ids = {f"q{n:02d}" for n in range(6) if n % 3 == 0}  # img0.png is the red one
    assert {row["id"] for row in rows} == {f"q{n:02d}" for n in range(6)} - red_ids
    assert first.unfinished == len(red_ids) and first.failures == 0
    second = run_eval("jsonl", data, out=out, agent=agent(ScriptedAnswerer("yes")), preset="scripted")
    assert second.new == len(red_ids) and second.unfinished == 0
    assert sorted(row["id"] for row in read_lines(out)[1]) == [f"q{n:02d}" for n in range(6)]


# -- Ctrl-C -------------------------------------------------------------------------------------


def fake_cli(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", FAKE_CLI, *args], cwd=ROOT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


@pytest.mark.parametrize("phase", ["FAKE_EVAL_ASK_DELAY", "FAKE_EVAL_ANSWER_DELAY", "FAKE_EVAL_DELAY"])
def test_ctrl_c_stops_eval_keeping_finished_samples_and_the_rerun_resumes(phase, tmp_path, builds):  # noqa: F811
    data, out = write_fixture(tmp_path / "data", 12), tmp_path / "r.jsonl"
    args = ("eval", "jsonl", "--data", str(data), "--out", str(out), "--preset", "fake-eval", "--batch-size", "2")
    process = fake_cli(*args, env={phase: "0.3"})
    try:
        wait_for(lambda: out.exists() and out.read_bytes().count(b"\n") >= 3)  # the header and 2 samples
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    [error] = [line for line in stderr.splitlines() if line.startswith("error:")]
    # What was kept: the finished samples, and what the ones in flight had cost (the fake
    # models are not cacheable, so none of that is in the response cache).
    assert re.fullmatch(rf"error: interrupted; \d+ samples? finished by this run (is|are) kept in {re.escape(str(out))}"
                        r"(; \d+ samples? in flight had made \d+ model calls?, none of them kept in the response "
                        r"cache)?; run the same command again to resume", error), error
    assert "Traceback" not in stderr
    kept = read_existing(out)
    assert 2 <= len(kept.done) < 12 and all(not done.failed for done in kept.done.values())
    rerun = invoke(*args)  # in this process: the run file alone carries what was kept
    assert rerun.exit_code == 0, rerun.output
    _, rows = read_lines(out)
    assert sorted(row["id"] for row in rows) == [f"q{n:02d}" for n in range(12)]
    assert all(row["error"] is None for row in rows)


def started_thinking(process: subprocess.Popen, marker: Path) -> None:
    """Wait until the fake model has started its slow step (it touches ``marker``)."""
    wait_for(lambda: marker.exists() or process.poll() is not None)
    assert process.poll() is None, process.stderr.read()
    time.sleep(0.2)  # well inside the model's sleep


@pytest.mark.parametrize("phase", ["FAKE_EVAL_ASK_DELAY", "FAKE_EVAL_DELAY"])
def test_ctrl_c_in_ask_prints_one_line_and_exits_130(phase, tmp_path):
    image = tmp_path / "red.png"
    Image.new("RGB", (8, 8), "red").save(image)
    marker = tmp_path / "started"
    process = fake_cli("ask", str(image), "What colour is item 2?", "--preset", "fake-eval",
                       env={phase: "30", "FAKE_EVAL_STARTED": str(marker)})
    try:
        started_thinking(process, marker)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130
    assert stderr.strip().splitlines()[-1] == "error: interrupted" and "Traceback" not in stderr


def test_ctrl_c_in_chat_returns_to_the_prompt_and_end_of_input_ends_it(tmp_path):
    image = tmp_path / "red.png"
    Image.new("RGB", (8, 8), "red").save(image)
    marker = tmp_path / "started"
    process = fake_cli("chat", str(image), "--preset", "fake-eval",
                       env={"FAKE_EVAL_DELAY": "3", "FAKE_EVAL_STARTED": str(marker)})
    try:
        process.stdin.write("What colour is item 2?\n")
        process.stdin.flush()
        started_thinking(process, marker)
        process.send_signal(signal.SIGINT)  # during the reasoner's reply
        # The second question, then the end of input.
        stdout, stderr = process.communicate("What colour is item 4?\n", timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "error: interrupted" in stderr and "Traceback" not in stderr
    assert stdout.count("item 4") >= 1 and "red" in stdout.split("item 4", 1)[1]
