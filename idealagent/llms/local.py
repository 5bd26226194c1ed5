"""``LocalChatModel``: a LangChain chat model over a local transformers causal LM.

Unlike ``BaseChatModel.batch`` (a thread per input), ``.batch()`` here renders every
conversation with the tokenizer's chat template and runs one left-padded ``generate`` call per
chunk of ``max_batch_size``. The token prefix that a chunk's prompts share (a role's system
prompt and few-shot turns) is prefilled once, not once per row, and kept for later calls. A
``json_schema`` call option turns on xgrammar-constrained decoding, which is what
``with_structured_output`` binds. Every reply carries its tokens' log-probabilities under the
model's raw logits, in the OpenAI form (``response_metadata["logprobs"]["content"]``), so
``idealagent.confidence`` reads local and served replies alike. torch and transformers are
imported only when a model is loaded or run.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManager, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult, LLMResult
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.runnables.config import get_config_list, run_in_executor
from langchain_core.utils.utils import LC_ID_PREFIX
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from idealagent.answerers.vlm_processing import OncePerImage, model_inputs
from idealagent.capabilities import Capabilities
from idealagent.errors import ModelLoadError, ModelOutputError, one_line
from idealagent.llms.loading import (SHARED_LOAD_KWARGS, load_failure_message, quiet_loading,
                                    require_chat_template)
from idealagent.llms.logprobs import cut_pieces, raw_logprob_processors, token_pieces
from idealagent.llms.prefix_cache import (
    PREFIX_CACHE_ENTRIES,
    SharedPrefixes,
    cache_keyword,
    pad_after_prefix,
    shared_prefix,
)
from idealagent.llms.vision import Pictures, digests, image_data, template_turn
from idealagent.response_cache import (
    ResponseCache,
    message_from_record,
    message_record,
    request_key,
    weights_identity,
)

# LangChain message types -> chat-template roles.
ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}
# Images one conversation of a VLM chat model may carry: the picture and two views, each up to
# about 1,280 image tokens (sight.ROLE_MAX_PIXELS), so a batch of them fits beside the weights.
VLM_IMAGES_PER_REQUEST = 3

# One xgrammar compiler per tokenizer (and vocabulary size and stop tokens), shared by every
# LocalChatModel over it: the role copies of one model (``model_copy``) then build its token
# table once, not once each (about 0.4 s a time for SmolLM2's 49k tokens), and reuse each
# other's compiled schemas (the compiler keeps them).
_COMPILERS: weakref.WeakKeyDictionary[Any, dict[tuple, Any]] = weakref.WeakKeyDictionary()
_COMPILERS_LOCK = threading.Lock()


class LocalChatModel(BaseChatModel):
    """A chat model over a loaded transformers causal LM and its tokenizer."""

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    model: Any = Field(exclude=True, repr=False)
    """A loaded transformers ``PreTrainedModel`` with a language-modelling head."""
    tokenizer: Any = Field(exclude=True, repr=False)
    """Its tokenizer; it must have a chat template."""
    model_name: str = ""
    """Folder or hub id the weights came from, for traces and response metadata."""
    max_new_tokens: int = 256
    """Default cap on generated tokens per reply; a call may pass its own."""
    max_batch_size: int = 8
    """Most conversations in one ``generate`` call."""
    temperature: float = 0.0
    """0 decodes greedily (reproducible); above 0 samples."""
    repetition_penalty: float = 1.0
    """Above 1, discourages tokens this reply already produced (never the prompt's, so copying
    from the prompt stays free). Small greedy models otherwise loop on a phrase."""
    prefix_cache: bool = True
    """Prefill the token prefix a chunk's prompts share once and keep it for later calls; the
    replies are the same either way. Models whose cache is not a plain ``DynamicCache`` (sliding
    windows, state-space layers, static caches) always take the plain path."""
    chat_template: str | None = None
    """A template to use instead of the tokenizer's (a VLM's may live on its processor)."""
    content_parts: bool = False
    """Send each turn's text as ``[{"type": "text", "text": ...}]``, the shape VLM chat
    templates expect, instead of a plain string."""
    response_cache: ResponseCache | None = Field(default=None, exclude=True, repr=False)
    """Where greedy replies are kept between runs (None: every call generates); sampled
    replies are never kept."""
    processor: Any = Field(default=None, exclude=True, repr=False)
    """A VLM's processor, when the weights are a VLM's (``TransformersAnswerer.chat_model``):
    messages may then carry images (llms/vision.py), and rows with images go through it."""

    _prefixes: SharedPrefixes = PrivateAttr(
        default_factory=lambda: SharedPrefixes(PREFIX_CACHE_ENTRIES))
    _weights: dict[str, Any] | None = PrivateAttr(default=None)  # weights_identity, read once

    @model_validator(mode="after")
    def _prepare_local_tokenizer(self) -> LocalChatModel:
        if not self.chat_template:
            require_chat_template(self.tokenizer, self.model_name)
        if self.tokenizer.pad_token is None:
            # Left-padding a batch needs a pad token; it is masked out, so any token will do.
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.processor is not None:
            self.processor.tokenizer.padding_side = "left"  # generate continues every row from its last column
        return self

    @property
    def capabilities(self) -> Capabilities:
        """A local model: log-probabilities, sampling, grammar-constrained JSON; a VLM's takes
        the picture and views (up to ``VLM_IMAGES_PER_REQUEST`` images a conversation)."""
        sees = self.processor is not None
        return Capabilities(logprobs=True, temperature=True, structured="grammar", images=sees,
                            images_per_request=VLM_IMAGES_PER_REQUEST if sees else 1)

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        *,
        dtype: Any = None,
        device: str | None = None,
        max_new_tokens: int = 256,
        max_batch_size: int = 8,
        **load_kwargs: Any,
    ) -> LocalChatModel:
        """Load from a local folder or the local Hugging Face cache; never downloads."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        name = str(path_or_id)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype is None:
            dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
        load_kwargs = {"local_files_only": True, "trust_remote_code": False, **load_kwargs}
        if "gguf_file" not in load_kwargs:
            load_kwargs.setdefault("use_safetensors", True)
        tokenizer_kwargs = {k: v for k, v in load_kwargs.items() if k in SHARED_LOAD_KWARGS}
        try:
            with quiet_loading():
                tokenizer = AutoTokenizer.from_pretrained(name, **tokenizer_kwargs)
                require_chat_template(tokenizer, name)
                model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **load_kwargs)
        except (OSError, ValueError) as error:  # transformers' "not found" and "not a model"
            raise ModelLoadError(load_failure_message(name, error)) from error
        return cls(
            model=model.to(device).eval(),
            tokenizer=tokenizer,
            model_name=name,
            max_new_tokens=max_new_tokens,
            max_batch_size=max_batch_size,
        )

    @property
    def _llm_type(self) -> str:
        return "idealagent-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "max_new_tokens": self.max_new_tokens,
                "temperature": self.temperature}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        [reply] = self._cached_reply([messages], stop=stop, **kwargs)
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage | Exception]:
        """Reply to every input with batched ``generate`` calls; kwargs as for ``invoke``."""
        if not inputs:
            return []
        conversations = [self._convert_input(x).to_messages() for x in inputs]
        configs = get_config_list(config, len(inputs))
        runs = [self._start_run(c, cfg, kwargs) for c, cfg in zip(conversations, configs)]
        try:
            replies = self._cached_reply(conversations, **kwargs)
        except Exception as error:
            for run in runs:
                run.on_llm_error(error)
            if return_exceptions:
                return [error] * len(inputs)
            raise
        for run, reply in zip(runs, replies):
            reply.id = f"{LC_ID_PREFIX}-{run.run_id}-0"  # as invoke names its messages
            run.on_llm_end(LLMResult(generations=[[ChatGeneration(message=reply)]]))
        return replies

    async def abatch(self, inputs, config=None, *, return_exceptions=False, **kwargs) -> list:
        """``batch`` in a worker thread, so the event loop is free while the model runs."""
        return await run_in_executor(
            None, self.batch, inputs, config, return_exceptions=return_exceptions, **kwargs
        )

    def _cached_reply(self, conversations: list[list[BaseMessage]], **options: Any) -> list[AIMessage]:
        """``reply``, with greedy replies read from and written to ``response_cache``."""
        if self.response_cache is None:
            return self.reply(conversations, **options)
        keys = [self.request_key(c, **options) for c in conversations]
        return self.response_cache.through(
            keys, lambda missing: self.reply([conversations[i] for i in missing], **options),
            encode=message_record, decode=message_from_record)

    def cache_identity(self) -> dict[str, Any] | None:
        """What, besides the request, decides a reply: the weights (their files, or hub commit),
        dtype and decoding settings; None when replies are sampled or the weights have no name
        (built in memory), so never cached."""
        if self._weights is None:
            self._weights = weights_identity(self.model_name, self.model) or {}
        if self.temperature > 0 or not self._weights:
            return None
        return {"class": type(self).__name__, "weights": self._weights, "dtype": str(self.model.dtype),
                "max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty,
                "chat_template": self.chat_template, "content_parts": self.content_parts}

    def request_key(self, conversation: list[BaseMessage], *, stop: list[str] | None = None,
                    json_schema: dict[str, Any] | None = None, max_new_tokens: int | None = None,
                    temperature: float | None = None) -> str | None:
        """The response-cache key of one greedy request (these weights, its rendered prompt
        and limits); None for a sampled one, which must not be cached."""
        identity = self.cache_identity()
        if identity is None or (temperature or 0) > 0:
            return None
        request = {"prompt": self.render(conversation), "stop": stop, "max_new_tokens": max_new_tokens,
                   "temperature": temperature, "json_schema": json.dumps(json_schema) if json_schema else None}
        images = digests(conversation)
        if images:  # the rendered prompt holds only placeholders: a blind request's key is unchanged
            request["images"] = images
        return request_key(identity, request)

    def reply(
        self,
        conversations: list[list[BaseMessage]],
        *,
        stop: list[str] | None = None,
        json_schema: dict[str, Any] | None = None,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
    ) -> list[AIMessage]:
        """Generate one reply per conversation, ``max_batch_size`` conversations per call.

        ``temperature`` (None: the model's own) above 0 samples, so ``llm.bind(temperature=0.8)``
        gives varied replies (self-consistency votes); 0 decodes greedily.
        """
        if self.processor is None and any(image_data(c) for c in conversations):
            raise ValueError(f"{self.model_name or 'this model'} takes no images: it has no VLM processor")
        prompts = [self.render(c) for c in conversations]
        pictures = Pictures()
        images = [pictures.of(c) for c in conversations]
        # Similar lengths side by side means less padding; characters are a cheap proxy.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        replies: list[AIMessage] = [None] * len(prompts)  # type: ignore[list-item]
        once = OncePerImage(self.processor.image_processor) if any(images) else None  # for the call: ids stay valid
        for start in range(0, len(order), self.max_batch_size):
            chunk = order[start : start + self.max_batch_size]
            options = {"stop": stop, "json_schema": json_schema, "max_new_tokens": max_new_tokens,
                       "temperature": self.temperature if temperature is None else temperature}
            rows, seen = [prompts[i] for i in chunk], [image for i in chunk for image in images[i]]
            inputs = model_inputs(self.processor, once, rows, seen, self.model) if seen else None
            for i, reply in zip(chunk, self._generate_chunk(rows, inputs, **options)):
                replies[i] = reply
        return replies

    def reply_logprobs(self, pairs: Sequence[tuple[list[BaseMessage], str]]) -> list[tuple[float, int]]:
        """For each (conversation, reply): the summed log-probability of the reply's tokens as this
        model's next turn, its stop token included, and how many tokens that is (one forward pass
        per ``max_batch_size`` conversations; llms/logprobs.py)."""
        from idealagent.llms.logprobs import score_texts

        prompts = [self.render(conversation) for conversation, _ in pairs]
        texts = [prompt + reply + self.tokenizer.eos_token for prompt, (_, reply) in zip(prompts, pairs)]
        return score_texts(self.model, self.tokenizer, prompts, texts, self.max_batch_size)

    def render(self, conversation: list[BaseMessage]) -> str:
        """The prompt text for a conversation, ending where the assistant's reply starts."""
        turns = [template_turn(m, ROLES.get(m.type, m.type), self.content_parts) for m in conversation]
        return self.tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False,
                                                  chat_template=self.chat_template)

    def _generate_chunk(self, prompts, vision, *, stop, json_schema, max_new_tokens, temperature) -> list[AIMessage]:
        """Replies to ``prompts``; ``vision``: the processor's inputs where the rows carry images
        (no shared prefix then: a VLM's image positions come from the whole prompt)."""
        import torch

        extra: dict[str, Any] = {}
        if vision is not None:
            extra = dict(vision)
            input_ids, attention_mask = extra.pop("input_ids"), extra.pop("attention_mask")
            lengths, cache = attention_mask.sum(dim=1).tolist(), None
        else:
            # The chat template already holds any BOS.
            rows = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
            shared, cache = shared_prefix(self.model, self._prefixes, rows) if self.prefix_cache else (0, None)
            input_ids, attention_mask = pad_after_prefix(rows, shared, self.tokenizer.pad_token_id)
            lengths = [len(row) for row in rows]
        options: dict[str, Any] = {
            "max_new_tokens": max_new_tokens or self.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": sorted(self._stop_token_ids),
            "do_sample": temperature > 0,
        }
        if cache is not None:
            options[cache_keyword(self.model)] = cache
        if temperature > 0:
            options["temperature"] = temperature
        penalty = None
        if self.repetition_penalty != 1.0:
            from transformers import RepetitionPenaltyLogitsProcessor

            prompt_length = input_ids.shape[1]  # prefix and padded suffix: generate sees them all
            penalty = RepetitionPenaltyLogitsProcessor(self.repetition_penalty, prompt_length)
        scores, processors, raw_options = raw_logprob_processors(self.model, attention_mask, penalty)
        options.update(raw_options)
        if json_schema is not None:  # last, so the grammar's mask has the final word
            processors.append(self._json_processor(json_schema))
        device = self.model.device
        with torch.inference_mode():
            output = self.model.generate(  # (rows, prompt + new)
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                logits_processor=processors, **extra, **options,
            )
            new_tokens = output[:, input_ids.shape[1] :]
            logprobs = scores.per_row(new_tokens)
        return [self._to_message(tokens, row_logprobs, int(length), stop)
                for tokens, row_logprobs, length in zip(new_tokens.tolist(), logprobs, lengths)]

    def _to_message(self, tokens: list[int], logprobs: list[float], input_tokens: int,
                    stop: list[str] | None) -> AIMessage:
        """Decode one row, with each of its tokens' text and log-probability (``logprobs``, one
        per generated token); what follows its first end-of-turn token is padding."""
        ends = [i for i, token in enumerate(tokens) if token in self._stop_token_ids]
        content = tokens[: ends[0]] if ends else tokens  # the reply's own tokens, no end token
        pieces = token_pieces(self.tokenizer, content)
        text = "".join(pieces)
        cut = min((text.find(s) for s in stop or [] if s in text), default=-1)
        if cut >= 0:
            text, pieces = text[:cut], cut_pieces(pieces, cut)
        generated = ends[0] + 1 if ends else len(tokens)  # the end token counts
        usage = {"input_tokens": input_tokens, "output_tokens": generated,
                 "total_tokens": input_tokens + generated}
        finish_reason = "stop" if ends or cut >= 0 else "length"
        scored = [{"token": piece, "logprob": logprob} for piece, logprob in zip(pieces, logprobs)]
        metadata = {"finish_reason": finish_reason, "model_name": self.model_name,
                    "logprobs": {"content": scored}}
        return AIMessage(content=text, usage_metadata=usage, response_metadata=metadata)

    @property
    def _stop_token_ids(self) -> set[int]:
        """Tokens that end a turn: the generation config's and the tokenizer's EOS."""
        configured = self.model.generation_config.eos_token_id
        ids = set(configured if isinstance(configured, list) else [configured])
        ids.add(self.tokenizer.eos_token_id)
        return ids - {None}

    def _json_processor(self, schema: dict[str, Any]) -> Any:
        """A fresh xgrammar processor (each holds per-call matcher state) for a compiled grammar."""
        try:
            import xgrammar
            from xgrammar.contrib.hf import LogitsProcessor
        except ImportError as error:
            raise ModelLoadError("JSON-constrained decoding needs xgrammar: pip install xgrammar") from error
        vocab_size = self.model.config.get_text_config().vocab_size
        stops = tuple(sorted(self._stop_token_ids))  # the same ends as generate's
        with _COMPILERS_LOCK:
            compilers = _COMPILERS.setdefault(self.tokenizer, {})
            if (vocab_size, stops) not in compilers:
                info = xgrammar.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=vocab_size,
                                                              stop_token_ids=list(stops))
                compilers[vocab_size, stops] = xgrammar.GrammarCompiler(info)  # it caches compiled grammars
            compiler = compilers[vocab_size, stops]
        # Not sort_keys: xgrammar emits properties in schema order, so order is meaning.
        return LogitsProcessor(compiler.compile_json_schema(json.dumps(schema), any_whitespace=False))

    def _start_run(self, conversation: list[BaseMessage], config: RunnableConfig, kwargs: dict) -> Any:
        """Open the callback run that ``invoke`` would open, so traces look the same."""
        manager = CallbackManager.configure(
            config.get("callbacks"), self.callbacks, self.verbose,
            config.get("tags"), self.tags, config.get("metadata"), self.metadata,
        )
        [run] = manager.on_chat_model_start(
            self._serialized, [conversation], invocation_params=self._get_invocation_params(**kwargs),
            name=config.get("run_name"), run_id=config.pop("run_id", None),
        )
        return run

    def with_structured_output(
        self,
        schema: dict[str, Any] | type[BaseModel],
        *,
        method: str = "json_schema",
        include_raw: bool = False,
        **kwargs: Any,
    ) -> Runnable:
        """Constrain replies to ``schema`` and parse them into it (a pydantic class or a dict).

        With ``include_raw`` each output is ``{"raw", "parsed", "parsing_error"}`` and parsing
        errors are returned there instead of raised, so a batch keeps every row.
        """
        kwargs.pop("strict", None)  # decoding is always strict
        if method != "json_schema" or kwargs:
            raise ValueError(f"only method='json_schema' is supported, got {method!r} and {kwargs}")
        is_model = isinstance(schema, type) and issubclass(schema, BaseModel)
        json_schema = schema.model_json_schema() if is_model else schema

        def parse(message: AIMessage) -> Any:
            try:
                # strict=False: xgrammar lets raw control characters into strings; JSON does not.
                value = json.loads(message.text, strict=False)
                return schema.model_validate(value) if is_model else value
            except ValueError as error:  # pydantic's ValidationError and JSONDecodeError
                finish_reason = message.response_metadata.get("finish_reason")
                raise ModelOutputError(
                    f"reply does not fit the schema (finish_reason={finish_reason}): {one_line(error)}",
                    raw=message.text,
                ) from error

        def parse_keeping_raw(message: AIMessage) -> dict[str, Any]:
            try:
                return {"raw": message, "parsed": parse(message), "parsing_error": None}
            except ModelOutputError as error:
                return {"raw": message, "parsed": None, "parsing_error": error}

        bound = self.bind(json_schema=json_schema)
        return bound | RunnableLambda(parse_keeping_raw if include_raw else parse)
