"""Chat models behind an OpenAI-compatible endpoint (vLLM, SGLang, TGI, or OpenAI itself).

This is the scale-out path: the questioner and reasoner talk to a server (or replicas behind a
load balancer) instead of a model in this process. ``EndpointChatModel`` is langchain-openai's
``ChatOpenAI`` with four things the loop needs from a shared server:

- a concurrency limit: never more than ``max_concurrency`` requests in flight from this model,
  however it is batched (``.batch()``, ``with_structured_output(...).batch()``, threads);
- the retry policy of ``idealagent.endpoints`` (backoff on 408/409/429, 5xx, timeouts and
  dropped connections; other errors fail at once), with the slot not held while waiting;
- one-line errors: an endpoint that answers with a non-JSON body or no choices raises
  ``ModelOutputError``; an unreachable or unauthorised one ``ServiceDownError``, and one still
  overloaded after every try ``InfrastructureError`` (neither is ever a result);
- token log-probabilities: asked for (``logprobs=True``, unless ``IDEALAGENT_LLM_LOGPROBS=0``),
  so each reply's ``response_metadata["logprobs"]`` holds them where the server sends them. A
  server that refuses the parameter (a 400 that names it) is asked once more without it, and
  never with it again.

``with_structured_output(schema, method="json_schema")`` sends ``response_format`` of type
``json_schema``, which vLLM and SGLang turn into constrained decoding. Servers that refuse it
(llama.cpp, llama-cpp-python) are asked in another form by the roles (idealagent/structured.py).
Token counts come back in ``AIMessage.usage_metadata`` and from there reach ``Trace.usage``.

``chat_model_from_env`` reads the ``IDEALAGENT_LLM_*`` variables described in
``idealagent.endpoints``.
"""

from __future__ import annotations

import threading
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import get_config_list
from pydantic import Field, PrivateAttr

from idealagent.capabilities import Capabilities
from idealagent.endpoints import (
    LLM_PREFIX,
    LOCAL_API_KEY,
    Endpoint,
    LogprobsSwitch,
    RetryPolicy,
    endpoint_from_env,
    endpoint_options,
    not_json_error,
    redact_url,
    untyped_messages,
)
from idealagent.errors import IdealAgentError, ModelLoadError, ModelOutputError, one_line
from idealagent.limits import AdaptiveLimit
from idealagent.response_cache import ResponseCache, message_from_record, message_record, request_key

try:
    import openai
    from langchain_openai import ChatOpenAI
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ModelLoadError(
        "OpenAI-compatible endpoints need langchain-openai: pip install 'idealagent[openai]'"
    ) from exc


# -- the chat model ---------------------------------------------------------------------------


