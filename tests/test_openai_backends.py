"""The OpenAI-compatible endpoint backends against a stub server: what goes over the wire,
retries, timeouts, errors, the concurrency cap, and a whole IdealAgent run."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import random
import time
from collections.abc import Iterator

import pytest
from PIL import Image, ImageChops

from idealagent import IdealAgent, Sample
from idealagent.answerers import Answerer
from idealagent.answerers.openai import OpenAIAnswerer
from idealagent.errors import InfrastructureError, InputError, ModelOutputError, ServiceDownError
from idealagent.endpoints import Endpoint, RetryPolicy, endpoint_from_env
from idealagent.llms.openai import EndpointChatModel, chat_model_from_env, make_chat_model
from idealagent.presets import build_openai_preset
from idealagent.roles import Questioner
from idealagent.testing import IDEALGPT_LOOP, ScriptedChatModel
from tests.openai_stub import (
    EMPTY_CONTENT,
    NO_CHOICES,
    NotJSON,
    Slow,
    Status,
    StubServer,
    count_tokens,
    text_of,
)


@pytest.fixture
def openai_stub() -> Iterator[StubServer]:
    """A running stub server, stopped after the test."""
    with StubServer() as stub:
        yield stub


FAST = {"retry_initial_wait": 0.01, "retry_max_wait": 0.02}  # backoff shrunk for tests


def answerer_for(stub: StubServer, **options) -> OpenAIAnswerer:
    return OpenAIAnswerer("stub-vlm", stub.base_url, **{"timeout": 2.0, "attempts": 4, **FAST, **options})


def chat_model_for(stub: StubServer, **options) -> EndpointChatModel:
    return make_chat_model("stub-llm", stub.base_url, **{"timeout": 2.0, "attempts": 4, **FAST, **options})


def call_answerer(stub: StubServer, **options) -> str:
    return str(answerer_for(stub, **options).answer([(Image.new("RGB", (4, 4)), "What is it?")])[0])


def call_chat_model(stub: StubServer, **options) -> str:
    return chat_model_for(stub, **options).invoke("What is it?").content


BACKENDS = [pytest.param(call_answerer, id="answerer"), pytest.param(call_chat_model, id="chat_model")]


def decode(uri: str) -> Image.Image:
    header, data = uri.split(",", 1)
    assert header in ("data:image/png;base64", "data:image/jpeg;base64")
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def image_parts(body: dict) -> list[dict]:
    return [p for m in body["messages"] if isinstance(m["content"], list) for p in m["content"]]


# -- the answerer on the wire --------------------------------------------------------------------


def test_image_parts_are_data_uris_of_the_same_pixels_each_image_encoded_once(openai_stub, monkeypatch):
    import idealagent.answerers.openai as module

    encoded, encode = [], module.encode_image
    monkeypatch.setattr(module, "encode_image", lambda image, *a: encoded.append(image) or encode(image, "png"))
    noise = Image.frombytes("RGB", (16, 12), random.Random(0).randbytes(16 * 12 * 3))
    red = Image.new("RGB", (9, 7), (200, 10, 10))
    openai_stub.reply = lambda body: "Red."
    answerer = answerer_for(openai_stub)
    assert isinstance(answerer, Answerer)
    answers = answerer.answer([(noise, "What is shown?"), (red, "What colour is it?"), (noise, "Is it busy?")])

    assert list(map(str, answers)) == ["Red", "Red", "Red"]
    assert [id(image) for image in encoded] == [id(noise), id(red)]  # once per distinct image
    by_question = {text_of(body).splitlines()[0]: body for body in openai_stub.requests}
    for question, source in [("What is shown?", noise), ("What colour is it?", red), ("Is it busy?", noise)]:
        body = by_question[question]
        image_part, text_part = image_parts(body)
        assert image_part["type"] == "image_url" and text_part["type"] == "text"
        assert list(decode(image_part["image_url"]["url"]).getdata()) == list(source.getdata())
        assert text_part["text"] == f"{question}\nAnswer the question with a single word or phrase."
        assert body["model"] == "stub-vlm" and body["max_tokens"] == 32 and body["temperature"] == 0


def test_jpeg_by_default_close_to_the_source_and_captions_ask_for_a_sentence(openai_stub):
    photo = Image.linear_gradient("L").convert("RGB").resize((64, 48))
    openai_stub.reply = lambda body: "  A grey gradient\n on a plain background. "
    assert list(map(str, answerer_for(openai_stub).caption([photo]))) == ["A grey gradient on a plain background."]
    body = openai_stub.requests[0]
    image_part, text_part = image_parts(body)
    received = decode(image_part["image_url"]["url"])
    assert image_part["image_url"]["url"].startswith("data:image/jpeg;base64,") and received.size == photo.size
    assert max(ImageChops.difference(received, photo).getextrema()[0]) < 12  # lossy, but close
    assert text_part["text"] == "Describe the image in one sentence." and body["max_tokens"] == 64


def test_answers_are_short_and_in_input_order_under_concurrency(openai_stub):
    def reply(body):
        time.sleep(random.random() * 0.03)  # finish out of order
        number = text_of(body).split()[4].rstrip("?")
        return f"Answer: {number} apples.\nThey are on a table."

    openai_stub.reply = reply
    requests = [(Image.new("RGB", (4, 4)), f"How many in box {i}?") for i in range(10)]
    answers = answerer_for(openai_stub, max_concurrency=4).answer(requests)
    assert list(map(str, answers)) == [f"{i} apples" for i in range(10)]


# -- retries, timeouts and errors (both backends) -----------------------------------------------


@pytest.mark.parametrize("call", BACKENDS)
def test_rate_limits_and_server_errors_are_retried(openai_stub, call):
    openai_stub.reply = lambda body: "blue"
    openai_stub.queue(Status(429), Status(500), Status(503))
    assert call(openai_stub).lower() == "blue"
    assert len(openai_stub.requests) == 4


@pytest.mark.parametrize("call", BACKENDS)
def test_a_retry_after_header_sets_the_wait(openai_stub, call):
    openai_stub.reply = lambda body: "blue"
    openai_stub.queue(Status(429, retry_after="0.4"))
    started = time.perf_counter()
    assert call(openai_stub, retry_max_wait=2.0).lower() == "blue"  # the backoff alone waits ~0.01 s
    assert 0.4 <= time.perf_counter() - started < 1.5 and len(openai_stub.requests) == 2
    openai_stub.queue(Status(429, retry_after="3600"))  # capped by the policy's max_wait
    started = time.perf_counter()
    assert call(openai_stub, retry_max_wait=0.2).lower() == "blue"
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("call", BACKENDS)
def test_timeouts_fire_and_are_retried(openai_stub, call):
    openai_stub.reply = lambda body: "green"
    openai_stub.queue(Slow(1.5))
    started = time.perf_counter()
    assert call(openai_stub, timeout=0.3).lower() == "green"
    assert len(openai_stub.requests) == 2 and 0.3 <= time.perf_counter() - started < 1.5


@pytest.mark.parametrize("call", BACKENDS)
@pytest.mark.parametrize(
    ("status", "error", "says"),
    [(400, ModelOutputError, "rejected with HTTP 400: bad schema"), (401, ServiceDownError, "API key was refused"),
     (404, ServiceDownError, "check the model name")],
)
def test_client_errors_fail_at_once_with_one_line(openai_stub, call, status, error, says):
    openai_stub.queue(Status(status, "bad schema\nsee docs"))
    with pytest.raises(error) as caught:
        call(openai_stub)
    assert says in str(caught.value) and "\n" not in str(caught.value)
    assert len(openai_stub.requests) == 1  # not retried


@pytest.mark.parametrize("call", BACKENDS)
def test_retries_give_up_with_the_status_after_the_last_try(openai_stub, call):
    openai_stub.queue(*[Status(503)] * 2)
    with pytest.raises(InfrastructureError, match="HTTP 503 after 2 tries"):
        call(openai_stub, attempts=2)
    assert len(openai_stub.requests) == 2


@pytest.mark.parametrize("call", BACKENDS)
@pytest.mark.parametrize(
    ("behaviour", "says"),
    [(NotJSON(), "not JSON: <html>"), (NotJSON("application/json", "{truncated"), "not JSON"),
     (NO_CHOICES, "no choices"), (EMPTY_CONTENT, "reply is empty")],
    ids=["html", "broken-json", "no-choices", "empty-content"],
)
def test_malformed_replies_give_clear_errors_not_empty_answers(openai_stub, call, behaviour, says):
    openai_stub.queue(behaviour)
    with pytest.raises(ModelOutputError) as caught:
        call(openai_stub)
    assert says in str(caught.value) and "\n" not in str(caught.value)
    assert len(openai_stub.requests) == 1


def test_the_async_path_retries_and_reports_the_same_way(openai_stub):
    async def calls(llm):
        openai_stub.queue(Status(429))
        first = await llm.ainvoke("What is it?")
        openai_stub.queue(NotJSON())
        with pytest.raises(ModelOutputError, match="not JSON: <html>"):
            await llm.ainvoke("What is it?")
        return first.content

    openai_stub.reply = lambda body: "purple"
    assert asyncio.run(calls(chat_model_for(openai_stub))) == "purple"
    assert len(openai_stub.requests) == 3


# -- the concurrency cap --------------------------------------------------------------------------


def test_answerer_never_exceeds_its_concurrency(openai_stub):
    openai_stub.latency = 0.05
    answerer_for(openai_stub, max_concurrency=3).answer([(Image.new("RGB", (4, 4)), f"Q{i}?") for i in range(12)])
    assert len(openai_stub.requests) == 12 and openai_stub.max_in_flight == 3


def test_chat_model_never_exceeds_its_concurrency_even_when_structured(openai_stub):
    openai_stub.latency = 0.05
    openai_stub.reply = lambda body: '{"sub_questions": ["What is it?"]}'
    llm = chat_model_for(openai_stub, max_concurrency=3)
    structured = llm.with_structured_output(Questioner(llm).schema(), method="json_schema", include_raw=True)
    replies = structured.batch([f"conversation {i}" for i in range(12)], return_exceptions=True)
    assert [r["parsed"] for r in replies] == [{"sub_questions": ["What is it?"]}] * 12
    assert openai_stub.max_in_flight == 3  # reached, never passed
    # A caller asking for more threads still gets at most the model's limit.
    llm.batch([f"conversation {i}" for i in range(12)], config={"max_concurrency": 12})
    assert openai_stub.max_in_flight == 3 and len(openai_stub.requests) == 24


def test_structured_output_sends_the_json_schema(openai_stub):
    text = '{"sub_questions": ["Is it red?", "Is it round?"]}'
    openai_stub.reply = lambda body: text
    llm = chat_model_for(openai_stub, max_tokens=80)
    schema = Questioner(llm, max_sub_questions=2).schema()
    reply = llm.with_structured_output(schema, method="json_schema", include_raw=True).invoke("Ask.")
    assert reply["parsed"] == {"sub_questions": ["Is it red?", "Is it round?"]}
    assert reply["raw"].usage_metadata["output_tokens"] == count_tokens(text)
    body = openai_stub.requests[0]
    assert body["response_format"]["type"] == "json_schema"
    sent = body["response_format"]["json_schema"]
    assert sent["name"] == "SubQuestions" and sent["schema"]["properties"] == schema["properties"]
    assert body["max_tokens"] == 80 and "max_completion_tokens" not in body and body["temperature"] == 0


def test_messages_go_out_as_given_beside_a_models_extra_body(openai_stub):
    # The messages skip the openai client's typed transform (through extra_body): the body is the same.
    openai_stub.reply = lambda body: "Fine."
    llm = chat_model_for(openai_stub).model_copy(update={"extra_body": {"top_k": 5}})
    llm.invoke([("system", "Be brief."), ("user", "How are you?")])
    body = openai_stub.requests[0]
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How are you?"}]
    assert body["top_k"] == 5 and "extra_body" not in body and body["model"] == "stub-llm"
    answerer_for(openai_stub).answer([(Image.new("RGB", (4, 4)), "What is it?")])
    (part, text), = [m["content"] for m in openai_stub.requests[1]["messages"] if m["role"] == "user"]
    assert part["type"] == "image_url" and text["text"].startswith("What is it?")


# -- through IdealAgent ---------------------------------------------------------------------------


def scripted_endpoint(body: dict):
    """One server for every role: it answers by the request's schema, or as the VLM."""
    response_format = body.get("response_format")
    last = body["messages"][-1]["content"]
    if response_format is None:  # the answerer: an image and a question
        text = text_of(body)
        if text.startswith("Describe"):
            return "A red square."
        return NotJSON() if "shape" in text else "red"
    schema = response_format["json_schema"]
    if schema["name"] == "SubQuestions":
        return NO_CHOICES if "broken" in last else json.dumps({"sub_questions": ["What colour is the object?"]})
    answer = schema["schema"]["properties"]["answer"]
    colour = "red" if "Answer: red" in last else "unknown"
    return json.dumps({"analysis": "The assistant saw red.", "confidence": 0.9,
                       "answer": answer["enum"][0] if "enum" in answer else colour})


