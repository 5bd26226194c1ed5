"""``CachedAnswerer``: an answerer whose replies are kept in a ``ResponseCache``.

It wraps any answerer that says what identifies its replies (``cache_identity()``: its model,
weights, prompt and limits; None when its replies are sampled, so not cacheable). A request's
key is that identity, the kind of request, the question and the image's pixel hash. One batch
with some hits sends only the misses to the answerer, in one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from idealagent.answerers import Answer, Reply, answer_each, caption_each, raise_first
from idealagent.response_cache import ResponseCache, image_digest, request_key

if TYPE_CHECKING:
    from PIL.Image import Image


class CachedAnswerer:
    """The answerer protocol over ``answerer``, with hits read from ``cache``; every other
    attribute (``max_concurrency``, ``chat_model``...) is the wrapped answerer's."""

    def __init__(self, answerer: Any, cache: ResponseCache) -> None:
        self.answerer = answerer
        self.cache = cache

    def __getattr__(self, name: str) -> Any:
        if name == "answerer":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.answerer, name)

    def __repr__(self) -> str:
        return f"CachedAnswerer({self.answerer!r})"

    def answer(self, requests: Sequence[tuple[Image, str]]) -> list[Reply]:
        """One answer per (image, question); raises the first failure."""
        return raise_first(self.answer_each(requests))

    def caption(self, images: Sequence[Image]) -> list[Reply]:
        """One description per image; raises the first failure."""
        return raise_first(self.caption_each(images))

    def answer_each(self, requests: Sequence[tuple[Image, str]]) -> list[Reply | Exception]:
        """One answer or one exception per request; only the misses reach the answerer."""
        requests = list(requests)
        keys = self._keys("answer", [image for image, _ in requests], [question for _, question in requests])
        return self.cache.through(keys, lambda missing: answer_each(self.answerer, [requests[i] for i in missing]),
                                  encode=reply_record, decode=reply_from_record)

    def caption_each(self, images: Sequence[Image]) -> list[Reply | Exception]:
        """One caption or one exception per image; only the misses reach the answerer."""
        images = list(images)
        keys = self._keys("caption", images, [""] * len(images))
        return self.cache.through(keys, lambda missing: caption_each(self.answerer, [images[i] for i in missing]),
                                  encode=reply_record, decode=reply_from_record)

    def _keys(self, kind: str, images: list[Image], questions: list[str]) -> list[str | None]:
        identity = self.answerer.cache_identity()  # asked each call: a server may stop sending logprobs
        if identity is None:
            return [None] * len(images)
        digests: dict[int, str] = {}  # a sample's sub-questions share its image: hash it once
        for image in images:
            if id(image) not in digests:
                digests[id(image)] = image_digest(image)
        return [request_key(identity, {"kind": kind, "image": digests[id(image)], "question": question})
                for image, question in zip(images, questions)]


def reply_record(reply: Reply) -> dict[str, Any]:
    """What a cached answer keeps: its text, token counts and probability (a plain string
    stays a plain string)."""
    if isinstance(reply, Answer):
        return {"text": reply.text, "input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens,
                "probability": reply.probability}
    return {"text": str(reply), "plain": True}


def reply_from_record(record: dict[str, Any]) -> Reply:
    """The answer a ``reply_record`` was made from."""
    if record.get("plain"):
        return str(record["text"])
    return Answer(str(record["text"]), int(record["input_tokens"]), int(record["output_tokens"]),
                  record["probability"])
