"""``TransformersAnswerer``: any transformers image-text-to-text model (a VLM) as the Answerer.

Qwen2-VL, Qwen2.5-VL, LLaVA-1.5, LLaVA-NeXT, Idefics3/SmolVLM go through the model's own chat
template (an image part and the question); PaliGemma, which has none, gets its task-prefix
prompt ("answer en ..."). Requests are answered in left-padded, greedy ``generate`` batches of
similar-length prompts; each distinct image is preprocessed once per call (``OncePerImage``).
The vision tower still runs once per row: feeding it unique images and scattering features
into rows would need per-architecture code (Qwen's mrope positions come from the rows). An
answer's ``probability`` is the product of its tokens' probabilities under the model's raw
logits (``llms.logprobs.TokenLogprobs``); captions have none.

``option_logprobs`` scores given options instead of generating (V* Bench's official protocol):
one row per option, the option written as the assistant's turn after the bare question, and one
forward pass per batch of rows; an option's score is its tokens' summed log-probability, the
end-of-turn token included (so "red" is not scored as the start of "red and white").

``chat_model()`` serves the questioner and reasoner from the same weights and processor
(``LocalChatModel``, whose turns may carry the picture), so one loaded model can play every role.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from idealagent.answerers import Answer, OptionScore, OptionsRequest, raise_first
from idealagent.answerers.vlm_likelihood import reply_row, score_rows
from idealagent.answerers.vlm_processing import OncePerImage, RejectedImages, load_processor, model_inputs
from idealagent.capabilities import Capabilities
from idealagent.confidence import TokenLogprob, answer_probability
from idealagent.errors import ImageError, InfrastructureError, ModelLoadError, ModelOutputError, one_line
from idealagent.llms.loading import SHARED_LOAD_KWARGS, load_failure_message, quiet_loading
from idealagent.llms.logprobs import raw_logprob_processors, token_pieces
from idealagent.looking.boxes import box_convention_of
from idealagent.parsing import short_answer
from idealagent.prompts import load_prompt

if TYPE_CHECKING:
    from PIL.Image import Image

    from idealagent.llms.local import LocalChatModel

log = logging.getLogger(__name__)

# Architectures trained on task prefixes instead of chat turns; they get vlm_answerer_plain.
PLAIN_PROMPT_MODELS = {"paligemma"}


class TransformersAnswerer:
    """Answers (image, question) pairs with a loaded transformers VLM and its processor."""

    # One local model: each answer's token probability, and given options scored (not PaliGemma,
    # which has no chat turns to put an option in); boxes as its family writes them.
    capabilities = Capabilities(logprobs=True, likelihood=True)

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        model_name: str = "",
        max_batch_size: int = 8,
        max_new_tokens: int = 16,
        max_words: int = 8,
    ) -> None:
        self.model = model
        self.processor = processor
        self.model_name = model_name or getattr(model, "name_or_path", "")
        self.max_batch_size = max_batch_size
        self.max_new_tokens = max_new_tokens
        self.max_words = max_words
        self.plain_prompt = model.config.model_type in PLAIN_PROMPT_MODELS
        self.capabilities = Capabilities(logprobs=True, likelihood=not self.plain_prompt,
                                         boxes=box_convention_of(model.config.model_type))
        self._weights: dict[str, Any] | None = None  # weights_identity, read on first use
        self.prompt = load_prompt("vlm_answerer_plain" if self.plain_prompt else "vlm_answerer")
        if not self.plain_prompt and not self._chat_template:
            raise ModelLoadError(f"{self.model_name or 'this model'} has no chat template in its processor "
                                 "or tokenizer: use an instruction-tuned (chat) VLM")
        tokenizer = processor.tokenizer
        tokenizer.padding_side = "left"  # generate continues every row from its last column
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token  # masked out, so any token will do

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        *,
        dtype: Any = None,
        device_map: str | dict | None = None,
        max_batch_size: int = 8,
        max_new_tokens: int = 16,
        trust_remote_code: bool = False,
        **load_kwargs: Any,
    ) -> TransformersAnswerer:
        """Load a VLM from a local folder or the local Hugging Face cache; never downloads.

        On a CUDA machine the weights go in bf16 where accelerate's ``device_map="auto"`` puts
        them; otherwise fp32 on the CPU. Only safetensors weights are read.
        """
        import torch
        from transformers import AutoConfig, AutoModelForImageTextToText

        name = str(path_or_id)
        cuda = torch.cuda.is_available()
        if dtype is None:
            dtype = torch.bfloat16 if cuda else torch.float32
        if device_map is None and cuda:
            device_map = "auto"
        load_kwargs = {"local_files_only": True, "use_safetensors": True, **load_kwargs,
                       "trust_remote_code": trust_remote_code}
        shared = {k: v for k, v in load_kwargs.items() if k in SHARED_LOAD_KWARGS}
        _refuse_pickle_only(name)
        try:
            config = AutoConfig.from_pretrained(name, **shared)
            _require_vlm(config, name)
            processor = load_processor(name, shared)
            with quiet_loading():  # no weight-loading bar or warnings: the library never prints
                model = AutoModelForImageTextToText.from_pretrained(
                    name, dtype=dtype, device_map=device_map, **load_kwargs)
        except (OSError, ValueError) as error:  # transformers' "not found" and "not a model"
            raise ModelLoadError(load_failure_message(name, error)) from error
        return cls(model.eval(), processor, model_name=name,
                   max_batch_size=max_batch_size, max_new_tokens=max_new_tokens)

    def answer(self, requests: Sequence[tuple[Image, str]]) -> list[Answer]:
        """One short answer per (image, question); raises the first request's error if any
        failed (the agent uses ``answer_each``, so only the sample at fault stops)."""
        return raise_first(self.answer_each(requests))  # type: ignore[return-value]

    def caption(self, images: Sequence[Image]) -> list[Answer]:
        """One short description per image."""
        return raise_first(self.caption_each(images))  # type: ignore[return-value]

    def caption_each(self, images: Sequence[Image]) -> list[Answer | Exception]:
        """Like ``caption``, with each image's failure in its place."""
        prompts = [self._prompt("caption", "") for _ in images]
        return self._generate_all(list(images), prompts, max_words=30, scored=False)

    def answer_each(self, requests: Sequence[tuple[Image, str]]) -> list[Answer | Exception]:
        """Like ``answer``, but each request's failure (a rejected image, an empty reply, out
        of memory even alone) is returned in its place, so the other answers survive."""
        images = [image for image, _ in requests]
        prompts = [self._prompt("answer", question) for _, question in requests]
        return self._generate_all(images, prompts, max_words=self.max_words, scored=True)

    def option_logprobs(self, requests: Sequence[OptionsRequest]) -> list[list[OptionScore] | Exception]:
        """Each option's ``OptionScore`` as the reply to its (image, question), in order; a
        request whose image the processor rejects gets its error in its place."""
        if self.plain_prompt:
            raise ModelOutputError(f"{self.model_name or 'this model'} has no chat turns: it scores no options")
        rows: list[tuple[int, Any, str]] = []  # (request, image, text of the question and the option)
        lengths: dict[str, int] = {}  # a row's text -> how many of its last tokens are the option's
        for index, (image, question, options) in enumerate(requests):
            turn = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
            for option in options:
                text, lengths[text] = reply_row(self.processor, self._chat_template, turn, option)
                rows.append((index, image, text))
        once = OncePerImage(self.processor.image_processor)  # each image preprocessed once
        scores: list[Any] = [None] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][2]))  # similar lengths: less padding

        def run(inputs: Any, texts: list[str]) -> list[OptionScore]:
            return score_rows(self.model, inputs, [lengths[text] for text in texts])

        for start in range(0, len(order), self.max_batch_size):
            chunk = order[start : start + self.max_batch_size]
            for i, score in zip(chunk, self._generate_rows(once, [rows[i][1] for i in chunk],
                                                           [rows[i][2] for i in chunk], run)):
                scores[i] = score
        results: list[list[OptionScore] | Exception] = []
        for index in range(len(requests)):
            mine = [score for (owner, _, _), score in zip(rows, scores) if owner == index]
            failed = next((score for score in mine if isinstance(score, Exception)), None)
            results.append(failed if failed is not None else mine)
        return results

    def cache_identity(self) -> dict[str, Any] | None:
        """What, besides the request, decides a reply (for ``CachedAnswerer``): the weights,
        their dtype, the limits, the prompt file and the chat template (decoding is greedy);
        None for weights without a name, which nothing tells apart."""
        from idealagent.response_cache import weights_identity

        if self._weights is None:
            self._weights = weights_identity(self.model_name, self.model) or {}
        if not self._weights:
            return None
        return {"class": type(self).__name__, "weights": self._weights, "dtype": str(self.model.dtype),
                "max_new_tokens": self.max_new_tokens, "max_words": self.max_words,
                "prompt": self.prompt.model_dump(mode="json"), "chat_template": self._chat_template}

    def chat_model(self, **overrides: Any) -> LocalChatModel:
        """A LangChain chat model over these same weights (no copy) and processor, for the
        questioner and reasoner: it takes images too, so those roles may see (sight.py).

        The shared-prefix KV cache is off by default: Qwen-VL models derive 3-D (mrope)
        positions from the whole prompt, which a prefilled prefix would bypass.
        """
        from idealagent.llms.local import LocalChatModel

        settings: dict[str, Any] = {"model": self.model, "tokenizer": self.processor.tokenizer,
                                    "processor": self.processor, "model_name": self.model_name,
                                    "chat_template": self._chat_template, "content_parts": True,
                                    "prefix_cache": False, **overrides}
        return LocalChatModel(**settings)

    @property
    def _chat_template(self) -> str | None:
        return (getattr(self.processor, "chat_template", None)
                or getattr(self.processor.tokenizer, "chat_template", None))

    def _prompt(self, kind: str, question: str) -> str:
        """The text of one row: the chat template over an image part and the instruction."""
        instructions = self.prompt.variant(kind).instructions
        [message] = self.prompt.render(kind, question=question, instructions=instructions)
        if self.plain_prompt:  # the processor adds BOS after the image tokens, and a newline
            return f"{self.processor.image_token}{message.content}"
        turn = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": message.content}]}
        return self.processor.apply_chat_template([turn], add_generation_prompt=True, tokenize=False,
                                                  chat_template=self._chat_template)

    def _generate_all(self, images: list[Image], prompts: list[str], *,
                      max_words: int, scored: bool) -> list[Answer | Exception]:
        """Every row, ``max_batch_size`` similar-length prompts per call, in input order;
        ``scored``: each answer gets the probability of its tokens."""
        results: list[Answer | Exception] = [ValueError("not generated")] * len(prompts)
        once = OncePerImage(self.processor.image_processor)  # for the whole call: ids stay valid
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        for start in range(0, len(order), self.max_batch_size):
            rows = order[start : start + self.max_batch_size]
            texts = self._generate_rows(once, [images[i] for i in rows], [prompts[i] for i in rows])
            for i, text in zip(rows, texts):
                results[i] = text if isinstance(text, Exception) else self._short(*text, max_words, scored)
        return results

    def _generate_rows(self, once: OncePerImage, images: list[Image], prompts: list[str],
                       run: Callable[[Any, list[str]], list[Any]] | None = None) -> list[Any]:
        """One generate call (or ``run(inputs, prompts)`` instead); rows whose image the processor
        refuses get an ``ImageError``, and on out-of-memory the rows are split in halves and
        retried, down to one row."""
        results: list[Generated | Exception | None] = [None] * len(prompts)
        live = list(range(len(prompts)))
        while live:
            try:
                inputs = self._encode(once, [images[i] for i in live], [prompts[i] for i in live])
                break
            except RejectedImages as rejected:
                for i in live:
                    if id(images[i]) in rejected.errors:
                        results[i] = _image_error(self.model_name, images[i], rejected.errors[id(images[i])])
                live = [i for i in live if results[i] is None]
        if live:
            try:
                outputs = run(inputs, [prompts[i] for i in live]) if run else self._generate(inputs)
                for i, text in zip(live, outputs):
                    results[i] = text
            except Exception as error:
                if not _is_out_of_memory(error):
                    raise
                _free_cuda_memory()
                if len(live) == 1:
                    results[live[0]] = InfrastructureError(  # not the sample's fault: not a result
                        f"out of memory answering even one request with {self.model_name}: "
                        "use a smaller model, dtype or image size")
                else:
                    log.warning("out of memory on a batch of %d; retrying in halves", len(live))
                    half = len(live) // 2
                    for part in (live[:half], live[half:]):
                        texts = self._generate_rows(once, [images[i] for i in part], [prompts[i] for i in part], run)
                        for i, text in zip(part, texts):
                            results[i] = text
        return results  # type: ignore[return-value]

    def _encode(self, once: OncePerImage, images: list[Image], prompts: list[str]) -> Any:
        """The processor's tensors for the rows, its image processor swapped for ``once``."""
        return model_inputs(self.processor, once, prompts, images, self.model)

    def _generate(self, inputs: Any) -> list[Generated]:
        import torch

        tokenizer = self.processor.tokenizer
        scores, processors, options = raw_logprob_processors(self.model, inputs["attention_mask"])
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                         pad_token_id=tokenizer.pad_token_id, logits_processor=processors,
                                         **options)
            new_tokens = output[:, inputs["input_ids"].shape[1] :]  # (rows, new)
            logprobs = scores.per_row(new_tokens)
        # Tokens in: the row's prompt and image tokens, padding excluded. Tokens out: up to and
        # including the first end token (generate pads finished rows after it).
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
        ends = {tokenizer.pad_token_id, tokenizer.eos_token_id, *_as_list(self.model.generation_config.eos_token_id)}
        generated = []
        for length, row, row_logprobs in zip(prompt_lengths, new_tokens.tolist(), logprobs):
            count = _generated_length(row, ends)
            content = row[: count - 1] if count and row[count - 1] in ends else row[:count]
            pieces = token_pieces(tokenizer, content)
            generated.append(Generated(Answer("".join(pieces), int(length), count),
                                       list(zip(pieces, row_logprobs))))
        return generated

    def _short(self, reply: Answer, tokens: list[TokenLogprob], max_words: int,
               scored: bool) -> Answer | Exception:
        answer = short_answer(reply.text, max_words)
        if not answer:
            return ModelOutputError(f"{self.model_name or 'the model'} gave an empty answer "
                                    f"({len(reply.text)} characters before trimming)", raw=reply.text)
        probability = answer_probability(tokens, answer) if scored else None
        return Answer(answer, reply.input_tokens, reply.output_tokens, probability)


