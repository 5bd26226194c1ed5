"""Scoring a prediction against gold answers by the benchmark's official protocol.

The VQA accuracy follows the official evaluation (``vqaEval.py`` of the GT-Vision-Lab VQA API)
line by line, quirks included, so that numbers are comparable with published ones; the answer
processing it applies is ``idealagent.answers``. Two versions of its scoring loop are in use
(``VQA_METRICS``):

- ``vqa2021``, the default: the official code since March 2021 (commit a013f00, "Fixed
  processing answers bug"). Only when the human answers are not all identical do both they and
  the prediction get ``processPunctuation`` and ``processDigitArticle``; else neither does.
- ``vqa-legacy``: the code before it (commit 458a8b2, October 2016), which LAVIS and lmms-eval
  still copy. The prediction is always fully normalised; the human answers get
  ``processPunctuation`` only, and only when they are not all identical. Choose it to compare
  with numbers those toolkits report.

Both share the punctuation list and contraction map of October 2016 (the 2015 beta's list, with
":" and "'", is not reproduced). The one place where we depart from both (a single human
answer) is documented on ``vqa_score``. ``tests/official_vqa_eval.py`` transcribes the official
code, and the tests compare the two on thousands of generated cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from idealagent.answers import normalize_answer, process_digit_article, process_punctuation, strip_whitespace
from idealagent.errors import InputError
from idealagent.evaluation.items import METRICS, Metric

VqaMetric = Literal["vqa2021", "vqa-legacy"]
# Name → what it is, for help texts and reports; the first is the default.
VQA_METRICS: dict[str, str] = {
    "vqa2021": "the official vqaEval.py since March 2021",
    "vqa-legacy": "the official vqaEval.py before March 2021, as in LAVIS and lmms-eval",
}
DEFAULT_VQA_METRIC: VqaMetric = "vqa2021"


def check_vqa_metric(name: str) -> VqaMetric:
    """``name`` if it is a known VQA metric variant, else an InputError listing them."""
    if name not in VQA_METRICS:
        raise InputError(f"unknown VQA metric {name!r}; choose one of: {', '.join(VQA_METRICS)}")
    return name  # type: ignore[return-value]


def vqa_score(prediction: str, human_answers: Sequence[str], variant: str = DEFAULT_VQA_METRIC) -> float:
    """The VQA accuracy: min(#humans who gave the answer / 3, 1), averaged over the leave-one-out
    subsets of the human answers (10 for VQAv2, OK-VQA and A-OKVQA).

    ``variant`` picks the official code's answer processing (see the module docstring):
    ``vqa2021`` (default) normalises both sides, and only when the human answers differ, so
    "Yes" against ten identical "yes" scores 0 there, as officially; ``vqa-legacy`` always
    normalises the prediction and gives differing human answers ``process_punctuation`` only.
    With fewer than 10 answers the leave-one-out runs over those there are, as the official loop
    does. The one departure from both: with a single answer there is nothing to leave out (the
    official loop would always score 0), so the score is ``exact_match`` with both sides
    normalised.
    """
    check_vqa_metric(variant)
    answers = [str(a) for a in human_answers]
    if not answers:
        raise InputError("a VQA-scored item has no human answers; fix or drop it in the data file")
    if len(answers) == 1:
        return exact_match(prediction, answers)
    if variant == "vqa2021":
        answers = [strip_whitespace(a) for a in answers]
        predicted = strip_whitespace(prediction)
        if len(set(answers)) > 1:
            answers = [process_digit_article(process_punctuation(a)) for a in answers]
            predicted = process_digit_article(process_punctuation(predicted))
    else:
        predicted = normalize_answer(prediction)
        if len(set(answers)) > 1:
            answers = [process_punctuation(a) for a in answers]
    matches = [a == predicted for a in answers]
    total = sum(matches)
    # Leaving answer i out removes its match (if it was one) from the count.
    return sum(min(1.0, (total - matched) / 3) for matched in matches) / len(answers)


def exact_match(prediction: str | None, answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised gold answer (GQA), else 0.0."""
    if not answers:
        raise InputError("an exact-match item has no gold answer; fix or drop it in the data file")
    if prediction is None:
        return 0.0
    predicted = normalize_answer(prediction)
    return 1.0 if any(normalize_answer(str(a)) == predicted for a in answers) else 0.0


def choice_accuracy(pred_index: int | None, gold_index: int | None) -> float:
    """1.0 when the chosen option is the gold one (multiple choice, yes/no, entailment)."""
    if gold_index is None:
        raise InputError("a choice item has no gold index; fix or drop it in the data file")
    return 1.0 if pred_index is not None and pred_index == gold_index else 0.0


def score(
    metric: Metric,
    prediction: str | None,
    choice_index: int | None,
    answers: Sequence[str],
    gold_index: int | None,
    *,
    vqa_metric: str = DEFAULT_VQA_METRIC,
) -> float:
    """Score one prediction with the item's metric; no prediction (undecided, failed) scores 0.

    Choice items are scored by ``choice_index`` alone: mapping answer text to an option is the
    agent's job (``parsing.match_choice``), not the scorer's. ``vqa_metric`` is the variant of
    the VQA accuracy (``VQA_METRICS``) used for ``metric == "vqa"``.
    """
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; choose one of: {', '.join(METRICS)}")
    if prediction is None:
        return 0.0
    if metric == "vqa":
        return vqa_score(prediction, answers, vqa_metric)
    if metric == "exact":
        return exact_match(prediction, answers)
    return choice_accuracy(choice_index, gold_index)
