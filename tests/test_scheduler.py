"""The pipelined loop: the same traces as the lock-step loop, each model under its own limit,
and requests of different samples in different steps in flight together."""

from __future__ import annotations

import re
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import PrivateAttr

from idealagent import IdealAgent, Sample, Trace
from idealagent.errors import InfrastructureError
from idealagent.scheduler import Lane, Pipeline, Queue
from idealagent.testing import IDEALGPT_LOOP, ScriptedAnswerer, ScriptedChatModel
from tests.conftest import sub_questions, verdict

COLOURS = ("red", "blue", "green", "white", "black", "grey")


def by_content(messages) -> str:
    """Replies that depend only on the conversation: a colour's name says how many rounds its
    sample needs (its length mod 3 plus one), so samples finish at different times."""
    system, last = str(messages[0].content), str(messages[-1].content)
    asked = [str(m.content) for m in messages if "Main question: " in str(m.content)][-1]
    colour = asked.split("Main question: ")[-1].split("\n")[0].split()[-1].rstrip("?")
    rounds_seen = asked.count(" Answer: ")
    if '"sub_questions"' in system:
        return sub_questions(f"Is it {colour} {rounds_seen}?", f"Is it bright {rounds_seen}?")
    needed = len(colour) % 3 + 1
    return verdict(colour, 0.9 if rounds_seen >= needed * 2 else 0.3)


class ServerChatModel(ScriptedChatModel):
    """A scripted model that says it is a server: the pipeline sends it one sample a call, as
    many at once as are ready, and it holds them to ``max_concurrency`` itself, as endpoint
    models do; it records how many were in flight together."""

    max_concurrency: int = 3
    latency: float = 0.0
    most: int = 0
    _now: int = PrivateAttr(default=0)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _slots: threading.Semaphore = PrivateAttr(default_factory=lambda: threading.Semaphore(3))

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        with self._slots:
            return self._counted(messages, stop, run_manager, **kwargs)

    def _counted(self, messages, stop=None, run_manager=None, **kwargs):
        with self._lock:
            self._now += 1
            self.most = max(self.most, self._now)
        try:
            time.sleep(self.latency)
            return super()._generate(messages, stop, run_manager, **kwargs)
        finally:
            with self._lock:
                self._now -= 1