def test_a_whole_agent_run_through_the_endpoints(openai_stub):
    openai_stub.reply = scripted_endpoint
    llm = chat_model_for(openai_stub)
    agent = IdealAgent(llm, answerer_for(openai_stub), max_rounds=2, **IDEALGPT_LOOP)
    trace = agent.run(Image.new("RGB", (8, 8), "red"), "What colour is the object?")

    assert trace.stop_reason == "confident" and trace.answer == "red" and trace.confidence == 0.9
    assert trace.caption == "A red square." and trace.rounds[0].sub_qas[0].answer == "red"
    llm_bodies = [b for b in openai_stub.requests if "response_format" in b]
    assert [b["response_format"]["json_schema"]["name"] for b in llm_bodies] == ["SubQuestions", "Verdict"]
    # Token counts from the server's usage fields reach the trace.
    assert trace.usage.llm_calls == 2 and trace.usage.answerer_calls == 1
    assert trace.usage.llm_input_tokens == sum(count_tokens(text_of(b)) for b in llm_bodies) > 0
    assert trace.usage.llm_output_tokens > 0
    vlm_bodies = [b for b in openai_stub.requests if "response_format" not in b]  # caption, answer
    assert trace.usage.answerer_input_tokens == sum(count_tokens(text_of(b)) for b in vlm_bodies) > 0
    assert trace.usage.answerer_output_tokens == len(["A", "red", "square."]) + len(["red"])


