"""The direct question: the main question as the answerer is asked it before round 1.

The same question is the evaluation's answerer-alone baseline, so its format is part of the
evaluation protocol (like LLaVA's "Answer the question using a single word or phrase"): for
choice kinds the options go into the question, and the reply is mapped back to an option; an
open reply is cut to its first short phrase, as the agent's answers are.

Under ``--scoring likelihood`` a multiple-choice question is asked bare instead, and the answerer
scores each option as its reply (V* Bench's official protocol, ``answerers.choose_options``).
"""

from __future__ import annotations

from collections.abc import Sequence

from idealagent.parsing import choice_letter, match_choice, short_answer

YES_NO_SUFFIX = "Answer yes or no."
OPTIONS_SUFFIX = "Answer with one option."
ENTAILMENT_FORMAT = 'Statement about the image: "{hypothesis}" Is it entailed, neutral or contradicted?'


def by_likelihood(scoring: str, kind: str, choices: Sequence[str] | None) -> bool:
    """Whether the answerer chooses this question's option by likelihood: ``--scoring likelihood``
    and a multiple-choice question."""
    return scoring == "likelihood" and kind == "multiple_choice" and bool(choices)


def direct_question(kind: str, question: str, choices: Sequence[str] | None, scoring: str = "letter") -> str:
    """The main question as the answerer is asked it directly (bare, for options it scores)."""
    if kind == "open" or by_likelihood(scoring, kind, choices):
        return question
    if kind == "yes_no":
        return f"{question} {YES_NO_SUFFIX}"
    text = ENTAILMENT_FORMAT.format(hypothesis=question) if kind == "entailment" else question
    options = " ".join(f"{choice_letter(i)}) {choice}" for i, choice in enumerate(choices or []))
    return f"{text} Options: {options}. {OPTIONS_SUFFIX}"


def read_direct_reply(kind: str, choices: Sequence[str] | None, reply: str) -> tuple[str | None, int | None]:
    """(answer, choice index) from the answerer's reply. For choice kinds a reply that names no
    option ("Probably a fox" for dog or cat) is no answer: never a candidate outside the options."""
    if kind == "open":
        return short_answer(reply) or reply.strip() or None, None
    options = list(choices or [])
    # An option's exact text is that option (an option chosen by likelihood is given so), even
    # where matching would strip its punctuation and find another ("3." among "3." and "3").
    index = options.index(reply) if reply in options else match_choice(reply, options)
    return (options[index], index) if index is not None else (None, None)
