"""LocalChatModel on a tiny random Llama (and, marked real_weights, on SmolLM2-135M)."""

from __future__ import annotations

import json
import shutil
import time
from typing import Annotated, Literal

import pytest
import torch
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.prompt_values import ChatPromptValue
from pydantic import BaseModel, Field
from transformers import AutoTokenizer

from idealagent.errors import ModelLoadError, ModelOutputError
from idealagent.llms.local import LocalChatModel
from tests.tiny_models import make_tiny_llama

CONVERSATIONS = [
    "What is in the image?",
    [("system", "You are terse."), ("human", "Is the man holding an umbrella?")],
    ChatPromptValue(messages=[HumanMessage("How many people are standing near the door?")]),
]


class Verdict(BaseModel):
    """Bounded everywhere, so even a random model's grammar-forced reply closes in time."""

    answer: str = Field(max_length=8)
    tags: list[Annotated[str, Field(max_length=6)]] = Field(max_length=2)
    confident: bool
    colour: Literal["red", "blue"]


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def chat(tiny_llama_path):
    return LocalChatModel.from_pretrained(tiny_llama_path, max_new_tokens=24)


@pytest.fixture
def generate_calls(chat, monkeypatch):
    """Record the batch shape of every ``model.generate`` call."""
    calls = []
    generate = chat.model.generate

    def recording_generate(*args, **kwargs):
        calls.append(tuple(kwargs["input_ids"].shape))
        return generate(*args, **kwargs)

    monkeypatch.setattr(chat.model, "generate", recording_generate)
    return calls


def test_batch_gives_invoke_texts_from_one_generate_call(chat, generate_calls):
    singles = [chat.invoke(c) for c in CONVERSATIONS]
    assert len(generate_calls) == 3
    generate_calls.clear()

    batched = chat.batch(CONVERSATIONS)

    assert [m.content for m in batched] == [m.content for m in singles]
    assert all(m.content for m in batched)
    assert len(generate_calls) == 1 and generate_calls[0][0] == 3


def test_batch_is_chunked_by_max_batch_size(chat, generate_calls):
    expected = [r.content for r in chat.batch(CONVERSATIONS)]
    generate_calls.clear()
    small = LocalChatModel(model=chat.model, tokenizer=chat.tokenizer, max_batch_size=2, max_new_tokens=24)

    replies = small.batch(CONVERSATIONS)

    assert sorted(rows for rows, _ in generate_calls) == [1, 2]
    assert [r.content for r in replies] == expected


def test_bound_kwargs_reach_batch_and_short_replies_say_length(chat, generate_calls):
    replies = chat.bind(max_new_tokens=3).batch(CONVERSATIONS)

    assert len(generate_calls) == 1
    for reply in replies:
        assert reply.response_metadata["finish_reason"] == "length"
        assert reply.usage_metadata["output_tokens"] == 3


def test_usage_counts_the_real_tokens(chat):
    schema = Verdict.model_json_schema()
    replies = chat.bind(json_schema=schema, max_new_tokens=200).batch(CONVERSATIONS)

    for conversation, reply in zip(CONVERSATIONS, replies):
        messages = chat._convert_input(conversation).to_messages()
        prompt = chat.tokenizer(chat.render(messages), add_special_tokens=False, return_tensors="pt")
        expected_out = len(generate_alone(chat, prompt, schema))
        usage = reply.usage_metadata
        assert usage["input_tokens"] == prompt.input_ids.shape[1]
        assert usage["output_tokens"] == expected_out
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert reply.response_metadata["finish_reason"] == "stop"


def generate_alone(chat, prompt, schema) -> list[int]:
    """New tokens of one unpadded, grammar-constrained greedy run, up to and including EOS."""
    import xgrammar

    info = xgrammar.TokenizerInfo.from_huggingface(chat.tokenizer, vocab_size=chat.model.config.vocab_size)
    grammar = xgrammar.GrammarCompiler(info).compile_json_schema(json.dumps(schema), any_whitespace=False)
    with torch.inference_mode():
        output = chat.model.generate(
            **prompt, max_new_tokens=200, do_sample=False, pad_token_id=chat.tokenizer.pad_token_id,
            logits_processor=[xgrammar.contrib.hf.LogitsProcessor(grammar)],
        )
    new = output[0, prompt.input_ids.shape[1]:].tolist()
    return new[: new.index(chat.tokenizer.eos_token_id) + 1]