def test_structured_off_sends_no_response_format_and_parses_the_text(openai_stub):
    """For servers without json_schema support: `--structured off` / IdealAgent(structured="off")."""
    def reply(body: dict) -> str:
        if any(isinstance(m["content"], list) for m in body["messages"]):  # the answerer: image parts
            return "A red square." if text_of(body).startswith("Describe") else "red"
        if body["messages"][0]["content"].startswith("You help answer"):  # the questioner
            return "Here you go:\n1. What colour is the object?"
        return 'Sure. {"analysis": "The assistant saw red.", "answer": "red", "confidence": 0.9}'

    openai_stub.reply = reply
    agent = IdealAgent(chat_model_for(openai_stub), answerer_for(openai_stub), structured="off", **IDEALGPT_LOOP)
    trace = agent.run(Image.new("RGB", (8, 8), "red"), "What colour is the object?")
    assert trace.answer == "red" and trace.stop_reason == "confident" and trace.settings["structured"] == "off"
    assert trace.sub_questions == ["What colour is the object?"]
    assert not any("response_format" in body for body in openai_stub.requests)


def test_failures_at_the_endpoints_are_recorded_in_the_trace(openai_stub):
    openai_stub.reply = scripted_endpoint
    agent = IdealAgent(chat_model_for(openai_stub), answerer_for(openai_stub), attempts=2, **IDEALGPT_LOOP)
    image = Image.new("RGB", (8, 8), "red")
    fine, yes_no, llm_broken = agent.run_batch([
        Sample(image=image, question="What colour is the object?"),
        Sample(image=image, question="Is the object red?", kind="yes_no"),
        Sample(image=image, question="What colour is the broken object?"),
    ])
    assert fine.stop_reason == "confident" and fine.answer == "red"
    assert llm_broken.stop_reason == "questioner_failed" and llm_broken.answer is None
    assert [f.attempt for f in llm_broken.failures] == [1, 2] and llm_broken.rounds == []
    assert all("no choices" in f.error for f in llm_broken.failures)
    assert yes_no.stop_reason == "confident" and yes_no.answer == "yes"


