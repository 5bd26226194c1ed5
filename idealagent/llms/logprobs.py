"""Token log-probabilities of generated text, under the model's raw logits: a logits processor
that records them without keeping every step's logits, and the text pieces each token adds (so
an answer's tokens can be found in a reply). Used by LocalChatModel and TransformersAnswerer.
"""

from __future__ import annotations

import os
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
