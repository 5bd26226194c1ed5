"""Token log-probabilities from every backend: local models record them under the raw logits
(checked against a forward pass of their own), endpoints pass the server's on, and answers
carry the probability of their tokens, or None where it is unknown."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any

import pytest
import torch
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from PIL import Image

from idealagent.answerers import Answer
from idealagent.answerers.openai import OpenAIAnswerer
from idealagent.answerers.perception import Guess, PerceptionAnswerer
from idealagent.answerers.transformers import TransformersAnswerer
from idealagent.answerers.vlm_processing import OncePerImage
from idealagent.confidence import answer_probability, message_logprobs
from idealagent.llms.local import LocalChatModel
from idealagent.llms.openai import chat_model_from_env, make_chat_model
from idealagent.llms.prefix_cache import cache_keyword
from tests.openai_stub import LOGPROBS_REFUSAL, STUB_LOGPROB, StubServer
from tests.tiny_models import make_tiny_llama
from tests.tiny_vlms import BUILDERS

SYSTEM = ("You are a helpful assistant that describes pictures carefully and briefly. Be terse, "
          "look at the colours: red, green, blue, white, black. Answer the question with one word. "
          "The reply is JSON: {\"answer\": \"yes\"}. Questions, answers, reasons!")
# Different lengths, so the batch is left-padded; the shared system turn is long enough for
# the prefix cache (32 tokens or more).
QUESTIONS = ["Is it red?", "What is in the image? A red car is parked next to a tall tree.",
             "How many people are there near the door?"]
SHORT_ANSWER = {"type": "object", "properties": {"answer": {"type": "string", "pattern": "[a-z]{1,6}"}},
                "required": ["answer"]}


@pytest.fixture(scope="module")
def chat(tmp_path_factory) -> LocalChatModel:
    return LocalChatModel.from_pretrained(make_tiny_llama(tmp_path_factory.mktemp("llama")), max_new_tokens=16)


def conversations() -> list[list[BaseMessage]]:
    return [[SystemMessage(SYSTEM), HumanMessage(q)] for q in QUESTIONS]


def generate_and_record(chat: LocalChatModel, monkeypatch, conversations, **options) -> tuple[list, list]:
    """The replies, and per generate call its inputs, output and keyword arguments."""
    calls, generate = [], chat.model.generate

    def recording(**kwargs):
        output = generate(**kwargs)
        calls.append((kwargs["input_ids"], kwargs["attention_mask"], output, kwargs))
        return output

    monkeypatch.setattr(chat.model, "generate", recording)
    return chat.reply(conversations, **options), calls


def generated_rows(chat: LocalChatModel, calls) -> dict[tuple[int, ...], list[int]]:
    """Each row's prompt tokens (padding left out) -> the tokens it generated before its end."""
    rows = {}
    for input_ids, mask, output, _ in calls:
        for ids, row_mask, out in zip(input_ids.tolist(), mask.tolist(), output.tolist()):
            prompt = tuple(t for t, m in zip(ids, row_mask) if m)
            new = out[len(ids):]
            ends = [i for i, t in enumerate(new) if t in chat._stop_token_ids]
            rows[prompt] = new[: ends[0]] if ends else new
    return rows


