"""The response cache: what a rerun reads instead of calling a model, what is never kept, and
entries that stay whole under concurrent writers and torn files."""

from __future__ import annotations

import json
import multiprocessing
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from idealagent.agent import IdealAgent
from idealagent.answerers import Answer
from idealagent.answerers.cached import CachedAnswerer
from idealagent.errors import ModelOutputError
from idealagent.presets import with_response_cache
from idealagent.response_cache import CacheCounts, ResponseCache, request_key
from idealagent.testing import ScriptedAnswerer
from idealagent.trace import Sample


@pytest.fixture
def cache(tmp_path: Path) -> ResponseCache:
    return ResponseCache(tmp_path / "responses")


class Calls:
    """A batched model that records the inputs of every call and replies ``f(input)``."""

    def __init__(self, reply: Any = lambda x: f"reply to {x}") -> None:
        self.reply = reply
        self.batches: list[list[Any]] = []

    def __call__(self, inputs: list[Any]) -> list[Any]:
        self.batches.append(list(inputs))
        return [self.reply(x) for x in inputs]


def through(cache: ResponseCache, keys: list[str | None], inputs: list[Any], model: Calls) -> list[Any]:
    return cache.through(keys, lambda missing: model([inputs[i] for i in missing]),
                         encode=lambda text: text, decode=str)


# -- the store ------------------------------------------------------------------------------------


def test_hits_skip_the_model_and_only_the_misses_go_in_one_batch(cache):
    model = Calls()
    keys = [request_key("m", x) for x in "abc"]
    assert through(cache, keys[:2], ["a", "b"], model) == ["reply to a", "reply to b"]

    assert through(cache, keys, ["a", "b", "c"], model) == ["reply to a", "reply to b", "reply to c"]

    assert model.batches == [["a", "b"], ["c"]]  # the second call sent only the miss
    assert cache.counts == CacheCounts(hits=2, misses=3, stored=3)
    assert cache.counts.line() == "response cache: 2 hits, 3 misses (40% hits)"


def test_uncacheable_requests_and_failures_are_never_stored(cache):
    model = Calls(lambda x: ValueError("no") if x == "bad" else f"reply to {x}")
    keys = [None, request_key("m", "bad"), request_key("m", "ok")]
    for _ in range(2):
        replies = through(cache, keys, ["sampled", "bad", "ok"], model)
        assert replies[0] == "reply to sampled" and isinstance(replies[1], ValueError)

    assert model.batches == [["sampled", "bad", "ok"], ["sampled", "bad"]]
    assert cache.counts == CacheCounts(hits=1, misses=3, stored=1)  # a key of None is neither; a failure is not stored
    assert len(list(cache.folder.rglob("*.json"))) == 1


@pytest.mark.parametrize("damage", [
    lambda text: text[: len(text) // 2],  # torn
    lambda text: "",  # empty
    lambda text: "\x00\xff garbage",  # not JSON
    lambda text: json.dumps({"key": "another key", "value": "x"}),  # another entry's content
    lambda text: json.dumps(["a", "list"]),
])
def test_a_damaged_entry_is_a_miss_and_is_written_again(cache, damage):
    key = request_key("m", "a")
    model = Calls()
    through(cache, [key], ["a"], model)
    path = cache.path(key)
    path.write_text(damage(path.read_text()), encoding="utf-8", errors="surrogateescape")

    assert through(cache, [key], ["a"], model) == ["reply to a"]

    assert len(model.batches) == 2
    assert cache.lookup(key) == "reply to a"  # whole again


def test_an_unwritable_cache_logs_once_and_the_run_goes_on(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = ResponseCache(blocker / "responses")
    model = Calls()

    assert through(cache, [request_key("m", "a"), request_key("m", "b")], ["a", "b"], model) == [
        "reply to a", "reply to b"]
    assert [r.levelname for r in caplog.records] == ["WARNING"]


def _write_many(folder: str, letter: str, keys: list[str]) -> None:
    cache = ResponseCache(folder)
    for _ in range(3):
        for key in keys:
            cache.store(key, letter * 50_000)


def test_processes_writing_the_same_keys_at_once_leave_only_whole_entries(tmp_path):
    keys = [request_key("m", i) for i in range(40)]
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_many, args=(str(tmp_path), letter, keys)) for letter in "ab"]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0

    cache = ResponseCache(tmp_path)
    values = [cache.lookup(key) for key in keys]
    assert all(value in ("a" * 50_000, "b" * 50_000) for value in values)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(f"{k}.json" for k in keys)


# -- answerers ---------------------------------------------------------------------------------


