"""The adaptive concurrency limit: halves on 429, grows back, never past its ceiling."""

from __future__ import annotations

import threading
import time

import pytest

from idealagent.errors import InfrastructureError
from idealagent.limits import AdaptiveLimit


def test_a_429_halves_the_limit_once_per_burst_and_successes_grow_it_back():
    limit = AdaptiveLimit(16, cooldown_s=60)
    limit.overloaded()
    limit.overloaded()  # the same burst
    assert limit.limit == 8
    for _ in range(200):
        limit.succeeded()
    assert limit.limit == 16  # back to the ceiling, and no further


def test_the_limit_never_drops_below_one():
    limit = AdaptiveLimit(4, cooldown_s=0)
    for _ in range(10):
        limit.overloaded()
    assert limit.limit == 1


def test_slots_never_exceed_the_current_limit():
    limit = AdaptiveLimit(8, cooldown_s=0)
    limit.overloaded()  # 4 allowed
    now, most, lock = [0], [0], threading.Lock()

    def request():
        with limit.slot():
            with lock:
                now[0] += 1
                most[0] = max(most[0], now[0])
            time.sleep(0.02)
            with lock:
                now[0] -= 1

    threads = [threading.Thread(target=request) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 4 and limit.in_flight == 0


def test_the_endpoints_back_off_on_429_and_recover():
    from PIL import Image

    from idealagent.answerers.openai import OpenAIAnswerer
    from idealagent.llms.openai import make_chat_model
    from tests.openai_stub import Status, StubServer

    with StubServer(lambda body: "red") as stub:
        fast = {"retry_initial_wait": 0.01, "retry_max_wait": 0.02, "max_concurrency": 8}
        answerer = OpenAIAnswerer("vlm", stub.base_url, **fast)
        llm = make_chat_model("llm", stub.base_url, **fast)
        stub.queue(Status(429, retry_after="0"), Status(429, retry_after="0"))
        assert [str(a) for a in answerer.answer([(Image.new("RGB", (4, 4)), "What colour?")])] == ["red"]
        assert answerer._slots.limit < 8  # halved once for the burst, then grown a little
        stub.queue(Status(429, retry_after="0"))
        assert llm.invoke("What colour?").content == "red"
        assert llm._slot().limit < 8
        for _ in range(40):
            llm.invoke("again")
        assert llm._slot().limit == 8


def test_abandoned_requests_free_their_slots_and_are_not_retried():
    limit = AdaptiveLimit(1)
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(5)
        return "late"

    since = limit.generation
    thread = threading.Thread(target=lambda: limit.run(slow, since))
    thread.start()
    started.wait(5)
    assert limit.in_flight == 1
    limit.abandon()  # Ctrl-C: the request is still in flight, but its slot is free
    assert limit.in_flight == 0 and limit.run(lambda: "now") == "now"
    release.set()
    thread.join(5)
    assert limit.in_flight == 0  # its late return does not free a slot a second time
    with pytest.raises(InfrastructureError, match="abandoned"):
        limit.run(lambda: "a retry", since)  # a retry of the abandoned request is not sent


def test_waiting_requests_get_slots_by_priority_then_in_arrival_order():
    from idealagent.limits import priority

    limit = AdaptiveLimit(1)
    order, lock = [], threading.Lock()
    with limit.slot():  # the one slot taken: everyone else waits in line
        def request(name: str, rank: float) -> None:
            with priority(rank), limit.slot():
                with lock:
                    order.append(name)

        threads = []
        for name, rank in [("late-1", 2), ("first", 0), ("late-2", 2), ("second", 1)]:
            thread = threading.Thread(target=request, args=(name, rank))
            thread.start()
            threads.append(thread)
            while len(limit._waiting) < len(threads):  # in line before the next one comes
                time.sleep(0.001)
    for thread in threads:
        thread.join(5)
    assert order == ["first", "second", "late-1", "late-2"] and limit.in_flight == 0


def test_a_request_interrupted_while_waiting_leaves_the_line(monkeypatch):
    import idealagent.limits as limits

    def interrupted(self: limits._Waiter, *args: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C while it waits for a slot

    limit = AdaptiveLimit(1)
    with limit.slot():
        with monkeypatch.context() as patch:
            patch.setattr(threading.Condition, "wait", interrupted)
            with pytest.raises(KeyboardInterrupt), limit.slot():
                pass
        assert limit._waiting == [] and limit.in_flight == 1
    assert limit.in_flight == 0 and limit.run(lambda: "next") == "next"
