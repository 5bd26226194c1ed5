"""An Answerer backed by a vision-language model behind an OpenAI-compatible endpoint.

Each (image, sub-question) is one chat completion whose user turn holds the image as a
``data:`` URI ``image_url`` part and the text of ``prompts/vlm_answerer.yaml`` (the question and
"answer with a single word or phrase"). vLLM, SGLang and TGI serve such requests for models
like Qwen2.5-VL. Requests of a batch run concurrently on a bounded thread pool and come back in
input order; each distinct image is encoded once per batch.

Failures are loud, never an empty answer: a request that still fails after the retry policy
(``idealagent.endpoints.RetryPolicy``: 429, 5xx and timeouts are retried with backoff; 400,
401 and 404 are not), or whose reply is not JSON, has no choices or no text, gets a one-line
error in its place (``answer_each``), so only the samples whose requests failed are affected;
``answer`` raises the first. A service that is down raises at once.

Each request asks for token log-probabilities (``logprobs``), and an answer's ``probability``
is that of its tokens; None where the server sends none. A server that refuses the parameter
(a 400 that names it) gets the request again without it, and is not asked again;
``IDEALAGENT_VLM_LOGPROBS=0`` never asks. Captions carry no probability.

Configuration from the environment: ``OpenAIAnswerer.from_env()`` reads ``IDEALAGENT_VLM_*``
(falling back to ``IDEALAGENT_LLM_*``); see ``idealagent.endpoints`` for the variables.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import openai

from idealagent import parsing
from idealagent.answerers import Answer, raise_first
from idealagent.capabilities import Capabilities
from idealagent.confidence import TokenLogprob, answer_probability, logprobs_content
from idealagent.endpoints import (LOCAL_API_KEY, VLM_PREFIX, Endpoint, LogprobsSwitch, endpoint_from_env, redact_url,
                                  untyped_messages)
from idealagent.errors import IdealAgentError, ModelOutputError, failure_kind, one_line
from idealagent.images import encode_image
from idealagent.limits import AdaptiveLimit
from idealagent.looking.boxes import box_convention_of
from idealagent.prompts import load_prompt
from idealagent.threads import DaemonPool

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger(__name__)

ROLES = {"system": "system", "human": "user", "ai": "assistant"}


class OpenAIAnswerer:
    """Answers sub-questions (and captions images) with a VLM served over the OpenAI API."""

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key: str = LOCAL_API_KEY,
        *,
        max_tokens: int = 32,
        caption_max_tokens: int = 64,
        max_words: int = 8,
        temperature: float = 0.0,
        image_format: Literal["jpeg", "png"] = "jpeg",
        jpeg_quality: int = 90,
        prompts_dir: str | None = None,
        **connection: Any,
    ) -> None:
        """``connection``: the other ``Endpoint`` options (max_concurrency, timeout, attempts,
        retry_initial_wait, retry_max_wait, logprobs), checked there."""
        self.endpoint = endpoint = Endpoint(base_url, model, api_key, max_tokens=max_tokens, **connection)
        self.model, self.base_url = endpoint.model, endpoint.base_url
        self.max_concurrency = endpoint.max_concurrency
        self.max_tokens = max_tokens  # per answer: a word or a phrase
        self.caption_max_tokens = caption_max_tokens  # per caption: one sentence
        self.max_words = max_words  # answers are cut to this many words
        self.temperature = temperature
        self.image_format = image_format  # png is lossless; jpeg keeps request bodies small
        self.jpeg_quality = jpeg_quality
        self.retry = endpoint.retry
        self.logprobs = LogprobsSwitch(endpoint.logprobs)  # ask for token log-probabilities until refused
        self.prompt = load_prompt("vlm_answerer", prompts_dir)
        # The client's own retries are off: ours (tenacity) free the slot while backing off.
        self.client = openai.OpenAI(base_url=base_url, api_key=endpoint.api_key, timeout=endpoint.timeout,
                                    max_retries=0)
        self._slots = AdaptiveLimit(endpoint.max_concurrency)  # halves on 429 and grows back
        self._threads: DaemonPool | None = None  # made on first use
        self._pool_lock = threading.Lock()

    @classmethod
    def from_env(cls, prefix: str = VLM_PREFIX, **overrides: Any) -> OpenAIAnswerer:
        """The answerer described by ``<prefix>_*`` variables; keyword arguments win over them."""
        endpoint = endpoint_from_env(prefix, model=overrides.get("model"), max_tokens=32)
        return cls(**{**vars(endpoint), **overrides})

    @property
    def capabilities(self) -> Capabilities:
        """A server: log-probabilities asked for (until it refuses them), its concurrency limit,
        boxes as its model family writes them (by the served name: Qwen2.5-VL, Qwen2-VL). No
        ``likelihood``: the chat API scores no given reply (see docs/backends.md)."""
        return Capabilities(logprobs=None if self.logprobs.on else False, temperature=True,
                            concurrency=self.max_concurrency, boxes=box_convention_of(self.model))

    def abandon(self) -> None:
        """Requests in flight were abandoned (Ctrl-C): free their slots, and retry none of them."""
        self._slots.abandon()

    def __repr__(self) -> str:
        return f"OpenAIAnswerer(model={self.model!r}, base_url={redact_url(self.base_url)!r})"  # no key

    def cache_identity(self) -> dict[str, Any] | None:
        """What, besides the request, decides a reply (for ``CachedAnswerer``): the endpoint,
        the model, the limits, the prompt and whether logprobs are asked; None above
        temperature 0, where replies are sampled."""
        if self.temperature != 0:
            return None
        return {"class": type(self).__name__, "base_url": self.base_url, "model": self.model,
                "max_tokens": self.max_tokens, "caption_max_tokens": self.caption_max_tokens,
                "max_words": self.max_words, "image_format": self.image_format,
                "jpeg_quality": self.jpeg_quality, "logprobs": self.logprobs.on,
                "prompt": self.prompt.model_dump(mode="json")}

    # -- the Answerer protocol ----------------------------------------------------------------

    def answer(self, requests: Sequence[tuple[Image, str]]) -> list[Answer]:
        """One short answer per (image, question), in order; raises if any request failed."""
        return raise_first(self.answer_each(requests))

    def caption(self, images: Sequence[Image]) -> list[Answer]:
        """One sentence per image, in order; raises if any request failed."""
        return raise_first(self.caption_each(images))

    def answer_each(self, requests: Sequence[tuple[Image, str]]) -> list[Answer | Exception]:
        """Like ``answer``, but a request that failed has its error in its place, so one
        exhausted request costs only its own sample."""
        uris = self._encode_all([image for image, _ in requests])
        conversations = [self._messages(uris[id(image)], question) for image, question in requests]
        replies = self._complete_all(conversations, self.max_tokens)
        return [reply if isinstance(reply, Exception) else _or_error(self._short, reply) for reply in replies]

    def caption_each(self, images: Sequence[Image]) -> list[Answer | Exception]:
        """Like ``caption``, with each failed request's error in its place."""
        uris = self._encode_all(images)
        replies = self._complete_all([self._messages(uris[id(image)], "") for image in images],
                                     self.caption_max_tokens)
        return [reply if isinstance(reply, Exception) else _one_line_caption(reply.answer) for reply in replies]

    # -- requests ------------------------------------------------------------------------------

    def _encode_all(self, images: Sequence[Image]) -> dict[int, str]:
        """A data URI per distinct image object (a sample's sub-questions share its image)."""
        uris: dict[int, str] = {}
        for image in images:
            if id(image) not in uris:
                uris[id(image)] = encode_image(image, self.image_format, self.jpeg_quality)
        return uris

    def _messages(self, uri: str, question: str) -> list[dict[str, Any]]:
        """The prompt file's turns, with the image put before the text of the last user turn."""
        turns = [{"role": ROLES[m.type], "content": str(m.content)} for m in self.prompt.render(question=question)]
        turns[-1]["content"] = [{"type": "image_url", "image_url": {"url": uri}},
                                {"type": "text", "text": turns[-1]["content"]}]
        return turns

    def _complete_all(self, conversations: list[list[dict[str, Any]]], max_tokens: int) -> list[Completed | Exception]:
        """Every conversation's reply text (or its one-line error), in order: the calling thread
        sends the first itself, the others go to threads the answerer keeps (starting threads
        for every call costs more than the requests' own work). A service that is down raises."""
        if not conversations:
            return []
        futures = [self._pool().submit(self._outcome, messages, max_tokens) for messages in conversations[1:]]
        outcomes = [self._outcome(conversations[0], max_tokens), *(future.result() for future in futures)]
        errors = [o for o in outcomes if isinstance(o, Exception)]
        if errors:
            log.info("%d of %d requests to %s failed: %s", len(errors), len(outcomes), self._describe(),
                     one_line(errors[0]))
            down = next((e for e in errors if failure_kind(e) == "down"), None)
            if down is not None:
                raise down
        return outcomes

    def _pool(self) -> DaemonPool:
        with self._pool_lock:
            if self._threads is None:
                self._threads = DaemonPool(self.max_concurrency, "vlm-endpoint")
            return self._threads

    def _outcome(self, messages: list[dict[str, Any]], max_tokens: int) -> Completed | Exception:
        try:
            return self._complete(messages, max_tokens)
        except Exception as exc:  # in its request's place; the caller decides
            return exc

    def _complete(self, messages: list[dict[str, Any]], max_tokens: int) -> Completed:
        since = self._slots.generation
        return self.retry.call(lambda: self._request(messages, max_tokens, since), self._describe())

    def _request(self, messages: list[dict[str, Any]], max_tokens: int, since: int | None = None) -> Completed:
        options = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                   "temperature": self.temperature}
        if self.logprobs.on:
            options["logprobs"] = True
        try:
            # The slot is held for the request only, not while backing off between tries.
            raw = self._slots.run(lambda: self.client.chat.completions.with_raw_response.create(
                **untyped_messages(options)), since)
        except openai.BadRequestError as exc:
            if "logprobs" not in options or not self.logprobs.refused(exc, self._describe()):
                raise
            del options["logprobs"]  # the same request once more, without them
            raw = self._slots.run(lambda: self.client.chat.completions.with_raw_response.create(
                **untyped_messages(options)), since)
        return reply_answer(raw.http_response, self._describe())

    def _describe(self) -> str:
        return f"VLM endpoint {redact_url(self.base_url)} (model {self.model})"

    def _short(self, reply: Completed) -> Answer:
        text = reply.answer.text
        answer = parsing.short_answer(text, self.max_words)
        if not answer:
            raise ModelOutputError(f"{self._describe()}: no answer in the reply {text[:80]!r}", raw=text)
        full = reply.answer
        return Answer(answer, full.input_tokens, full.output_tokens, answer_probability(reply.tokens, answer))


