"""LocalChatModel on a tiny random Llama (and, marked real_weights, on SmolLM2-135M)."""

from __future__ import annotations

import json
import os
import re
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
from idealagent.llms.prefix_cache import SharedPrefixes
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


def test_role_copies_share_one_grammar_compiler(tiny_llama_path, monkeypatch):
    """The tiny preset's roles are ``model_copy``s of one model: the tokenizer's token table is
    built once for all of them, and a schema compiled for one is reused by another."""
    import xgrammar

    built, compiled = [], []
    from_huggingface, compile_json_schema = xgrammar.TokenizerInfo.from_huggingface, xgrammar.GrammarCompiler.compile_json_schema
    monkeypatch.setattr(xgrammar.TokenizerInfo, "from_huggingface",
                        lambda *a, **k: built.append(1) or from_huggingface(*a, **k))
    monkeypatch.setattr(xgrammar.GrammarCompiler, "compile_json_schema",
                        lambda self, *a, **k: compiled.append(self) or compile_json_schema(self, *a, **k))
    model = LocalChatModel.from_pretrained(tiny_llama_path, max_new_tokens=24)  # a tokenizer of its own
    short, long = model.model_copy(update={"max_new_tokens": 8}), model.model_copy(update={"max_new_tokens": 200})
    counted = {"type": "object", "properties": {"n": {"type": "integer"}}}
    first = long.with_structured_output(Verdict).invoke(CONVERSATIONS[0])
    short.with_structured_output(counted).invoke(CONVERSATIONS[1])  # another role, another schema
    again = short.with_structured_output(Verdict, include_raw=True).invoke(CONVERSATIONS[0])
    assert len(built) == 1 and len(compiled) == 3 and compiled[0] is compiled[1] is compiled[2]
    assert isinstance(first, Verdict) and again["parsing_error"] is not None  # 8 tokens: cut short


def test_reasoner_schemas_hold_under_constrained_decoding_from_random_weights(chat):
    """The agent's own verdict schemas, not just a test schema: a random model's open answer
    still starts like a word and stays a short phrase; a choice answer is one of the letters."""
    from idealagent.roles import OPEN_ANSWER_PATTERN, Reasoner
    from idealagent.trace import Sample, Trace

    open_schema = Reasoner.schema(Trace(sample=Sample(question="What colour is the car?")))
    choice_schema = Reasoner.schema(Trace(sample=Sample(question="Which?", choices=["cat", "dog", "cow"])))
    for schema, check in [(open_schema, lambda a: re.fullmatch(OPEN_ANSWER_PATTERN, a)),
                          (choice_schema, lambda a: a in ("A", "B", "C"))]:
        for reply in chat.with_structured_output(schema).batch(CONVERSATIONS, max_new_tokens=400):
            assert check(reply["answer"]), reply
            assert 0 <= reply["confidence"] <= 1


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


SYSTEM = ("You are a helpful assistant that describes pictures carefully and briefly. "
          "Answer the question with one word.")
EXEMPLARS = [
    HumanMessage("Is the man holding an umbrella?"),
    AIMessage("Yes, he is holding a black umbrella."),
    HumanMessage("How many people are there?"),
    AIMessage("There are three people standing near the door."),
]
# Last turns of different lengths, so the padding sits between the shared prefix and each turn.
QUESTIONS = [
    "What is in the image?",
    "Is the sky blue?",
    "How many people are standing near the door next to a tall tree?",
    "The quick brown fox jumps over the lazy dog. What colour is the fox?",
]


def few_shot(question: str) -> list:
    """A conversation that shares its system prompt and exemplar turns with every other."""
    return [SystemMessage(SYSTEM), *EXEMPLARS, HumanMessage(question)]


def twin_models(chat, **fields) -> tuple[LocalChatModel, LocalChatModel]:
    """The same weights with the shared-prefix cache on, and off; each with an empty store."""
    on = LocalChatModel(model=chat.model, tokenizer=chat.tokenizer, max_new_tokens=24, **fields)
    off = LocalChatModel(model=chat.model, tokenizer=chat.tokenizer, max_new_tokens=24,
                         prefix_cache=False, **fields)
    return on, off


@pytest.fixture
def forwards(chat):
    """Record every forward pass of the model: (rows, tokens fed) and the last position's logits."""
    calls = []

    def record(module, args, kwargs, output):
        calls.append((tuple(kwargs["input_ids"].shape), output.logits[:, -1].clone()))

    handle = chat.model.register_forward_hook(record, with_kwargs=True)
    yield calls
    handle.remove()


