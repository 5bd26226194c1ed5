"""Options scored as a VLM's reply, for ``TransformersAnswerer.option_logprobs``.

V* Bench's official evaluation (penghao-wu/vstar, ``vstar_bench_eval.py``) writes each option
as the assistant's turn after the image and the bare question, runs the model over it, and
takes the option whose tokens (the turn's end included) have the lowest mean cross-entropy.
Here each row is such a conversation; ``reply_row`` gives its text and how many of its last
tokens are the option's, and ``score_rows`` scores a batch of them in one forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from idealagent.answerers import OptionScore
from idealagent.llms.logprobs import continuation_length, continuation_logprobs


def reply_row(processor: Any, chat_template: str | None, turn: dict[str, Any], option: str) -> tuple[str, int]:
    """(the text of the conversation ``turn`` → ``option``, how many of its last tokens are the
    option's reply): the chat template with the option as the assistant's turn, up to its end
    of turn (the newline a template writes after that is no part of the reply)."""
    prompt = processor.apply_chat_template([turn], add_generation_prompt=True, tokenize=False,
                                           chat_template=chat_template)
    reply = {"role": "assistant", "content": [{"type": "text", "text": option}]}
    text = processor.apply_chat_template([turn, reply], tokenize=False, chat_template=chat_template).rstrip()
    if not text.startswith(prompt) or len(text) == len(prompt):  # a template that rewrites earlier turns
        text = prompt + option
    return text, continuation_length(processor.tokenizer, prompt, text)


def score_rows(model: Any, inputs: Any, lengths: Sequence[int]) -> list[OptionScore]:
    """Each row's last ``lengths[r]`` tokens scored in one forward pass (see the module doc)."""
    return [OptionScore(logprob, tokens) for logprob, tokens in continuation_logprobs(model, inputs, lengths)]