class EndpointChatModel(ChatOpenAI):
    """``ChatOpenAI`` with a concurrency cap, tenacity retries and one-line endpoint errors."""

    max_concurrency: int = Endpoint.max_concurrency
    """Most requests this model (and its copies) has in flight at once."""
    retry_policy: RetryPolicy = RetryPolicy()
    """How often and how patiently a request is tried; only transient failures are retried."""
    response_cache: ResponseCache | None = Field(default=None, exclude=True, repr=False)
    """Where replies at temperature 0 are kept between runs (None: every call is sent)."""
    images_per_request: int = Field(default=0, ge=0)
    """Images one request may carry: 0 for a text model; for a served VLM, at most the server's
    own limit (vLLM's ``--limit-mm-per-prompt``). Above 0, the roles it serves may see (sight.py)."""

    _slots: tuple[int, AdaptiveLimit] | None = PrivateAttr(default=None)
    _slots_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _logprobs: LogprobsSwitch = PrivateAttr(default_factory=LogprobsSwitch)  # off once the server refuses

    @property
    def capabilities(self) -> Capabilities:
        """A server: log-probabilities asked for (until it refuses them), sampling, its limit,
        and images where it serves a VLM."""
        return Capabilities(logprobs=None if self._logprobs.on else False, temperature=True,
                            concurrency=self.max_concurrency, structured="probe",
                            images=self.images_per_request > 0, images_per_request=max(self.images_per_request, 1))

    def abandon(self) -> None:
        """Calls in flight were abandoned (Ctrl-C): free their slots, and retry none of them."""
        self._slot().abandon()

    def _slot(self) -> AdaptiveLimit:
        # Created on first use, so that model_copy(update={"max_concurrency": n}) gets its own.
        # It halves on 429 and grows back: max_concurrency is the ceiling.
        with self._slots_lock:
            if self._slots is None or self._slots[0] != self.max_concurrency:
                self._slots = (self.max_concurrency, AdaptiveLimit(self.max_concurrency))
            return self._slots[1]

    def __repr_args__(self) -> Any:
        # The key is a SecretStr already; a base URL may hold credentials too (user:key@host).
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name == "openai_api_base" and isinstance(value, str) else value

    def _describe(self) -> str:
        return f"endpoint {redact_url(str(self.openai_api_base))} (model {self.model_name})"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        key = self._cache_key(messages, stop, kwargs)
        if key is not None and (hit := self.response_cache.fetch(key, message_from_record)) is not None:
            return ChatResult(generations=[ChatGeneration(message=hit)])
        return self._kept(key, self._send(messages, stop, run_manager, **kwargs))

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        key = self._cache_key(messages, stop, kwargs)
        if key is not None and (hit := self.response_cache.fetch(key, message_from_record)) is not None:
            return ChatResult(generations=[ChatGeneration(message=hit)])
        return self._kept(key, await self._asend(messages, stop, run_manager, **kwargs))

    def _cache_key(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict) -> str | None:
        return None if self.response_cache is None else self.request_key(messages, stop=stop, **kwargs)

    def _kept(self, key: str | None, result: ChatResult) -> ChatResult:
        """``result``, stored under ``key`` (when there is one) as a hit will return it: one
        message whose metadata holds what LangChain would merge in from ``generation_info``."""
        if key is None or self.response_cache is None:
            return result
        generation = result.generations[0]
        message = generation.message.model_copy(update={"response_metadata": {
            **(generation.generation_info or {}), **generation.message.response_metadata}})
        self.response_cache.store(key, message_record(message))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _send(self, messages: list[BaseMessage], stop: list[str] | None = None,
              run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        parent = super()._generate
        slot = self._slot()

        def attempt() -> ChatResult:
            try:
                return parent(messages, stop=stop, run_manager=run_manager, **kwargs)
            except Exception as exc:
                if (error := self._not_json(exc)) is None:
                    raise
                raise error from exc

        def request() -> ChatResult:
            try:
                return attempt()
            except openai.BadRequestError as exc:
                if not self._logprobs.refused(exc, self._describe()):
                    raise
            return attempt()  # the same request without logprobs (_get_request_payload drops them)

        # The slot is held for the request only, not while backing off between tries.
        since = slot.generation
        return self.retry_policy.call(lambda: slot.run(request, since), self._describe())

    async def _asend(self, messages: list[BaseMessage], stop: list[str] | None = None,
                     run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        # Async callers bound concurrency with abatch's max_concurrency (set by with_config below).
        parent = super()._agenerate

        async def attempt() -> ChatResult:
            try:
                return await parent(messages, stop=stop, run_manager=run_manager, **kwargs)
            except Exception as exc:
                if (error := self._not_json(exc)) is None:
                    raise
                raise error from exc

        async def request() -> ChatResult:
            try:
                return await attempt()
            except openai.BadRequestError as exc:
                if not self._logprobs.refused(exc, self._describe()):
                    raise
            return await attempt()

        return await self.retry_policy.acall(request, self._describe())

    def _not_json(self, exc: Exception) -> ModelOutputError | None:
        """The one-line error ``exc`` stands for if it comes from a reply that is not JSON."""
        if isinstance(exc, openai.APIError | IdealAgentError):
            return None  # classified (and made one line) by the retry policy, or already ours
        return not_json_error(exc, self._describe())

    def _create_chat_result(self, response: Any, generation_info: dict | None = None) -> ChatResult:
        """Turn a malformed completion into a clear ModelOutputError instead of a KeyError."""
        if not isinstance(response, dict | openai.BaseModel):
            raise ModelOutputError(f"{self._describe()}: the reply is not JSON: {one_line(response, 120)}",
                                   raw=str(response)[:2000])
        choices = response.get("choices") if isinstance(response, dict) else getattr(response, "choices", None)
        if not choices:
            raise ModelOutputError(f"{self._describe()}: the reply has no choices; check the server log",
                                   raw=str(response)[:2000])
        result = super()._create_chat_result(response, generation_info)
        message = result.generations[0].message
        if not message.content and not getattr(message, "tool_calls", None):
            finish = (result.generations[0].generation_info or {}).get("finish_reason")
            raise ModelOutputError(f"{self._describe()}: the reply is empty (finish_reason {finish})")
        return result

    def _get_request_payload(self, input_: Any, *, stop: list[str] | None = None, **kwargs: Any) -> dict:
        # What ChatOpenAI hands the openai client: the messages go in as they are (see
        # endpoints.untyped_messages), the body sent is the same.
        return untyped_messages(self._payload(input_, stop=stop, **kwargs))

    def _payload(self, input_: Any, *, stop: list[str] | None = None, **kwargs: Any) -> dict:
        """The request body: ChatOpenAI's, with the older ``max_tokens`` and no logprobs once refused."""
        payload = super()._get_request_payload(input_, stop=stop, **kwargs)
        # ChatOpenAI renames max_tokens to OpenAI's newer max_completion_tokens. Every
        # OpenAI-compatible server knows the older name; not every one (or version) the newer.
        if "max_completion_tokens" in payload:
            payload["max_tokens"] = payload.pop("max_completion_tokens")
        if not self._logprobs.on:
            payload.pop("logprobs", None)
            payload.pop("top_logprobs", None)
        return payload

    def batch(self, inputs: list[Any], config: RunnableConfig | list[RunnableConfig] | None = None,
              *, return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        """Run the inputs on up to ``max_concurrency`` threads (LangChain's default is a few)."""
        configs = [{"max_concurrency": self.max_concurrency, **c} for c in get_config_list(config, len(inputs))]
        return super().batch(inputs, configs, return_exceptions=return_exceptions, **kwargs)

    def request_key(self, input_: Any, *, stop: list[str] | None = None, **kwargs: Any) -> str | None:
        """The response-cache key of one request: the endpoint and the very body that would be
        sent (messages, model, limits, response_format, logprobs); None unless it is at
        temperature 0 with one choice."""
        kwargs.pop("ls_structured_output_format", None)  # LangChain's tracing note, never sent
        payload = self._payload(input_, stop=stop, **kwargs)
        if payload.get("temperature") != 0 or payload.get("n") not in (None, 1):
            return None
        return request_key({"class": type(self).__name__, "base_url": str(self.openai_api_base)}, payload)

    def cache_identity(self) -> dict[str, Any] | None:
        """The endpoint and its default request settings (model, limits, logprobs); None
        unless replies are at temperature 0."""
        if self.temperature != 0:
            return None
        return {"class": type(self).__name__, "base_url": str(self.openai_api_base),
                "defaults": self._default_params, "logprobs": self._logprobs.on}

    def with_structured_output(self, schema: Any = None, **kwargs: Any) -> Runnable:
        """ChatOpenAI's structured output, batched on up to ``max_concurrency`` threads."""
        return super().with_structured_output(schema, **kwargs).with_config(max_concurrency=self.max_concurrency)


def make_chat_model(model: str, base_url: str, api_key: str = LOCAL_API_KEY, *, temperature: float = 0.0,
                    **options: Any) -> EndpointChatModel:
    """A chat model for ``model`` served at ``base_url``. ``options``: the other ``Endpoint``
    options (max_concurrency, timeout, attempts, max_tokens, retry waits, and ``logprobs``: False
    never sends the parameter), checked there; any other keyword goes to ChatOpenAI."""
    endpoint = Endpoint(base_url, model, api_key, **endpoint_options(options))
    return EndpointChatModel(
        model=model, base_url=base_url, api_key=endpoint.api_key, timeout=endpoint.timeout,
        max_retries=0,  # retries are ours (tenacity), so a slot is never held while backing off
        max_tokens=endpoint.max_tokens, temperature=temperature, max_concurrency=endpoint.max_concurrency,
        retry_policy=endpoint.retry, logprobs=True if endpoint.logprobs else None, **options,
    )


def chat_model_from_env(prefix: str = LLM_PREFIX, **overrides: Any) -> EndpointChatModel:
    """The questioner/reasoner chat model from ``<prefix>_*``; keyword arguments win over them."""
    endpoint = endpoint_from_env(prefix, model=overrides.get("model"))
    return make_chat_model(**{**vars(endpoint), **overrides})
