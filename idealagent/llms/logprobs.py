"""Token log-probabilities of generated text, under the model's raw logits: a logits processor
that records them without keeping every step's logits, and the text pieces each token adds (so
an answer's tokens can be found in a reply). Used by LocalChatModel and TransformersAnswerer.

And of given text: ``continuation_logprobs`` scores the last tokens of each row (a reply written
after its prompt) in one forward pass; ``continuation_length`` says how many tokens that is.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any


class TokenLogprobs:
    """A logits processor that records each generated token's log-probability under the
    model's raw logits; it must come first, before anything that changes the logits.

    It keeps only the previous step's log-softmax (rows x vocab), not every step's logits
    (``output_logits`` keeps steps x rows x vocab floats: gigabytes on a big vocabulary). The
    token chosen at the previous step is the last column of the next call's ``input_ids``;
    the last step's is read from generate's output (``per_row``).
    """

    def __init__(self) -> None:
        self._previous: Any = None  # (rows, vocab) log-softmax of the latest step
        self._chosen: list[Any] = []  # per step, (rows,) log-probabilities of the tokens chosen

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self._previous is not None:
            self._chosen.append(self._previous.gather(1, input_ids[:, -1:]).squeeze(1))
        self._previous = scores.float().log_softmax(dim=-1)
        return scores  # untouched: the processors after this one see the raw logits too

    def per_row(self, new_tokens: Any) -> list[list[float]]:
        """Each row's log-probabilities of ``new_tokens`` (rows x steps, what generate added);
        a finished row's padding gets numbers too, which callers cut off with the row."""
        import torch

        steps = new_tokens.shape[1]
        chosen = self._chosen[:steps]  # a generate that runs ahead and undoes steps calls more often
        if len(chosen) < steps and self._previous is not None:
            last = new_tokens[:, steps - 1 : steps].to(self._previous.device)
            chosen.append(self._previous.gather(1, last).squeeze(1))
        if not chosen:
            return [[] for _ in range(new_tokens.shape[0])]
        return torch.stack(chosen, dim=1).tolist()


def raw_logprob_processors(model: Any, attention_mask: Any,
                           penalty: Any = None) -> tuple[TokenLogprobs, list[Any], dict[str, Any]]:
    """``(scores, processors, options)`` for a ``generate`` call whose token log-probabilities
    are wanted: ``scores`` heads ``processors`` (pass them as ``logits_processor``, with more
    appended as needed), and ``options`` go to generate too.

    generate runs the processors its generation config asks for *before* ours. The one chat
    models commonly ship is a repetition penalty (Qwen's 1.05 to 1.1): it is turned off in
    generate and the same processor follows ``scores`` instead, so replies do not change.
    ``penalty``, our own repetition-penalty processor, replaces it, as generate would.
    """
    options: dict[str, Any] = {}
    inherited = model.generation_config.repetition_penalty
    if inherited is not None and inherited != 1.0:
        options["repetition_penalty"] = 1.0
        if penalty is None:
            from transformers import RepetitionPenaltyLogitsProcessor

            # As generate builds it: only each row's leading padding is exempt.
            padding = (attention_mask != 0).int().argmax(dim=1)
            penalty = RepetitionPenaltyLogitsProcessor(inherited, prompt_ignore_length=padding)
    scores = TokenLogprobs()
    return scores, [scores] + ([penalty] if penalty is not None else []), options


def token_pieces(tokenizer: Any, tokens: list[int]) -> list[str]:
    """Each token's share of ``decode(tokens)``: joined, they are that text exactly.

    A token's share is what decoding up to it adds to the text; a token that ends inside a
    character (byte-level BPE splits UTF-8) adds nothing, the token that completes it adds it.
    """
    if not tokens:
        return []
    prefixes = tokenizer.batch_decode([tokens[: i + 1] for i in range(len(tokens))], skip_special_tokens=True)
    text, pieces, done = prefixes[-1], [], 0
    for prefix in prefixes:
        end = max(done, len(os.path.commonprefix([prefix, text])))
        pieces.append(text[done:end])
        done = end
    return pieces


def cut_pieces(pieces: list[str], length: int) -> list[str]:
    """The token pieces that make up the first ``length`` characters of their joined text."""
    kept, position = [], 0
    for piece in pieces:
        if position >= length:
            break
        kept.append(piece[: length - position])
        position += len(piece)
    return kept


def continuation_length(tokenizer: Any, prompt: str, text: str) -> int:
    """How many of ``text``'s last tokens come after ``prompt`` (its start): the tokens past
    those the two share, as lmms-eval's ``loglikelihood`` finds a continuation's, so a token
    that straddles the boundary counts with the continuation; at least 1."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    shared = 0
    for a, b in zip(prompt_ids, text_ids):
        if a != b:
            break
        shared += 1
    return max(1, len(text_ids) - shared)


def continuation_logprobs(model: Any, inputs: Any, lengths: Sequence[int]) -> list[tuple[float, int]]:
    """One forward pass over left-padded rows (``inputs``: input_ids, attention_mask and any
    pixels); for row r, (the summed log-probability of its last ``lengths[r]`` tokens, each given
    everything before it, under the raw logits; ``lengths[r]``)."""
    import torch

    ids, mask = inputs["input_ids"], inputs["attention_mask"]  # (rows, columns)
    keep = max(lengths) + 1  # the logits that predict the continuations' tokens, and no others
    options: dict[str, Any] = {}
    parameters = inspect.signature(model.forward).parameters
    if "logits_to_keep" in parameters:
        options["logits_to_keep"] = keep
    if "position_ids" in parameters and not _positions_from_rows(model):
        # As generate does: a row's positions start at its first real token, not at the padding.
        options["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        logits = model(**inputs, **options, use_cache=False).logits[:, -keep:].float()  # (rows, keep, vocab)
    scores = []
    for row, length in enumerate(lengths):
        predicting = torch.log_softmax(logits[row, -length - 1 : -1], dim=-1)  # (length, vocab)
        targets = ids[row, -length:].to(predicting.device)  # (length,)
        scores.append((float(predicting.gather(-1, targets[:, None]).sum()), int(length)))
    return scores


def _positions_from_rows(model: Any) -> bool:
    """Whether the model works its positions out of the rows itself (Qwen-VL's 3-D mrope, from
    the image grids), so 1-D position ids must not be passed."""
    return hasattr(model, "get_rope_index") or hasattr(getattr(model, "model", None), "get_rope_index")


def score_texts(model: Any, tokenizer: Any, prompts: Sequence[str], texts: Sequence[str],
                max_batch_size: int) -> list[tuple[float, int]]:
    """For each ``texts[i]``, which starts with ``prompts[i]``: (the summed log-probability of the
    tokens after the prompt, how many), ``max_batch_size`` rows per forward pass, left-padded."""
    import torch

    lengths = [continuation_length(tokenizer, prompt, text) for prompt, text in zip(prompts, texts)]
    scores: list[tuple[float, int]] = [(0.0, 0)] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths: less padding
    for start in range(0, len(order), max_batch_size):
        chunk = order[start : start + max_batch_size]
        rows = [tokenizer(texts[i], add_special_tokens=False)["input_ids"] for i in chunk]
        width = max(map(len, rows))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([[pad] * (width - len(row)) + row for row in rows])  # (rows, width), left-padded
        mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
        inputs = {"input_ids": ids.to(model.device), "attention_mask": mask.to(model.device)}
        for i, score in zip(chunk, continuation_logprobs(model, inputs, [lengths[i] for i in chunk])):
            scores[i] = score
    return scores