def test_stop_sequence_trims_the_reply(chat):
    full = chat.invoke(CONVERSATIONS[0]).content
    stop = full[6:9]
    reply = chat.invoke(CONVERSATIONS[0], stop=[stop])

    assert reply.content == full[: full.index(stop)]
    assert reply.response_metadata["finish_reason"] == "stop"


def test_structured_output_batch_gives_schema_valid_objects(chat, generate_calls):
    replies = chat.with_structured_output(Verdict).batch(CONVERSATIONS, max_new_tokens=200)

    assert len(generate_calls) == 1
    assert all(isinstance(r, Verdict) for r in replies)
    assert all(len(r.answer) <= 8 and len(r.tags) <= 2 for r in replies)

    from_dict_schema = chat.with_structured_output(Verdict.model_json_schema())
    as_dicts = from_dict_schema.batch(CONVERSATIONS, max_new_tokens=200)
    assert as_dicts == [r.model_dump() for r in replies]


def test_structured_output_with_raw_keeps_every_row(chat):
    structured = chat.with_structured_output(Verdict, include_raw=True)

    rows = structured.batch(CONVERSATIONS, max_new_tokens=200)
    for row in rows:
        assert isinstance(row["raw"], AIMessage) and row["parsing_error"] is None
        assert isinstance(row["parsed"], Verdict)
        assert row["raw"].usage_metadata["output_tokens"] > 0

    cut_short = structured.batch(CONVERSATIONS, max_new_tokens=4)
    for row in cut_short:
        assert row["parsed"] is None
        assert isinstance(row["parsing_error"], ModelOutputError)
        assert row["raw"].response_metadata["finish_reason"] == "length"
    with pytest.raises(ModelOutputError):
        chat.with_structured_output(Verdict).invoke(CONVERSATIONS[0], max_new_tokens=4)


@pytest.mark.parametrize("name", ["/no/such/model-folder", "no-such-org/no-such-model"])
def test_missing_model_is_a_one_line_load_error(name):
    with pytest.raises(ModelLoadError) as caught:
        LocalChatModel.from_pretrained(name)
    message = str(caught.value)
    assert name in message and "huggingface-cli download" in message
    assert "\n" not in message


def test_tokenizer_without_chat_template_is_a_load_error(chat, tiny_llama_path, tmp_path):
    folder = shutil.copytree(tiny_llama_path, tmp_path / "no-template")
    (folder / "chat_template.jinja").unlink()

    with pytest.raises(ModelLoadError, match="chat template"):
        LocalChatModel.from_pretrained(folder)

    plain_tokenizer = AutoTokenizer.from_pretrained(folder)
    with pytest.raises(ModelLoadError, match="chat template"):
        LocalChatModel(model=chat.model, tokenizer=plain_tokenizer)


@pytest.mark.real_weights
def test_smollm2_converts_once_then_loads_from_cache(tmp_path, caplog):
    from idealagent.llms.smollm2 import load_smollm2

    class Answer(BaseModel):
        answer: Literal["yes", "no"]
        reason: str = Field(max_length=80)

    cache = tmp_path / "smollm2"
    with caplog.at_level("INFO", logger="idealagent.llms.smollm2"):
        load_smollm2(cache_dir=cache)
    assert "converting" in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == ["smollm2"]  # no staging folder left

    caplog.clear()
    started = time.perf_counter()
    with caplog.at_level("INFO", logger="idealagent.llms.smollm2"):
        chat = load_smollm2(cache_dir=cache, max_new_tokens=64)
    assert time.perf_counter() - started < 10
    assert "converting" not in caplog.text

    structured = chat.with_structured_output(Answer, include_raw=True)
    question = [SystemMessage("Reply in JSON."), HumanMessage("Is the sky blue on a clear day?")]
    row = structured.invoke(question)
    assert row["parsing_error"] is None, row["raw"].content
    assert isinstance(row["parsed"], Answer)