class Generated(NamedTuple):
    """One row's reply, and its tokens' texts and log-probabilities (raw logits)."""

    reply: Answer
    tokens: list[TokenLogprob]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _generated_length(row: list[int], ends: set[Any]) -> int:
    """Tokens one row generated: up to and including its first end token."""
    return next((i + 1 for i, token in enumerate(row) if token in ends), len(row))


def _image_error(name: str, image: Any, error: Exception) -> ImageError:
    size = getattr(image, "size", None)
    described = f"{size[0]}x{size[1]} {getattr(image, 'mode', '')}".strip() if size else type(image).__name__
    return ImageError(f"the processor of {name or 'the model'} rejected a {described} image: "
                      f"{one_line(error) or type(error).__name__}")


def _is_out_of_memory(error: Exception) -> bool:
    import torch

    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def _free_cuda_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _require_vlm(config: Any, name: str) -> None:
    """Refuse configs that ``AutoModelForImageTextToText`` cannot load (text-only LMs...)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    remote = "AutoModelForImageTextToText" in (getattr(config, "auto_map", None) or {})
    if config.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES and not remote:
        raise ModelLoadError(f"{name} is a {config.model_type!r} model, not an image-text-to-text model: "
                             "pass a vision-language model such as Qwen/Qwen2.5-VL-3B-Instruct")


def _refuse_pickle_only(name: str) -> None:
    """A local folder with ``pytorch_model.bin`` but no safetensors is refused up front:
    unpickling weights can run code, and transformers' own message would not say so."""
    folder = Path(name).expanduser()
    if folder.is_dir() and not any(folder.glob("*.safetensors")) and any(folder.glob("pytorch_model*.bin")):
        raise ModelLoadError(f"{name} holds only pytorch_model.bin (pickle) weights; idealagent reads "
                             "safetensors only: convert them with save_pretrained(safe_serialization=True)")