def summary(replies) -> list:
    """What two ways of generating must agree on exactly: the tokens' log-probabilities differ
    by float noise between batch layouts, so only their tokens count here (their values are
    checked against a forward pass in test_logprobs.py)."""
    tokens = [[t["token"] for t in r.response_metadata["logprobs"]["content"]] for r in replies]
    return [(r.content, r.usage_metadata, {**r.response_metadata, "logprobs": t}) for r, t in zip(replies, tokens)]


@pytest.mark.parametrize(
    ("fields", "options"),
    [
        ({}, {}),
        ({}, {"json_schema": Verdict.model_json_schema(), "max_new_tokens": 200}),
        ({"repetition_penalty": 1.3}, {}),
    ],
    ids=["greedy", "json_schema", "repetition_penalty"],
)
def test_shared_prefix_cache_gives_the_plain_replies(chat, forwards, fields, options):
    cached, plain = twin_models(chat, **fields)
    conversations = [few_shot(q) for q in QUESTIONS]
    rows = [chat.tokenizer(chat.render(c), add_special_tokens=False).input_ids for c in conversations]
    shared = len(os.path.commonprefix(rows))
    assert shared >= 32 and len({len(r) for r in rows}) == len(rows)

    expected = plain.batch(conversations, **options)
    plain_first_step = forwards[0]
    forwards.clear()
    replies = cached.batch(conversations, **options)

    assert summary(replies) == summary(expected)
    assert [r.usage_metadata["input_tokens"] for r in replies] == [len(r) for r in rows]
    (prefill_shape, _), (first_shape, first_logits) = forwards[:2]
    assert prefill_shape == (1, shared)  # the prefix ran once, not once per row
    assert first_shape == (len(rows), max(map(len, rows)) - shared)
    # Same positions and same masking: the first step's logits agree, not just their argmax.
    assert plain_first_step[0] == (len(rows), max(map(len, rows)))
    torch.testing.assert_close(first_logits, plain_first_step[1], atol=1e-5, rtol=1e-4)


def test_later_calls_reuse_the_stored_prefix_unchanged(chat, forwards):
    cached, plain = twin_models(chat)
    conversations = [few_shot(q) for q in QUESTIONS]
    first = cached.batch(conversations)
    [(key, states)] = cached._prefixes.entries.items()
    snapshot = [(k.clone(), v.clone()) for k, v in states]
    forwards.clear()

    again = cached.batch(conversations)
    yes_no = [few_shot(q + " Answer yes or no.") for q in QUESTIONS[:3]]
    others = cached.batch(yes_no)

    assert summary(again) == summary(first)
    assert summary(others) == summary(plain.batch(yes_no))
    assert not [shape for shape, _ in forwards if shape[0] == 1]  # no prefill: the stored one served
    assert list(cached._prefixes.entries) == [key]
    for (k, v), (k0, v0) in zip(cached._prefixes.entries[key], snapshot):
        assert torch.equal(k, k0) and torch.equal(v, v0)  # generate appended to a copy only


def test_single_conversations_share_their_common_prefix_across_calls(chat, forwards):
    cached, plain = twin_models(chat)
    conversations = [few_shot(q) for q in QUESTIONS]

    replies = [cached.invoke(c) for c in conversations]

    assert summary(replies) == summary([plain.invoke(c) for c in conversations])
    rows = [chat.tokenizer(chat.render(c), add_special_tokens=False).input_ids for c in conversations]
    role_prefix = tuple(os.path.commonprefix(rows))
    # The first prompt is stored whole; the second call finds what the two share and keeps that.
    assert role_prefix in cached._prefixes.entries and len(cached._prefixes.entries) == 2
    cached_prefills = [shape for shape, _ in forwards if shape[0] == 1 and shape[1] > 1]
    assert cached_prefills[0] == (1, len(rows[0]) - 1)


def test_short_shared_prefix_takes_the_plain_path(chat, generate_calls):
    cached, plain = twin_models(chat)

    replies = cached.batch(CONVERSATIONS)

    assert summary(replies) == summary(plain.batch(CONVERSATIONS))
    assert not cached._prefixes.entries
    assert generate_calls[0] == generate_calls[1]  # same full-width, left-padded input


def test_unsupported_cache_takes_the_plain_path(chat, monkeypatch):
    monkeypatch.setattr(chat.model.generation_config, "cache_implementation", "static")
    cached, plain = twin_models(chat)
    conversations = [few_shot(q) for q in QUESTIONS]

    replies = cached.batch(conversations)

    assert summary(replies) == summary(plain.batch(conversations))
    assert not cached._prefixes.entries