def test_an_answerer_failure_stops_only_its_own_sample(openai_stub):
    openai_stub.reply = scripted_endpoint
    questions = {"Q1": "What colour is the object?", "Q2": "What shape is the object?"}
    llm = ScriptedChatModel(replies=[
        lambda m: json.dumps({"sub_questions": [questions["Q1" if "first" in m[-1].content else "Q2"]]})
    ] * 2 + [json.dumps({"analysis": "seen", "answer": "red", "confidence": 0.95})])
    agent = IdealAgent(llm, answerer_for(openai_stub), structured="off")
    image = Image.new("RGB", (8, 8), "red")
    first, second = agent.run_batch([Sample(image=image, question="The first: colour?"),
                                     Sample(image=image, question="The second: shape?")])
    assert first.stop_reason == "confident" and first.answer == "red"
    assert second.stop_reason == "answerer_failed" and second.answer is None
    assert second.error.startswith("answerer failed: ModelOutputError: VLM endpoint") and "not JSON" in second.error


# -- configuration ---------------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch):
    for prefix in ("IDEALAGENT_LLM", "IDEALAGENT_VLM"):
        for name in ("BASE_URL", "MODEL", "API_KEY", "MAX_CONCURRENCY", "TIMEOUT", "ATTEMPTS", "MAX_TOKENS"):
            monkeypatch.delenv(f"{prefix}_{name}", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return monkeypatch


def test_missing_variables_are_named(env):
    with pytest.raises(InputError, match="set IDEALAGENT_LLM_BASE_URL and IDEALAGENT_LLM_MODEL"):
        build_openai_preset()
    env.setenv("IDEALAGENT_LLM_BASE_URL", "http://llm:8001/v1")
    with pytest.raises(InputError, match="set IDEALAGENT_LLM_MODEL "):
        chat_model_from_env()
    assert chat_model_from_env(model="given").model_name == "given"


def test_one_server_for_every_role_and_the_key_fallbacks(env):
    env.setenv("IDEALAGENT_LLM_BASE_URL", "http://vlm:8000/v1")
    env.setenv("IDEALAGENT_LLM_MODEL", "Qwen/Qwen2.5-VL-7B-Instruct")
    env.setenv("IDEALAGENT_VLM_MAX_CONCURRENCY", "32")
    env.setenv("IDEALAGENT_LLM_TIMEOUT", "5")  # knobs are shared too, except max tokens
    models = build_openai_preset()
    llm, answerer = models["llm"], models["answerer"]
    assert isinstance(llm, EndpointChatModel) and isinstance(answerer, OpenAIAnswerer)
    assert (llm.openai_api_base, llm.model_name, llm.max_tokens) == ("http://vlm:8000/v1", answerer.model, 512)
    assert answerer.base_url == "http://vlm:8000/v1" and answerer.max_tokens == 32
    assert (llm.max_concurrency, answerer.max_concurrency) == (32, 32)
    assert llm.request_timeout == 5.0 == answerer.client.timeout
    assert llm.openai_api_key.get_secret_value() == "EMPTY" == answerer.client.api_key

    models = build_openai_preset(vlm_model="my-vlm", llm_model="my-llm")  # the CLI's --vlm/--llm
    assert (models["llm"].model_name, models["answerer"].model) == ("my-llm", "my-vlm")

    env.setenv("OPENAI_API_KEY", "sk-openai")
    assert endpoint_from_env("IDEALAGENT_VLM").api_key == "EMPTY"  # OpenAI's key is for OpenAI only
    env.setenv("IDEALAGENT_LLM_API_KEY", "sk-llm")
    assert endpoint_from_env("IDEALAGENT_VLM").api_key == "sk-llm"  # same server, same key
    env.setenv("IDEALAGENT_VLM_BASE_URL", "http://other:8000/v1")
    assert endpoint_from_env("IDEALAGENT_VLM").api_key == "EMPTY"  # another server: not lent


def test_bad_settings_are_input_errors(env):
    env.setenv("IDEALAGENT_VLM_BASE_URL", "http://vlm:8000/v1")
    env.setenv("IDEALAGENT_VLM_MODEL", "vlm")
    assert chat_model_from_env().openai_api_base == "http://vlm:8000/v1"  # the LLM borrows the VLM's
    env.setenv("IDEALAGENT_LLM_TIMEOUT", "soon")
    with pytest.raises(InputError, match="IDEALAGENT_LLM_TIMEOUT or IDEALAGENT_VLM_TIMEOUT = 'soon' is not a float"):
        chat_model_from_env()
    with pytest.raises(InputError, match="must start with http"):
        make_chat_model("m", "localhost:8000/v1")
    with pytest.raises(InputError, match="at least 1"):
        OpenAIAnswerer("m", "http://vlm:8000/v1", max_concurrency=0)


def test_both_backends_take_the_endpoint_options_declared_once():
    options = {"max_concurrency": 3, "timeout": 7.0, "attempts": 2, "max_tokens": 9, "retry_initial_wait": 0.1,
               "retry_max_wait": 0.3, "logprobs": False}
    # Every Endpoint option but where and what: a new one must be given a value here.
    assert set(options) == {spec.name for spec in dataclasses.fields(Endpoint)} - {"base_url", "model", "api_key"}
    llm = make_chat_model("m", "http://h:1/v1", "k", top_p=0.5, **options)  # top_p: ChatOpenAI's own
    answerer = OpenAIAnswerer("m", "http://h:1/v1", "k", **options)
    assert llm.retry_policy == answerer.retry == RetryPolicy(2, 0.1, 0.3)
    assert (llm.max_concurrency, llm.request_timeout, llm.max_tokens, llm.logprobs, llm.top_p) == (3, 7.0, 9, None, 0.5)
    assert (answerer.max_concurrency, answerer.client.timeout, answerer.max_tokens, answerer.logprobs.on) == (
        3, 7.0, 9, False)
    for make in (make_chat_model, OpenAIAnswerer):  # one check for both
        with pytest.raises(InputError, match="must not be negative"):
            make("m", "http://h:1/v1", retry_max_wait=-1.0)
        assert "sk-secret" not in repr(make("m", "http://h:1/v1", "sk-secret"))
    with pytest.raises(TypeError, match="colour"):
        OpenAIAnswerer("m", "http://h:1/v1", colour="red")


def test_a_sharded_evaluation_through_the_openai_preset_merges_in_the_report(openai_stub, tmp_path, monkeypatch):
    """docs/scaling.md's workflow: shards of one run against the servers, then one report."""
    from tests.test_cli import invoke
    from tests.test_eval_runner import N_ITEMS, read_lines, write_fixture

    openai_stub.reply = scripted_endpoint
    monkeypatch.setenv("IDEALAGENT_LLM_BASE_URL", openai_stub.base_url)  # one server for every role
    monkeypatch.setenv("IDEALAGENT_LLM_MODEL", "stub-llm")
    for name in ("IDEALAGENT_VLM_BASE_URL", "IDEALAGENT_VLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    data = write_fixture(tmp_path / "data")
    shards = [tmp_path / f"results.shard{i}.jsonl" for i in range(2)]
    for i, out in enumerate(shards):
        result = invoke("eval", "jsonl", "--data", str(data), "--preset", "openai", "--out", str(out),
                        "--shard", f"{i}/2", "--calibration", "stated")
        assert result.exit_code == 0, result.output
    rows = [row for out in shards for row in read_lines(out)[1]]
    assert sorted(row["id"] for row in rows) == [f"q{n:02d}" for n in range(N_ITEMS)]
    assert all(row["score"] == 1.0 and row["baseline"]["score"] == 1.0 for row in rows)
    assert all(row["trace"]["usage"]["answerer_input_tokens"] > 0 for row in rows)
    report = invoke("report", *map(str, shards), "--json")
    assert report.exit_code == 0, report.output
    summary = json.loads(report.stdout)
    assert summary["overall"]["n"] == N_ITEMS and summary["overall"]["accuracy"] == 1.0
    assert summary["overall"]["baseline_accuracy"] == 1.0
