"""The direct-answer baseline: the answerer alone, one question per sample, no agent loop.

It is what the agent has to beat: the same vision model asked the benchmark question
directly. For choice kinds the options go into the question text and the reply is mapped back
to an option; an open reply is cut to its first short phrase, as the agent's answers are.
Under ``--scoring likelihood`` a multiple-choice question is asked bare and the answerer's
most likely option (per token) is its answer, as in V* Bench's official evaluation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from idealagent.answerers import ask_or_choose, tokens_of
from idealagent.direct import by_likelihood, direct_question, read_direct_reply
from idealagent.errors import IdealAgentError, failure_kind, one_line
from idealagent.evaluation.scoring import DEFAULT_VQA_METRIC, score
from idealagent.images import load_image

if TYPE_CHECKING:
    from idealagent.answerers import Answerer
    from idealagent.evaluation.items import EvalItem

log = logging.getLogger(__name__)


@dataclass
class BaselineResult:
    """The answerer's direct reply to one benchmark question."""

    prediction: str | None
    choice_index: int | None
    error: str | None
    latency_s: float
    input_tokens: int = 0  # the answerer model's, where the backend reports them
    output_tokens: int = 0

    def to_json(self, item: EvalItem, *, vqa_metric: str = DEFAULT_VQA_METRIC) -> dict[str, Any]:
        """The ``baseline`` field of a results line, scored like the agent's answer."""
        failed = self.error is not None
        return {
            "prediction": self.prediction, "choice_index": self.choice_index,
            "score": None if failed else score(item.metric, self.prediction, self.choice_index, item.answers,
                                               item.gold_index, vqa_metric=vqa_metric),
            "error": self.error, "latency_s": round(self.latency_s, 4),
            "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
        }


def baseline_question(item: EvalItem, scoring: str = "letter") -> str:
    """The benchmark question as the answerer is asked it directly (the agent's direct question)."""
    return direct_question(item.kind, item.question, item.sample_choices, scoring)


def scored_options(item: EvalItem, scoring: str) -> list[str] | None:
    """The options the answerer scores for ``item`` under ``scoring``, or None: it is asked."""
    return list(item.sample_choices or []) if by_likelihood(scoring, item.kind, item.sample_choices) else None


def read_reply(item: EvalItem, reply: str) -> tuple[str | None, int | None]:
    """(prediction, choice index) from the answerer's reply; an option it doesn't name is None."""
    return read_direct_reply(item.kind, item.sample_choices, reply)


def load_images(items: Sequence[EvalItem]) -> dict[str, Any]:
    """Decoded images by item id, or the error that made one unreadable: ``run_baseline``'s input."""
    images: dict[str, Any] = {}
    for item in items:
        try:
            images[item.id] = load_image(item.image)
        except IdealAgentError as exc:
            images[item.id] = exc
    return images


def run_baseline(answerer: Answerer, items: Sequence[EvalItem], images: Mapping[str, Any],
                 scoring: str = "letter") -> dict[str, BaselineResult]:
    """Ask every item's question in one answerer call (under ``scoring`` likelihood, score each
    multiple-choice item's options instead); results by item id.

    ``images`` maps ids to decoded images, or to the exception that made one unreadable. A
    request that fails costs only its own item. An item the infrastructure failed on (retries
    exhausted, out of memory) is left out: that is not a result. A service that is down raises.
    """
    results: dict[str, BaselineResult] = {}
    ready = []
    for item in items:
        image = images[item.id]
        if isinstance(image, Exception):
            results[item.id] = BaselineResult(None, None, str(image), 0.0)
        else:
            ready.append(item)
    if not ready:
        return results
    started = time.perf_counter()
    replies = ask_or_choose(answerer, [(images[item.id], baseline_question(item, scoring),
                                        scored_options(item, scoring)) for item in ready])
    share = (time.perf_counter() - started) / len(ready)
    for item, reply in zip(ready, replies):
        if isinstance(reply, Exception):
            if failure_kind(reply) != "sample":
                log.warning("baseline answer for %s hit the infrastructure: %s", item.id, one_line(reply))
                continue
            log.warning("baseline answer failed for %s: %s: %s", item.id, type(reply).__name__, one_line(reply))
            results[item.id] = BaselineResult(None, None, f"answerer failed: {type(reply).__name__}: "
                                              f"{one_line(reply)}", share)
        else:
            prediction, index = read_reply(item, str(reply))
            results[item.id] = BaselineResult(prediction, index, None, share, *tokens_of(reply))
    return results
