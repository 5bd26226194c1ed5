"""TransformersAnswerer on tiny random VLMs of every supported architecture (CPU, no hub)."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from idealagent.agent import IdealAgent
from idealagent.answerers import Answer, tokens_of
from idealagent.answerers.transformers import TransformersAnswerer
from idealagent.errors import ImageError, InfrastructureError, ModelLoadError, ModelOutputError
from tests.tiny_models import make_tiny_llama
from tests.tiny_vlms import BUILDERS

pytest.importorskip("transformers")


@pytest.fixture
def images():
    return Image.new("RGB", (40, 30), "red"), Image.new("RGB", (60, 30), "blue")


def outcome(result):
    """Comparable form of one answer_each result: the text, or the raw text behind an error."""
    return result.text if isinstance(result, Answer) else (type(result).__name__, getattr(result, "raw", str(result)))


@pytest.mark.parametrize("arch", list(BUILDERS))
def test_batched_answers_equal_one_by_one(arch, vlm_dir, images):
    answerer = TransformersAnswerer.from_pretrained(vlm_dir(arch), max_new_tokens=6, max_batch_size=2)
    red, blue = images
    requests = [(red, "What is it?"), (blue, "What colour is the shape on the left?"), (red, "Is it a car?")]
    batched = answerer.answer_each(requests)
    singles = [answerer.answer_each([r])[0] for r in requests]
    assert [outcome(r) for r in batched] == [outcome(r) for r in singles]
    # Token counts leave the padding out, so a row costs the same in a batch as alone.
    answers = [(r, s) for r, s in zip(batched, singles) if isinstance(r, Answer)]
    assert [tokens_of(r) for r, _ in answers] == [tokens_of(s) for _, s in answers]
    assert all(tokens_of(r)[0] > 0 and 1 <= tokens_of(r)[1] <= 6 for r, _ in answers)
    for result in batched:  # a short answer, or an error that says what went wrong: never ""
        assert (isinstance(result, Answer) and result.text and "\n" not in result.text) or isinstance(
            result, ModelOutputError)
    if arch != "paligemma":  # the random PaliGemma only emits newlines, which trim to an error
        assert all(isinstance(caption, Answer) and caption.text for caption in answerer.caption([red, blue]))


@pytest.mark.parametrize("arch", ["qwen2_vl", "llava_next", "idefics3"])
def test_each_image_is_preprocessed_once_per_call(arch, vlm_dir, images, monkeypatch):
    answerer = TransformersAnswerer.from_pretrained(vlm_dir(arch), max_new_tokens=3, max_batch_size=2)
    red, blue = images
    requests = [(red, "What is it?"), (blue, "Which colour?"), (red, "Is it a car?"), (red, "How big is it?")]
    expected = [outcome(r) for r in answerer.answer_each(requests)]
    seen: list[int] = []
    image_processor_class = type(answerer.processor.image_processor)
    real_call = image_processor_class.__call__

    def counting(self, images, *args, **kwargs):
        nested = images and isinstance(images[0], list)
        seen.extend(id(image) for image in ([i for group in images for i in group] if nested else images))
        return real_call(self, images, *args, **kwargs)

    monkeypatch.setattr(image_processor_class, "__call__", counting)
    assert [outcome(r) for r in answerer.answer_each(requests)] == expected  # 2 generate calls
    assert sorted(seen) == sorted([id(red), id(blue)])


def test_out_of_memory_splits_the_batch_down_to_one(qwen, images, monkeypatch):
    import torch

    red, blue = images
    requests = [(red, "What is it?"), (blue, "Which colour?"), (red, "Is it a car?"), (blue, "Why?")]
    expected = [outcome(r) for r in qwen.answer_each(requests)]
    real_generate, sizes = qwen.model.generate, []

    def generate(**inputs):
        sizes.append(inputs["input_ids"].shape[0])
        if inputs["input_ids"].shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_generate(**inputs)

    monkeypatch.setattr(qwen.model, "generate", generate)
    assert [outcome(r) for r in qwen.answer_each(requests)] == expected
    assert sizes == [4, 2, 1, 1, 2, 1, 1]

    def always_out_of_memory(**inputs):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(qwen.model, "generate", always_out_of_memory)
    results = qwen.answer_each(requests[:2])
    # Not the samples' fault: an infrastructure failure, which is never a result.
    assert all(isinstance(r, InfrastructureError) and "out of memory" in str(r) for r in results)
    with pytest.raises(InfrastructureError, match="out of memory"):
        qwen.answer(requests[:1])


def test_a_rejected_image_fails_only_its_own_requests(qwen, images):
    red, blue = images
    tiny = Image.new("RGB", (1, 400), "green")  # aspect ratio beyond what Qwen2-VL resizes
    requests = [(red, "What is it?"), (tiny, "What is it?"), (blue, "Which colour?"), (tiny, "Why?")]
    results = qwen.answer_each(requests)
    assert [ImageError if isinstance(r, ImageError) else type(r).__mro__[-2] for r in results] == [
        Answer, ImageError, Answer, ImageError]
    assert "rejected a 1x400 RGB image" in str(results[1]) and "\n" not in str(results[1])
    assert [results[0], results[2]] == qwen.answer([requests[0], requests[2]])
    with pytest.raises(ImageError, match="rejected"):
        qwen.answer(requests)


def test_a_text_only_checkpoint_is_refused(tmp_path):
    folder = make_tiny_llama(tmp_path / "llama")
    with pytest.raises(ModelLoadError, match="'llama' model, not an image-text-to-text model"):
        TransformersAnswerer.from_pretrained(folder)


def test_a_missing_chat_template_is_refused(vlm_dir, tmp_path):
    folder = shutil.copytree(vlm_dir("llava"), tmp_path / "no_template")
    (folder / "chat_template.jinja").unlink()
    for name in ("tokenizer_config.json", "processor_config.json"):
        saved = json.loads((folder / name).read_text())
        saved.pop("chat_template", None)
        (folder / name).write_text(json.dumps(saved))
    with pytest.raises(ModelLoadError, match="no chat template"):
        TransformersAnswerer.from_pretrained(folder)


def test_missing_weights_name_what_to_do(tmp_path):
    with pytest.raises(ModelLoadError, match="not found") as error:
        TransformersAnswerer.from_pretrained(tmp_path / "nowhere")
    assert "\n" not in str(error.value)
    with pytest.raises(ModelLoadError, match="hf download someone/not-cached-vlm"):
        TransformersAnswerer.from_pretrained("someone/not-cached-vlm")


def test_pickle_only_weights_are_refused(vlm_dir, tmp_path):
    folder = shutil.copytree(vlm_dir("llava"), tmp_path / "bin_only")
    for weights in folder.glob("*.safetensors"):
        weights.rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="only pytorch_model.bin"):
        TransformersAnswerer.from_pretrained(folder)


def test_loading_is_local_safe_and_runs_no_remote_code(vlm_dir, monkeypatch):
    from transformers import AutoModelForImageTextToText

    seen = {}
    real = AutoModelForImageTextToText.from_pretrained

    def spy(name, **kwargs):
        seen.update(kwargs)
        return real(name, **kwargs)

    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", spy)
    TransformersAnswerer.from_pretrained(vlm_dir("llava"))
    assert seen["local_files_only"] is True and seen["use_safetensors"] is True
    assert seen["trust_remote_code"] is False


def test_one_model_plays_every_role(qwen, images):
    llm = qwen.chat_model(max_new_tokens=700)  # the schemas bound every string, so JSON always closes
    assert llm.model is qwen.model and llm.tokenizer is qwen.processor.tokenizer
    agent = IdealAgent(llm, qwen, max_rounds=1, max_sub_questions=1, structured="auto", attempts=1)
    trace = agent.run(images[0], "Is the picture red?", kind="yes_no")
    assert trace.error is None and trace.caption  # the answerer looked at the image
    assert trace.stop_reason in {"confident", "max_rounds"}, trace.rounds[-1].failures
    assert trace.answer in {"yes", "no"} and trace.rounds[0].sub_qas[0].answer
    assert trace.usage.llm_calls == 2 and trace.usage.answerer_calls == 2  # the direct answer and one sub-answer
    assert trace.usage.llm_input_tokens > 0 and trace.usage.llm_output_tokens > 0
    assert trace.usage.answerer_input_tokens > 0 and trace.usage.answerer_output_tokens > 0  # caption + answer


def test_constrained_decoding_gives_schema_valid_json(qwen):
    schema = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]},
                                               "confidence": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["answer", "confidence"], "additionalProperties": False}
    structured = qwen.chat_model(max_new_tokens=32).with_structured_output(schema)
    replies = structured.batch(["Is the sky blue?", "Answer in JSON please, is grass red?"])
    for reply in replies:
        assert reply["answer"] in {"yes", "no"} and 0 <= reply["confidence"] <= 9


def test_a_cached_rerun_generates_nothing_and_other_pixels_miss(qwen, images, monkeypatch, tmp_path):
    from idealagent.answerers.cached import CachedAnswerer
    from idealagent.response_cache import ResponseCache

    calls = []
    generate = qwen.model.generate
    monkeypatch.setattr(qwen.model, "generate", lambda *a, **k: calls.append(1) or generate(*a, **k))
    cached = CachedAnswerer(qwen, ResponseCache(tmp_path))
    red, blue = images
    first = cached.answer_each([(red, "What is it?"), (blue, "What is it?")])
    again = cached.answer_each([(red.copy(), "What is it?"), (blue.copy(), "What is it?")])

    failed = any(not isinstance(r, Answer) for r in first)  # a failure is never kept: asked again
    assert len(calls) == 1 + failed
    assert [outcome(r) for r in again] == [outcome(r) for r in first]
    assert [r.probability for r in again if isinstance(r, Answer)] == [
        r.probability for r in first if isinstance(r, Answer)]
    cached.answer_each([(Image.new("RGB", (40, 30), "green"), "What is it?")])
    assert len(calls) == 2 + failed


def test_a_random_qwen2_vl_searches_a_large_picture_within_its_budget(qwen, tmp_path):
    """The search through the real processor: views sized to its 28-pixel grid, never past the
    budget, and the pipelined and lock-step loops look at the same views."""
    picture = tmp_path / "large.png"
    Image.new("RGB", (1600, 1200), "white").save(picture)
    sizes: list[tuple[int, int]] = []
    real = qwen.answer

    def answer(requests):
        sizes.extend(image.size for image, _ in requests)
        return real(requests)

    qwen.answer = answer
    try:
        searches = []
        for pipeline in (True, False):
            llm = qwen.chat_model(max_new_tokens=700)
            agent = IdealAgent(llm, qwen, max_rounds=1, max_sub_questions=1, attempts=1, zoom="on", look_budget=5,
                               pipeline=pipeline)
            trace = agent.run(str(picture), "What colour is the small cup?")
            assert trace.search is not None and trace.search.mode == "quadtree" and trace.search.target == "small cup"
            assert 1 <= trace.search.calls <= 5 and trace.usage.steps["look"] == trace.search.calls
            searches.append(trace.search.model_dump())
        assert searches[0] == searches[1]
        assert all(w % 28 == 0 and h % 28 == 0 for w, h in sizes)
    finally:
        del qwen.answer


# -- options scored by likelihood (V* Bench's official protocol) -------------------------------------


def _manual_option_logprob(answerer, image, question, option):
    """The option's tokens (and the end of its turn) scored by hand: one unpadded row, the whole
    sequence's logits, each reply token's log-softmax at the position before it, summed."""
    import torch

    turn = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
    prompt = answerer.processor.apply_chat_template([turn], add_generation_prompt=True, tokenize=False)
    text = prompt + option + "<|im_end|>"  # Qwen2-VL's chat template ends a turn so
    encode = lambda t: answerer.processor(text=[t], images=[image], return_tensors="pt")  # noqa: E731
    start = encode(prompt)["input_ids"].shape[1]
    inputs = encode(text)
    with torch.inference_mode():
        logits = answerer.model(**inputs).logits[0].float()
    ids = inputs["input_ids"][0]
    total = sum(torch.log_softmax(logits[t - 1], dim=-1)[ids[t]].item() for t in range(start, len(ids)))
    return total, len(ids) - start


def test_option_scores_equal_the_token_logprobs_computed_by_hand(qwen, images):
    red, blue = images
    requests = [(red, "What colour is it?", ["red", "a dark blue thing", "green"]),
                (blue, "Which side?", ["left", "right"])]
    scored = qwen.option_logprobs(requests)
    for (image, question, options), scores in zip(requests, scored):
        assert len(scores) == len(options)
        for option, score in zip(options, scores):
            logprob, tokens = _manual_option_logprob(qwen, image, question, option)
            assert score.tokens == tokens and tokens >= 2  # the option's tokens and the end of the turn
            assert score.logprob == pytest.approx(logprob, abs=1e-4)
    # Batched in twos, padded differently: the same scores.
    small = TransformersAnswerer(qwen.model, qwen.processor, max_batch_size=2)
    assert [[round(s.logprob, 4) for s in r] for r in small.option_logprobs(requests)] == [
        [round(s.logprob, 4) for s in r] for r in scored]


@pytest.mark.parametrize("arch", ["llava", "idefics3"])
def test_option_scores_in_a_padded_batch_equal_those_alone(arch, vlm_dir, images):
    answerer = TransformersAnswerer.from_pretrained(vlm_dir(arch), max_batch_size=8)
    red, blue = images
    requests = [(red, "What colour?", ["red", "a blue thing", "green"]), (blue, "Where?", ["left", "right"])]
    batched = answerer.option_logprobs(requests)
    alone = [[answerer.option_logprobs([(image, question, [option])])[0][0] for option in options]
             for image, question, options in requests]
    assert [[(round(s.logprob, 4), s.tokens) for s in r] for r in batched] == [
        [(round(s.logprob, 4), s.tokens) for s in r] for r in alone]


def test_a_rejected_image_fails_only_its_own_option_request(qwen, images):
    red, _ = images
    tiny = Image.new("RGB", (1, 400), "green")
    results = qwen.option_logprobs([(red, "What?", ["a", "b"]), (tiny, "What?", ["a", "b"])])
    assert len(results[0]) == 2 and isinstance(results[1], ImageError)


@pytest.mark.parametrize(("arch", "likelihood", "boxes"), [
    ("qwen2_vl", True, "norm1000"), ("qwen2_5_vl", True, "pixels"), ("llava", True, None),
    ("paligemma", False, None)])
def test_capabilities_say_how_boxes_are_written_and_whether_options_are_scored(arch, likelihood, boxes, vlm_dir):
    answerer = TransformersAnswerer.from_pretrained(vlm_dir(arch), max_new_tokens=2)
    assert answerer.capabilities.likelihood is likelihood and answerer.capabilities.boxes == boxes