class ScoredAnswerer(ScriptedAnswerer):
    """A scripted answerer that says what identifies it and answers with counts and a probability."""

    def __init__(self, temperature: float = 0.0) -> None:
        super().__init__(lambda question: "red")
        self.temperature = temperature
        self.max_concurrency = 4  # an attribute the wrapper must pass through

    def cache_identity(self) -> dict[str, Any] | None:
        return {"class": "ScoredAnswerer"} if self.temperature == 0 else None

    def answer_each(self, requests):
        self.requests.append([question for _, question in requests])
        return [ModelOutputError("empty") if question == "fail?" else Answer("red", 10, 2, 0.75)
                for _, question in requests]


def test_cached_answers_keep_counts_and_probability_and_same_path_other_pixels_misses(cache, tmp_path):
    path = tmp_path / "image.png"
    Image.new("RGB", (8, 8), "red").save(path)
    answerer = ScoredAnswerer()
    cached = CachedAnswerer(answerer, cache)
    first = cached.answer_each([(Image.open(path), "What colour?"), (Image.open(path), "fail?")])
    again = cached.answer_each([(Image.open(path), "What colour?"), (Image.open(path), "fail?")])

    assert first[0] == again[0] == Answer("red", 10, 2, 0.75)
    assert isinstance(again[1], ModelOutputError)  # a failure is asked again, never kept
    assert answerer.requests == [["What colour?", "fail?"], ["fail?"]]
    assert cached.max_concurrency == 4

    Image.new("RGB", (8, 8), "blue").save(path)  # the same path, other pixels
    cached.answer_each([(Image.open(path), "What colour?")])
    assert answerer.requests[-1] == ["What colour?"]


def test_plain_string_captions_stay_strings_and_sampling_answerers_are_never_cached(cache, red_image):
    answerer = ScoredAnswerer()
    cached = CachedAnswerer(answerer, cache)
    assert cached.caption([red_image]) == cached.caption([red_image]) == ["a test image"]
    assert answerer.captioned == [1]

    sampled = ScoredAnswerer(temperature=0.7)
    wrapped = CachedAnswerer(sampled, cache)
    for _ in range(2):
        wrapped.answer([(red_image, "What colour?")])
    assert len(sampled.requests) == 2


# -- local models and a whole rerun -----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory):
    pytest.importorskip("transformers")
    from idealagent.llms.local import LocalChatModel
    from tests.tiny_models import make_tiny_llama

    return LocalChatModel.from_pretrained(make_tiny_llama(tmp_path_factory.mktemp("llama")), max_new_tokens=12)


@pytest.fixture
def generate_calls(tiny_chat, monkeypatch):
    """The row count of every ``generate`` call of the tiny model."""
    calls: list[int] = []
    generate = tiny_chat.model.generate

    def recording(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return generate(*args, **kwargs)

    monkeypatch.setattr(tiny_chat.model, "generate", recording)
    return calls


CONVERSATIONS = ["What colour is the sky?", "Name a fruit.", "Is the cat on the mat?"]


def test_local_replies_come_back_whole_and_changed_settings_miss(tiny_chat, generate_calls, cache):
    chat = tiny_chat.model_copy(update={"response_cache": cache})
    first = chat.batch(CONVERSATIONS)
    again = chat.batch(CONVERSATIONS)

    assert generate_calls == [3]  # the rerun generated nothing
    for a, b in zip(first, again):
        assert (a.content, a.usage_metadata, a.response_metadata) == (b.content, b.usage_metadata,
                                                                      b.response_metadata)
    assert again[0].response_metadata["logprobs"]["content"]  # what the confidence signals read

    chat.bind(max_new_tokens=5).batch(CONVERSATIONS[:1])  # another token limit
    chat.bind(json_schema={"type": "object", "properties": {"a": {"type": "string"}}}).batch(CONVERSATIONS[:1])
    chat.batch([CONVERSATIONS[0], "A new question?"])  # one hit, one miss: only the miss is generated
    assert generate_calls == [3, 1, 1, 1]


def test_sampled_local_replies_are_never_cached(tiny_chat, generate_calls, cache):
    chat = tiny_chat.model_copy(update={"response_cache": cache})
    for _ in range(2):
        chat.bind(temperature=0.8).batch(CONVERSATIONS[:1])
    chat.model_copy(update={"temperature": 0.8}).batch(CONVERSATIONS[:1])  # as --votes samples

    assert generate_calls == [1, 1, 1]
    assert not list(cache.folder.rglob("*.json")) and cache.counts == CacheCounts()


def test_a_rerun_makes_no_model_call_and_gives_the_same_traces(tiny_chat, generate_calls, cache, red_image):
    def run() -> tuple[list[dict[str, Any]], ScoredAnswerer]:
        answerer = ScoredAnswerer()
        models = with_response_cache({"llm": tiny_chat, "answerer": answerer}, cache)
        agent = IdealAgent(**models, max_rounds=1, attempts=1, confidence_threshold=0.99)
        traces = agent.run_batch([Sample(image=red_image, question="What colour is it?"),
                                   Sample(image=red_image, question="Is it round?")])
        return [_without_timings(t.model_dump(mode="json")) for t in traces], answerer

    first, answerer = run()
    calls = len(generate_calls)
    assert calls > 0 and answerer.requests and answerer.captioned

    again, answerer = run()

    assert len(generate_calls) == calls and answerer.requests == [] and answerer.captioned == []
    assert again == first


def _without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in ("latency_s", "timings")}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


