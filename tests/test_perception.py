"""The tiny preset's answerer with the real EfficientNet-Lite0 weights, and a scripted chat model."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.runnables.config import get_config_list
from PIL import Image, ImageDraw

from idealagent.answerers import Answerer
from idealagent.answerers.perception import (
    ImageNetClassifier,
    PerceptionAnswerer,
    colour_layout,
    describe,
    dominant_colours,
)
from idealagent.errors import InputError, ModelLoadError
from idealagent.examples import EXAMPLES, example_image
from idealagent.images import load_image

CAT_CLASSES = {"tabby cat", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}


class ScriptedChatModel(BaseChatModel):
    """Replies from a queue, in order, and records every conversation and batch call."""

    replies: list[str]
    conversations: list[list[BaseMessage]] = []
    batch_calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def batch(self, inputs: list[Any], config: Any = None, **kwargs: Any) -> list[Any]:
        self.batch_calls += 1
        configs = get_config_list(config, len(inputs))
        return [self.invoke(c, cfg, **kwargs) for c, cfg in zip(inputs, configs)]  # in queue order

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kwargs: Any) -> ChatResult:
        self.conversations.append(messages)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(self.replies.pop(0)))])


class StructuredScriptedChatModel(ScriptedChatModel):
    """A scripted model that also supports ``with_structured_output``, recording how it was asked."""

    structured_calls: list[dict[str, Any]] = []

    def with_structured_output(self, schema: Any, *, include_raw: bool = False, **kwargs: Any) -> Runnable:
        self.structured_calls.append({"schema": schema, "include_raw": include_raw, **kwargs})

        def parse(message: AIMessage) -> dict[str, Any]:
            try:
                parsed = json.loads(message.content)
            except ValueError:
                parsed = None
            return {"raw": message, "parsed": parsed, "parsing_error": None}

        return self | RunnableLambda(parse)


@pytest.fixture(scope="module")
def classifier() -> ImageNetClassifier:
    return ImageNetClassifier()


def example(name: str) -> Image.Image:
    return load_image(example_image(name))


def test_examples_are_shipped_and_unknown_names_list_the_known_ones() -> None:
    for name in EXAMPLES:
        assert max(example(name).size) <= 512
    with pytest.raises(InputError, match="cat, coffee"):
        example_image("dog")


def test_classifier_recognises_the_cat_and_the_coffee_in_one_batch(classifier: ImageNetClassifier) -> None:
    cat, coffee = classifier.classify([example("cat"), example("coffee")], top_k=3)

    assert len(cat) == len(coffee) == 3
    assert CAT_CLASSES & {g.label for g in cat}
    assert {"espresso", "cup"} & {g.label for g in coffee}
    assert coffee[0].probability > 0.5
    assert all(a.probability >= b.probability for a, b in zip(cat, cat[1:]))


def test_dominant_colours_of_a_red_square_on_white() -> None:
    image = Image.new("RGB", (100, 100), "white")
    ImageDraw.Draw(image).rectangle((30, 30, 69, 69), fill=(220, 20, 30))  # 16% of the pixels

    colours = dict(dominant_colours(image, k=3))

    assert list(colours)[:2] == ["white", "red"]
    assert colours["white"] == pytest.approx(0.84, abs=0.03)
    assert colours["red"] == pytest.approx(0.16, abs=0.03)
    assert colour_layout(image) == ("white", "red")


def test_a_tiny_shape_still_stands_out_against_the_edges() -> None:
    image = Image.new("RGB", (64, 64), (238, 253, 247))  # easy-VQA's pastel backgrounds
    ImageDraw.Draw(image).ellipse((10, 40, 14, 44), fill=(0, 128, 128))

    assert colour_layout(image) == ("white", "teal")


def test_easy_vqa_images_are_described_with_their_shape_colour(classifier: ImageNetClassifier) -> None:
    easy_vqa = pytest.importorskip("easy_vqa")
    questions, answers, image_ids = easy_vqa.get_test_questions()
    colour_of = {i: a for q, a, i in zip(questions, answers, image_ids) if q.startswith("what is the color")}
    paths = easy_vqa.get_test_image_paths()
    ids = sorted(colour_of)[:8]

    descriptions = describe([load_image(paths[i]) for i in ids], classifier)

    for i, text in zip(ids, descriptions):  # as the shape's colour (shapes.py), or the layout's
        assert f"{colour_of[i]} shape stands out" in text or f"{colour_of[i]} stands out" in text


def test_caption_says_what_and_which_colours(classifier: ImageNetClassifier) -> None:
    answerer = PerceptionAnswerer(ScriptedChatModel(replies=[]), classifier=classifier)

    cat, coffee = answerer.caption([example("cat"), example("coffee")])

    assert isinstance(answerer, Answerer)
    assert "cat" in cat and "brown" in cat
    assert cat.startswith("The picture probably shows")
    assert coffee.startswith("The picture very likely shows an espresso")


def test_answer_batches_once_describes_each_image_once_and_trims(
    classifier: ImageNetClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    # JSON; plain text over two lines; nothing at all; JSON cut off by the token limit.
    replies = ['{"answer": "a cat."}', "Brown and gray.\nIt has stripes.", "", '{"answer": "yes, there is a big']
    llm = ScriptedChatModel(replies=replies)
    answerer = PerceptionAnswerer(llm, classifier=classifier)
    cat, coffee = example("cat"), example("coffee")
    forward_passes: list[int] = []
    real_classify = classifier.classify

    def counting_classify(images: list[Image.Image], top_k: int = 3) -> Any:
        forward_passes.append(len(images))
        return real_classify(images, top_k)

    monkeypatch.setattr(classifier, "classify", counting_classify)

    questions = ["What animal is it?", "What colour is its fur?", "Is it asleep?", "Is there a cup?"]
    answers = answerer.answer(list(zip([cat, cat, cat, coffee], questions)))

    assert list(map(str, answers)) == ["a cat", "Brown and gray", "unknown", "yes, there is a big"]
    assert llm.batch_calls == 1 and len(llm.conversations) == 4
    assert forward_passes == [2]  # one forward pass over the two distinct images
    last_turns = [c[-1].content for c in llm.conversations]
    assert "Question: What colour is its fur?" in last_turns[1]
    assert last_turns[0].split("Question:")[0] == last_turns[2].split("Question:")[0]
    assert "espresso" in last_turns[3] and "espresso" not in last_turns[0]
    assert answerer.answer([]) == []


def test_long_answers_are_cut_to_a_few_words(classifier: ImageNetClassifier) -> None:
    llm = ScriptedChatModel(replies=["Answer: the cat is sitting on a blanket next to a wooden door. Then"])
    answerer = PerceptionAnswerer(llm, classifier=classifier)

    (answer,) = answerer.answer([(example("cat"), "Where is the cat?")])

    assert str(answer) == "the cat is sitting on a blanket next"


def test_structured_output_is_used_where_the_model_supports_it(classifier: ImageNetClassifier) -> None:
    llm = StructuredScriptedChatModel(replies=['{"answer": "two"}', "Not JSON at all. More words"])
    answerer = PerceptionAnswerer(llm, classifier=classifier)

    answers = answerer.answer([(example("coffee"), "How many cups?"), (example("coffee"), "Is it hot?")])

    assert list(map(str, answers)) == ["two", "Not JSON at all"]
    (call,) = llm.structured_calls
    assert call["method"] == "json_schema" and call["include_raw"]
    assert call["schema"]["properties"]["answer"]["maxLength"] == 40
    assert llm.batch_calls == 1


def test_a_missing_package_is_a_model_load_error_with_a_pip_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # makes the import fail

    with pytest.raises(ModelLoadError, match="pip install .*efficientnet-lite-pytorch"):
        ImageNetClassifier()


class IdentifiedChatModel(ScriptedChatModel):
    """A scripted model that says what identifies it, as LocalChatModel does (None: it samples)."""

    temperature: float = 0.0

    def cache_identity(self) -> dict[str, Any] | None:
        return {"class": "IdentifiedChatModel"} if self.temperature == 0 else None


def test_a_cached_rerun_asks_the_llm_nothing_and_a_sampling_llm_is_never_cached(
    classifier: ImageNetClassifier, tmp_path
) -> None:
    from idealagent.answerers.cached import CachedAnswerer
    from idealagent.response_cache import ResponseCache

    cache = ResponseCache(tmp_path)
    llm = IdentifiedChatModel(replies=['{"answer": "a cat"}'] * 4, conversations=[])
    cached = CachedAnswerer(PerceptionAnswerer(llm, classifier=classifier), cache)
    requests = [(example("cat"), "What animal is it?")]
    first, again = cached.answer(requests), cached.answer(requests)

    assert list(map(str, again)) == list(map(str, first)) == ["a cat"]
    assert len(llm.conversations) == 1
    assert cached.caption([example("cat")]) == cached.caption([example("cat")])

    sampling = IdentifiedChatModel(replies=['{"answer": "a cat"}'] * 4, conversations=[], temperature=0.7)
    wrapped = CachedAnswerer(PerceptionAnswerer(sampling, classifier=classifier), cache)
    wrapped.answer(requests)
    wrapped.answer(requests)
    assert len(sampling.conversations) == 2


def test_options_are_scored_by_the_local_llm_as_its_json_reply(classifier: ImageNetClassifier, tmp_path) -> None:
    import torch

    from idealagent.llms.local import LocalChatModel
    from tests.tiny_models import make_tiny_llama

    llm = LocalChatModel.from_pretrained(make_tiny_llama(tmp_path / "llama"), max_batch_size=2)
    answerer = PerceptionAnswerer(llm, classifier=classifier)
    assert answerer.capabilities.likelihood
    assert not PerceptionAnswerer(ScriptedChatModel(replies=[]), classifier=classifier).capabilities.likelihood
    cat, coffee = example("cat"), example("coffee")
    requests = [(cat, "What animal?", ["a cat", "a dog", "a very large horse"]), (coffee, "Hot?", ["yes", "no"])]
    scored = answerer.option_logprobs(requests)
    assert [len(scores) for scores in scored] == [3, 2]
    for (image, question, options), scores in zip(requests, scored):
        conversation = answerer.prompt.render(description=answerer.caption([image])[0], question=question)
        prompt = llm.render(conversation)
        for option, score in zip(options, scores):
            # By hand: the reply as the exemplars write it, then the stop token, each token's
            # log-softmax at the position before it, from one unpadded forward pass.
            reply = json.dumps({"answer": option}) + llm.tokenizer.eos_token
            start = len(llm.tokenizer(prompt, add_special_tokens=False)["input_ids"])
            ids = llm.tokenizer(prompt + reply, add_special_tokens=False)["input_ids"]
            with torch.inference_mode():
                logits = llm.model(input_ids=torch.tensor([ids])).logits[0].float()
            expected = sum(torch.log_softmax(logits[t - 1], dim=-1)[ids[t]].item() for t in range(start, len(ids)))
            assert score.tokens == len(ids) - start
            assert score.logprob == pytest.approx(expected, abs=1e-4)
