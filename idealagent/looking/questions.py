"""The questions a search asks about a view (prompts/look.yaml), and p(yes) from the reply.

An answerer's ``Answer.probability`` is the probability of the answer's own tokens, so for a
reply that reads "yes" it is p(yes), and for "no" it is p(no), taken as 1 - p(yes). That is
exact when the model's mass is on those two words; a model that also puts mass on other
replies ("maybe", "Yes," against "yes") makes 1 - p(no) an over-estimate of p(yes). ZoomEye
instead reads the two next-token logits and takes softmax over them; our backends return the
sampled answer's probability only.
"""

from __future__ import annotations

import re

from idealagent.answerers import Reply, probability_of, text_of
from idealagent.prompts import PromptError, load_prompt, render_text

LOOK_PROMPT = "look"
LOOK_KINDS: tuple[str, ...] = ("exists", "latent", "answerable", "describe", "locate")
_YES_NO = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


def look_question(kind: str, **variables: str) -> str:
    """The question of ``kind`` (exists, latent, answerable, describe) from prompts/look.yaml,
    rendered strictly: a missing variable is a PromptError."""
    spec = load_prompt(LOOK_PROMPT)
    if kind not in spec.kinds:
        raise PromptError(f"{LOOK_PROMPT}.yaml has no kind {kind!r}; have: {', '.join(spec.kinds)}")
    return render_text(spec.kinds[kind].instructions, **variables)


def reads_yes(reply: Reply) -> bool | None:
    """True for a reply that starts with yes, False for no, None for anything else."""
    match = _YES_NO.match(text_of(reply))
    return None if match is None else match.group(1).lower() == "yes"


def p_yes(reply: Reply) -> float | None:
    """p(yes) from a yes/no reply: its probability if it reads yes, 1 - it if no; None when the
    reply is neither or carries no probability (a plain string, a server without logprobs)."""
    verdict, probability = reads_yes(reply), probability_of(reply)
    if verdict is None or probability is None:
        return None
    probability = min(1.0, max(0.0, probability))
    return probability if verdict else 1.0 - probability