def forward_logprobs(model: Any, prompt: list[int], new: list[int]) -> list[float]:
    """The log-probability of each of ``new`` after ``prompt``, from one plain forward pass."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + new])).logits[0].float()
    steps = logits.log_softmax(dim=-1)[len(prompt) - 1 : len(prompt) - 1 + len(new)]
    return steps.gather(1, torch.tensor(new)[:, None]).squeeze(1).tolist()


@pytest.mark.parametrize(
    ("fields", "options"),
    [
        ({}, {}),
        ({}, {"json_schema": SHORT_ANSWER}),
        ({"repetition_penalty": 1.3}, {}),
        ({"prefix_cache": True, "repetition_penalty": 1.3}, {"json_schema": SHORT_ANSWER}),
        ({}, {"temperature": 1.5}),
    ],
    ids=["greedy", "json_schema", "repetition_penalty", "prefix_cache", "sampled"],
)
def test_local_logprobs_are_a_forward_pass_of_the_raw_logits(chat, monkeypatch, fields, options):
    llm = chat.model_copy(update={"prefix_cache": False, **fields})
    torch.manual_seed(1)
    replies, calls = generate_and_record(llm, monkeypatch, conversations(), **options)
    [(input_ids, _, _, kwargs)] = calls
    assert input_ids.shape[0] == len(QUESTIONS)  # one left-padded batch
    assert (cache_keyword(llm.model) in kwargs) == fields.get("prefix_cache", False)  # the cached path ran
    rows = generated_rows(llm, calls)
    for conversation, reply in zip(conversations(), replies):
        prompt = llm.tokenizer(llm.render(conversation), add_special_tokens=False).input_ids
        new = rows[tuple(prompt)]
        tokens = message_logprobs(reply)
        assert tokens is not None and len(tokens) == len(new) > 0
        assert "".join(text for text, _ in tokens) == reply.content
        expected = forward_logprobs(llm.model, prompt, new)
        torch.testing.assert_close(torch.tensor([lp for _, lp in tokens]), torch.tensor(expected),
                                   atol=1e-4, rtol=0)


def test_the_probability_of_a_real_reply_is_that_of_its_answer_tokens(chat):
    [reply] = chat.reply([conversations()[1]], json_schema=SHORT_ANSWER)
    answer = json.loads(reply.content)["answer"]
    tokens = message_logprobs(reply)
    start = reply.content.rindex(f'"{answer}"') + 1  # the value, after the key
    spans, position = [], 0
    for text, _ in tokens:
        spans.append((position, position + len(text)))
        position += len(text)
    inside = [lp for (a, b), (_, lp) in zip(spans, tokens) if a < start + len(answer) and b > start]
    assert inside and len(inside) < len(tokens)
    assert answer_probability(tokens, answer) == pytest.approx(math.exp(sum(inside)), rel=1e-9)
    assert 0 < answer_probability(tokens, answer) <= 1


def test_stop_strings_cut_the_tokens_with_the_text(chat):
    [full] = chat.reply([conversations()[0]])
    stop = full.content[len(full.content) // 2 :]
    [cut] = chat.reply([conversations()[0]], stop=[stop])
    tokens = message_logprobs(cut)
    assert cut.content == full.content[: full.content.find(stop)]
    assert "".join(text for text, _ in tokens) == cut.content


def test_a_per_call_temperature_samples_and_greedy_stays_the_default(chat):
    greedy = [chat.invoke(QUESTIONS[0], max_new_tokens=6).content for _ in range(2)]
    torch.manual_seed(0)
    sampled = {chat.bind(temperature=2.0, max_new_tokens=6).invoke(QUESTIONS[0]).content for _ in range(3)}
    assert greedy[0] == greedy[1]
    assert len(sampled) > 1


def test_a_generation_config_penalty_still_applies_after_the_raw_scores(chat, monkeypatch):
    """Qwen's checkpoints ship repetition_penalty in generation_config.json; it must neither
    reach the recorded log-probabilities nor be lost from decoding."""
    penalised = chat.model_copy(update={"repetition_penalty": 1.0, "prefix_cache": False})
    plain_replies = penalised.reply(conversations())
    monkeypatch.setattr(penalised.model.generation_config, "repetition_penalty", 1.8)
    replies, calls = generate_and_record(penalised, monkeypatch, conversations())
    assert [r.content for r in replies] != [r.content for r in plain_replies]  # the penalty acted
    rows = generated_rows(penalised, calls)
    for conversation, reply in zip(conversations(), replies):
        prompt = penalised.tokenizer(penalised.render(conversation), add_special_tokens=False).input_ids
        expected = forward_logprobs(penalised.model, prompt, rows[tuple(prompt)])
        torch.testing.assert_close(torch.tensor([lp for _, lp in message_logprobs(reply)]),
                                   torch.tensor(expected), atol=1e-4, rtol=0)


# -- answerers -------------------------------------------------------------------------------


class LogprobChatModel(BaseChatModel):
    """Replies ``{"answer": ...}`` with OpenAI-form logprobs (or none), structured or not."""

    answer: str = "red"
    token_logprob: float | None = -0.25

    @property
    def _llm_type(self) -> str:
        return "logprobs"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kwargs: Any) -> ChatResult:
        pieces = ['{"answer": "', self.answer, '"}']
        metadata = {} if self.token_logprob is None else {"logprobs": {"content": [
            {"token": p, "logprob": self.token_logprob * (i + 1)} for i, p in enumerate(pieces)]}}
        message = AIMessage("".join(pieces), response_metadata=metadata)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def with_structured_output(self, schema: Any, *, include_raw: bool = False, **kwargs: Any) -> Runnable:
        return self | RunnableLambda(lambda m: {"raw": m, "parsed": json.loads(m.content), "parsing_error": None})


class FixedClassifier:
    def classify(self, images, top_k=3):
        return [[Guess("tabby cat", 0.9)] for _ in images]


@pytest.mark.parametrize("token_logprob", [-0.25, None])
def test_perception_answers_carry_their_tokens_probability(token_logprob):
    answerer = PerceptionAnswerer(LogprobChatModel(token_logprob=token_logprob), classifier=FixedClassifier())
    image = Image.new("RGB", (32, 32), "red")
    [answer] = answerer.answer([(image, "What colour is it?")])
    assert answer.text == "red"
    # The answer is the second of three tokens: its log-probability is twice the first's.
    assert answer.probability == (None if token_logprob is None else pytest.approx(math.exp(2 * token_logprob)))
    assert all(isinstance(c, str) for c in answerer.caption([image]))  # captions stay plain


@pytest.fixture(scope="module")
def qwen(tmp_path_factory) -> TransformersAnswerer:
    return TransformersAnswerer.from_pretrained(BUILDERS["qwen2_vl"](tmp_path_factory.mktemp("qwen")),
                                                max_new_tokens=6)


def test_tiny_vlm_answers_carry_a_probability(qwen):
    images = [Image.new("RGB", (40, 30), "red"), Image.new("RGB", (60, 30), "blue")]
    results = qwen.answer_each([(images[0], "What is it?"), (images[1], "Which colour is the shape?")])
    answers = [r for r in results if isinstance(r, Answer)]
    assert answers
    assert all(a.probability is not None and 0 < a.probability <= 1 for a in answers)
    assert all(c.probability is None for c in qwen.caption(images[:1]))


def test_tiny_vlm_logprobs_are_a_forward_pass_of_the_raw_logits(qwen, monkeypatch):
    monkeypatch.setattr(qwen.model.generation_config, "repetition_penalty", 1.5)  # as Qwen ships one
    images = [Image.new("RGB", (40, 30), "red"), Image.new("RGB", (60, 30), "blue")]
    prompts = [qwen._prompt("answer", q) for q in ("What?", "Which colour is the shape on the left?")]
    inputs = qwen._encode(OncePerImage(qwen.processor.image_processor), images, prompts)
    generated = qwen._generate(dict(inputs))
    # generate as before (its own penalty, no processor of ours), then one forward pass over it all.
    with torch.no_grad():
        output = qwen.model.generate(**inputs, max_new_tokens=qwen.max_new_tokens, do_sample=False,
                                     pad_token_id=qwen.processor.tokenizer.pad_token_id)
        width = inputs["input_ids"].shape[1]
        mask = torch.cat([inputs["attention_mask"], torch.ones_like(output[:, width:])], dim=1)
        images_in = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        if "mm_token_type_ids" in images_in:  # which tokens are image tokens: none of the new ones
            types = images_in["mm_token_type_ids"]
            images_in["mm_token_type_ids"] = torch.cat([types, types.new_zeros(output[:, width:].shape)], dim=1)
        logits = qwen.model(input_ids=output, attention_mask=mask, **images_in).logits.float()
    for row, reply in enumerate(generated):
        count = len(reply.tokens)
        new = output[row, width : width + count]
        assert qwen.processor.tokenizer.decode(new, skip_special_tokens=True) == reply.reply.text  # same reply
        expected = logits[row, width - 1 : width - 1 + count].log_softmax(-1).gather(1, new[:, None]).squeeze(1)
        torch.testing.assert_close(torch.tensor([lp for _, lp in reply.tokens]), expected, atol=1e-4, rtol=0)


# -- endpoints -------------------------------------------------------------------------------

FAST = {"timeout": 2.0, "attempts": 2, "retry_initial_wait": 0.01, "retry_max_wait": 0.02}
REPLY = "A red car."


def ask_both(stub: StubServer) -> tuple[AIMessage, Answer]:
    llm = make_chat_model("stub-llm", stub.base_url, **FAST)
    answerer = OpenAIAnswerer("stub-vlm", stub.base_url, **FAST)
    return llm.invoke("What is it?"), answerer.answer([(Image.new("RGB", (4, 4)), "What is it?")])[0]


def test_endpoint_replies_carry_the_servers_logprobs():
    with StubServer(reply=lambda body: REPLY) as stub:
        message, answer = ask_both(stub)
    assert all(body.get("logprobs") is True for body in stub.requests)
    tokens = message_logprobs(message)
    assert "".join(t for t, _ in tokens) == message.content == REPLY
    assert {lp for _, lp in tokens} == {STUB_LOGPROB}
    assert answer.text == "A red car"  # each stub token is a word, so the answer's probability:
    assert answer.probability == pytest.approx(math.exp(STUB_LOGPROB * len(answer.text.split())))


def test_a_server_without_logprobs_gives_no_probability():
    with StubServer(reply=lambda body: REPLY, logprobs=False) as stub:
        message, answer = ask_both(stub)
    assert message_logprobs(message) is None
    assert answer.text == "A red car" and answer.probability is None


def test_a_server_refusing_logprobs_is_asked_again_without_them_and_never_again(caplog):
    caplog.set_level(logging.INFO)
    with StubServer(reply=lambda body: REPLY, refuse={"logprobs": LOGPROBS_REFUSAL}) as stub:
        llm = make_chat_model("stub-llm", stub.base_url, **FAST)
        answerer = OpenAIAnswerer("stub-vlm", stub.base_url, **FAST)
        image = Image.new("RGB", (4, 4))
        messages = [llm.invoke("What is it?"), llm.invoke("And now?")]
        answers = [answerer.answer([(image, "What is it?")])[0], answerer.answer([(image, "Now?")])[0]]
    assert [m.content for m in messages] == [REPLY, REPLY] and all(message_logprobs(m) is None for m in messages)
    assert [a.text for a in answers] == ["A red car"] * 2 and all(a.probability is None for a in answers)
    # Per backend: asked with logprobs, refused, asked without; the next request never asks.
    assert [bool(body.get("logprobs")) for body in stub.requests] == [True, False, False] * 2
    assert sum("refuses logprobs" in r.getMessage() for r in caplog.records) == 2  # once per backend


def test_the_async_path_drops_refused_logprobs_too():
    with StubServer(reply=lambda body: REPLY, refuse={"logprobs": LOGPROBS_REFUSAL}) as stub:
        message = asyncio.run(make_chat_model("stub-llm", stub.base_url, **FAST).ainvoke("What is it?"))
    assert message.content == REPLY and message_logprobs(message) is None
    assert [bool(body.get("logprobs")) for body in stub.requests] == [True, False]


def test_logprobs_can_be_switched_off_per_role(monkeypatch):
    for name in ("BASE_URL", "MODEL", "API_KEY", "MAX_TOKENS", "LOGPROBS"):
        monkeypatch.delenv(f"IDEALAGENT_VLM_{name}", raising=False)
    with StubServer(reply=lambda body: REPLY) as stub:
        monkeypatch.setenv("IDEALAGENT_LLM_BASE_URL", stub.base_url)
        monkeypatch.setenv("IDEALAGENT_LLM_MODEL", "stub")
        monkeypatch.setenv("IDEALAGENT_LLM_LOGPROBS", "0")
        chat_model_from_env(attempts=1).invoke("What is it?")
        [answer] = OpenAIAnswerer.from_env(attempts=1).answer([(Image.new("RGB", (4, 4)), "What is it?")])
    # The answerer borrows the LLM's server, and with it the switch.
    assert ["logprobs" in body for body in stub.requests] == [False, False]
    assert answer.probability is None