class ServerAnswerer(ScriptedAnswerer):
    max_concurrency = 2

    def __init__(self, *args, latency: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.latency, self.now, self.most, self.lock = latency, 0, 0, threading.Lock()
        self.slots = threading.Semaphore(self.max_concurrency)

    def answer(self, requests):
        with self.slots:
            return self._counted(requests)

    def _counted(self, requests):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            time.sleep(self.latency)
            if any("grey 0" in q for _, q in requests):
                raise InfrastructureError("HTTP 503 after 5 tries")  # a transient fault, once per retry
            return super().answer(requests)
        finally:
            with self.lock:
                self.now -= 1


def samples_of(colours) -> list[Sample]:
    return [Sample(image=Image.new("RGB", (8, 8), c), question=f"What colour is it, {c}?", id=f"{i}-{c}")
            for i, c in enumerate(colours)]


def comparable(trace: Trace) -> dict:
    dump = trace.model_dump(exclude={"timings", "latency_s", "sample"})
    dump["settings"].pop("pipeline")
    return dump


def agent(kind: str, batch_size: int, **settings) -> IdealAgent:
    answer = lambda q: q.split()[2]  # noqa: E731 - "Is it red 0?" -> "red"
    if kind == "server":
        return IdealAgent(ServerChatModel(replies=[by_content] * 500), ServerAnswerer(answer), max_rounds=3, **IDEALGPT_LOOP,
                          batch_size=batch_size, **settings)
    return IdealAgent(ScriptedChatModel(replies=[by_content] * 500), ScriptedAnswerer(answer), max_rounds=3, **IDEALGPT_LOOP,
                      batch_size=batch_size, **settings)


@settings(max_examples=15, deadline=None)
@given(colours=st.lists(st.sampled_from(COLOURS), min_size=1, max_size=8), batch_size=st.integers(1, 5),
       kind=st.sampled_from(["local", "server"]))
def test_the_pipeline_gives_the_lock_step_traces(colours, batch_size, kind):
    samples = samples_of(colours)
    lock_step = agent(kind, batch_size, pipeline=False).run_batch(samples)
    pipelined = agent(kind, batch_size).run_batch(samples)
    assert [t.sample.id for t in pipelined] == [s.id for s in samples]
    assert [comparable(t) for t in pipelined] == [comparable(t) for t in lock_step]
    streamed = sorted(agent(kind, batch_size).iter_batch(samples), key=lambda t: t.sample.id)
    assert [comparable(t) for t in streamed] == [comparable(t) for t in sorted(lock_step, key=lambda t: t.sample.id)]


def test_one_local_model_gets_the_lock_step_batches():
    samples = samples_of(["red", "blue", "green", "white"])
    llms = []
    for pipeline in (False, True):
        llm = ScriptedChatModel(replies=[by_content] * 100)
        IdealAgent(llm, ScriptedAnswerer("yes"), max_rounds=3, batch_size=3, pipeline=pipeline, **IDEALGPT_LOOP).run_batch(samples)
        llms.append(llm.batches)
    assert llms[0] == llms[1]


def test_servers_get_requests_of_different_steps_at_once_within_their_limits():
    llm = ServerChatModel(replies=[by_content] * 500, latency=0.02)
    answerer = ServerAnswerer(lambda q: q.split()[2], latency=0.02)
    traces = IdealAgent(llm, answerer, max_rounds=3, batch_size=8, **IDEALGPT_LOOP).run_batch(samples_of(COLOURS[:5] * 2))
    assert all(t.stop_reason in ("confident", "max_rounds") for t in traces)
    assert llm.most == 3 and answerer.most == 2  # each model kept full, and never past its limit
    assert llm.batches and max(llm.batches) == 1  # one sample's request a call: each goes out alone


def test_a_transient_fault_is_retried_in_the_pipeline_too():
    traces = agent("server", 4).run_batch(samples_of(["grey", "red"]))
    grey = traces[0]
    assert grey.stop_reason == "infrastructure" and grey.answer is None  # "grey 0" always fails
    assert traces[1].stop_reason == "confident"


def test_stream_yields_rounds_as_they_complete_when_pipelined():
    steps = list(agent("server", 1).stream(Image.new("RGB", (8, 8), "green"), "What colour is it, green?",
                                             partial=False))
    rounds, trace = steps[:-1], steps[-1]
    assert [r.index for r in rounds] == [1, 2, 3] and trace.answer == "green"


def test_the_pipeline_runs_a_server_call_and_a_local_call_at_once():
    started: dict[str, float] = {}

    def slow(name):
        def call(jobs):
            started[name] = time.perf_counter()
            time.sleep(0.2)
            return [name] * len(jobs)
        return call

    lanes = [Lane("server", concurrency=2), Lane("local", max_batch=8, local=True)]
    steps = {"remote": Queue("server", slow("remote")), "here": Queue("local", slow("here"))}
    began = time.perf_counter()
    with Pipeline(lanes, steps) as pipeline:
        for job in range(3):
            pipeline.put("remote", job)
        pipeline.put("here", 9)
        done = [pipeline.next() for _ in range(4)]
    assert sorted(len(d.jobs) for d in done) == [1, 1, 1, 1]
    assert time.perf_counter() - began < 0.55  # 2 remote + local together, then the third remote
    assert abs(started["here"] - began) < 0.1


def test_bench_runs_the_openai_preset_against_a_server_in_both_loops(monkeypatch):
    """`idealagent bench --preset openai` against any OpenAI-compatible server (here the
    latency stub of eval/, with no latency), pipelined and lock-step."""
    import json

    from eval.latency_stub import LatencyStub
    from tests.test_cli import invoke

    with LatencyStub(median=0.0, sigma=0.0, unconfident=0.5) as stub:
        monkeypatch.setenv("IDEALAGENT_LLM_BASE_URL", stub.base_url)
        monkeypatch.setenv("IDEALAGENT_LLM_MODEL", "stub")
        for name in ("IDEALAGENT_VLM_BASE_URL", "IDEALAGENT_VLM_MODEL"):
            monkeypatch.delenv(name, raising=False)
        lines = []
        for loop in ([], ["--lock-step"]):
            result = invoke("bench", "--preset", "openai", "--samples", "6", "-b", "4", "--mode", "agent",
                            "--json", *loop)
            assert result.exit_code == 0, result.output
            lines += [json.loads(line) for line in result.stdout.splitlines()]
        assert stub.stats()["by_role"]["vlm"] > 0 and stub.stats()["by_role"]["reasoner"] > 0
    assert [line["loop"] for line in lines] == ["pipelined", "lock-step"]
    assert all(line["failures"] == 0 and line["samples"] == 6 for line in lines)
    assert lines[0]["mean_rounds"] == lines[1]["mean_rounds"] > 1  # same work, unconfident verdicts


def test_a_server_call_runs_with_its_priority_and_the_drain_puts_samples_furthest_behind_first():
    from idealagent.limits import _PRIORITY
    from idealagent.machine import Job, Step, steps_done

    seen: list[tuple[str, float]] = []
    lanes = [Lane("server", concurrency=4)]
    steps = {"a": Queue("server", lambda jobs: [seen.append((job, _PRIORITY.get())) for job in jobs])}
    with Pipeline(lanes, steps, priority=lambda step, jobs: {"x": 2, "y": 0}[jobs[0]]) as pipeline:
        pipeline.put("a", "x")
        pipeline.put("a", "y")
        pipeline.next(), pipeline.next()
    assert sorted(seen) == [("x", 2), ("y", 0)]  # set on the worker thread, around the call
    # The agent's order while draining: fewer steps done (more ahead) first.
    job = Job(Trace(sample=Sample(image=None, question="q")))
    counts = []
    for step in (Step.CAPTION, Step.DIRECT, Step.ASK):
        job.step = step
        counts.append(steps_done(job))
    assert counts == [0, 1, 2]