class Completed(NamedTuple):
    """A reply, and its tokens' texts and log-probabilities (None: the server sent none)."""

    answer: Answer
    tokens: list[TokenLogprob] | None


def _one_line_caption(reply: Answer) -> Answer:
    return reply.with_text(" ".join(reply.text.split()))


def _or_error(parse: Any, reply: Completed) -> Answer | Exception:
    try:
        return parse(reply)
    except IdealAgentError as exc:
        return exc


def reply_answer(response: Any, describe: str) -> Completed:
    """The first choice's text from an HTTP response, with the reply's token usage and its
    tokens' log-probabilities (``choices[0].logprobs``); or a one-line ModelOutputError."""
    try:
        body = json.loads(response.text)
    except ValueError as exc:
        raise ModelOutputError(f"{describe}: the reply is not JSON: {one_line(response.text, 120)}",
                               raw=response.text[:2000]) from exc
    choices = body.get("choices") if isinstance(body, dict) else None
    if not choices:
        raise ModelOutputError(f"{describe}: the reply has no choices; check the server log", raw=response.text[:2000])
    choice = choices[0] if isinstance(choices[0], dict) else {}
    content = (choice.get("message") or {}).get("content")
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str) or not content.strip():
        raise ModelOutputError(
            f"{describe}: the reply is empty (finish_reason {choice.get('finish_reason')})", raw=response.text[:2000]
        )
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    answer = Answer(content.strip(), _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")))
    return Completed(answer, logprobs_content(choice.get("logprobs")))


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0