# -- OpenAI-compatible servers -------------------------------------------------------------------


@pytest.fixture
def stub():
    from tests.openai_stub import StubServer

    with StubServer(reply=lambda body: json.dumps({"answer": "red"})) as server:
        yield server


def test_endpoint_replies_at_temperature_0_are_reused_with_their_logprobs(stub, cache):
    from idealagent.llms.openai import make_chat_model

    llm = make_chat_model("stub-llm", stub.base_url, timeout=2.0).model_copy(update={"response_cache": cache})
    schema = {"title": "A", "type": "object", "properties": {"answer": {"type": "string"}}}
    structured = llm.with_structured_output(schema, method="json_schema", include_raw=True)
    first = structured.batch(["What colour?", "What shape?"])
    again = structured.batch(["What colour?", "What shape?"])

    assert len(stub.requests) == 2
    assert [r["parsed"] for r in again] == [r["parsed"] for r in first] == [{"answer": "red"}] * 2
    raw = again[0]["raw"]
    assert raw.response_metadata["logprobs"] == first[0]["raw"].response_metadata["logprobs"] is not None
    assert raw.usage_metadata["output_tokens"] == first[0]["raw"].usage_metadata["output_tokens"] > 0

    llm.batch(["What colour?"])  # no response_format: another request
    llm.bind(max_tokens=7).batch(["What colour?"])
    for _ in range(2):
        llm.model_copy(update={"temperature": 0.7}).batch(["What colour?"])  # sampled: always sent
    assert len(stub.requests) == 6


def test_endpoint_answerer_reruns_send_nothing_and_images_are_keyed_by_pixels(stub, cache):
    from idealagent.answerers.openai import OpenAIAnswerer

    stub.reply = lambda body: "red"
    cached = CachedAnswerer(OpenAIAnswerer("stub-vlm", stub.base_url, timeout=2.0), cache)
    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    first = cached.answer([(red, "What colour?")])
    again = cached.answer([(red.copy(), "What colour?")])  # another object, the same pixels

    assert again == first and first[0].probability is not None and len(stub.requests) == 1
    cached.answer([(blue, "What colour?")])
    assert len(stub.requests) == 2
    sampled = CachedAnswerer(OpenAIAnswerer("stub-vlm", stub.base_url, timeout=2.0, temperature=0.5), cache)
    sampled.answer([(red, "What colour?")])
    assert len(stub.requests) == 3


# -- the command line ----------------------------------------------------------------------------


def test_eval_reruns_from_the_cache_and_says_so(tmp_path, monkeypatch):
    import idealagent.presets
    from idealagent.presets import Preset
    from idealagent.testing import ScriptedChatModel
    from tests import eval_fake_preset
    from tests.test_cli import invoke
    from tests.test_eval_runner import write_fixture

    answerer = ScoredAnswerer()
    build = lambda **_: {"llm": ScriptedChatModel(replies=[eval_fake_preset.reply] * 1000), "answerer": answerer}
    monkeypatch.setitem(idealagent.presets.PRESETS, "cached-fake",
                        Preset("cached-fake", "scripted", build, eval_fake_preset.PRESET.settings))
    data = write_fixture(tmp_path / "data")

    def run(out: str, *extra: str) -> str:
        result = invoke("eval", "jsonl", "--data", str(data), "--out", str(tmp_path / out), "--preset",
                        "cached-fake", "--limit", "6", *extra)
        assert result.exit_code == 0, result.output
        return result.stdout

    first = run("first.jsonl")
    asked = len(answerer.requests)
    second = run("second.jsonl", "--threshold", "0.8")
    assert len(answerer.requests) == asked  # the rerun asked the answerer nothing
    third = run("third.jsonl", "--no-cache")

    # Samples with the same image and question hit already in the first run.
    hits, misses = map(int, re.search(r"response cache: (\d+) hits, (\d+) misses", first).groups())
    assert misses > 0 and asked > 0
    assert f"response cache: {hits + misses} hits, 0 misses (100% hits)" in second
    assert len(answerer.requests) > asked  # without the cache, asked again
    assert "response cache" not in third


def test_a_model_without_a_name_is_never_cached(tiny_chat, generate_calls, cache):
    from idealagent.llms.local import LocalChatModel

    unnamed = LocalChatModel(model=tiny_chat.model, tokenizer=tiny_chat.tokenizer, max_new_tokens=4,
                             response_cache=cache)  # weights from memory: nothing says which
    for _ in range(2):
        unnamed.batch(CONVERSATIONS[:1])
    assert generate_calls == [1, 1] and cache.counts == CacheCounts()