def test_shared_prefixes_keep_the_most_recent_and_prefer_a_whole_match():
    def states(n):
        return ((torch.arange(n).view(1, 1, n, 1), -torch.arange(n).view(1, 1, n, 1)),)

    store = SharedPrefixes(size=2)
    store.put([1, 2, 3, 4], states(4))
    store.put([1, 2], states(2))

    assert store.lookup([1, 2, 9], minimum=2)[:2] == ((1, 2), 2)  # a whole key beats a partial one
    assert store.lookup([1, 2, 9], minimum=3) == ((), 0, None)
    key, matched, [(keys, values)] = store.lookup([1, 2, 3, 9], minimum=2)
    assert (key, matched) == ((1, 2, 3, 4), 3)
    assert keys.flatten().tolist() == [0, 1, 2] and values.flatten().tolist() == [0, -1, -2]

    store.put([7, 8], states(2))  # evicts (1, 2): (1, 2, 3, 4) was used since

    assert list(store.entries) == [(1, 2, 3, 4), (7, 8)]


@pytest.mark.parametrize("name", ["/no/such/model-folder", "no-such-org/no-such-model"])
def test_missing_model_is_a_one_line_load_error(name):
    with pytest.raises(ModelLoadError) as caught:
        LocalChatModel.from_pretrained(name)
    message = str(caught.value)
    assert name in message and "hf download" in message
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
def test_smollm2_converts_once_then_loads_from_cache(smollm2_converted, caplog):
    """The conversion a user's first tiny run makes: the session's, made once in an empty model
    cache before the first real tiny-preset test (tests/conftest.py) and loaded by all of them."""
    from idealagent.llms.smollm2 import is_converted, load_smollm2

    class Answer(BaseModel):
        answer: Literal["yes", "no"]
        reason: str = Field(max_length=80)

    assert "converting SmolLM2-135M-Instruct" in smollm2_converted.log
    assert "SmolLM2 converted in" in smollm2_converted.log
    assert is_converted(smollm2_converted.folder) and smollm2_converted.staging_left == []
    assert {p.name for p in smollm2_converted.folder.iterdir()} == {
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
        "chat_template.jinja"}

    started = time.perf_counter()
    with caplog.at_level("INFO", logger="idealagent.llms.smollm2"):
        chat = load_smollm2(max_new_tokens=64)  # the default folder: the session's cache
    assert time.perf_counter() - started < 10
    assert "converting" not in caplog.text

    structured = chat.with_structured_output(Answer, include_raw=True)
    question = [SystemMessage("Reply in JSON."), HumanMessage("Is the sky blue on a clear day?")]
    row = structured.invoke(question)
    assert row["parsing_error"] is None, row["raw"].content
    assert isinstance(row["parsed"], Answer)


def test_a_gguf_file_is_parsed_once_during_a_conversion(tmp_path, monkeypatch):
    """transformers opens the GGUF three times in a conversion, parses every field each time,
    and asks for its tensor-name table once per module; inside ``_one_gguf_read`` the openings
    share one parsed reader, each field is parsed once, and the askings share one table. The
    real functions are back afterwards."""
    import gguf
    import numpy as np
    from transformers import modeling_gguf_pytorch_utils as loader

    from idealagent.llms.smollm2 import _one_gguf_read

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("test.value", 7)
    writer.add_tensor("weight", np.arange(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    parsed = []
    parse = loader._gguf_parse_value
    monkeypatch.setattr(loader, "_gguf_parse_value", lambda *a: parsed.append(a) or parse(*a))
    counting = loader._gguf_parse_value
    original, original_names = gguf.GGUFReader, gguf.get_tensor_name_map
    llama = next(arch for arch, name in gguf.MODEL_ARCH_NAMES.items() if name == "llama")
    with _one_gguf_read():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first and isinstance(first, original)
        assert first.fields["test.value"].contents() == 7
        # over a plain array, not a numpy.memmap (whose every slice runs Python code), same bytes
        assert type(first.data) is np.ndarray and (first.data == np.memmap(path, mode="r")).all()
        assert (first.tensors[0].data == np.arange(4, dtype=np.float32)).all()
        assert gguf.GGUFReader(path, "c") is not first  # another mode is another reader
        names = gguf.get_tensor_name_map(llama, 2)
        assert gguf.get_tensor_name_map(llama, 2) is names and names.get_name("model.layers.1.mlp.up_proj") == "blk.1.ffn_up"
        assert gguf.get_tensor_name_map(llama, 3) is not names
        # transformers parses each field of the shared reader once, however often it loads
        field = first.fields["test.value"]
        part = field.parts[field.data[0]]
        assert loader._gguf_parse_value is not counting
        assert [loader._gguf_parse_value(part, field.types) for _ in range(3)] == [7, 7, 7] and len(parsed) == 1
    assert gguf.GGUFReader is original and gguf.get_tensor_name_map is original_names
    assert loader._gguf_parse_value is counting and gguf.gguf_reader.np is np
    assert type(gguf.GGUFReader(path).data) is np.memmap
