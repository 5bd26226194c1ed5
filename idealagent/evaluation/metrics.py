"""Scoring predictions against gold answers, calibration, and agent statistics.

The VQA accuracy follows the official evaluation (``vqaEval.py`` of the GT-Vision-Lab VQA API)
line by line, quirks included, so that numbers are comparable with published ones: the same
contraction map, number words, articles, punctuation list and regular expressions, re-written
here in our own code. Two versions of its answer processing are in use (``VQA_METRICS``):

- ``vqa2021``, the default: the official code since March 2021 (commit a013f00, "Fixed
  processing answers bug"). Only when the human answers are not all identical do both they and
  the prediction get ``processPunctuation`` and ``processDigitArticle``; else neither does.
- ``vqa-legacy``: the code before it, which LAVIS and lmms-eval still copy. The prediction is
  always fully normalised; the human answers get ``processPunctuation`` only, and only when
  they are not all identical. Choose it to compare with numbers those toolkits report.

The one place where we depart from both (a single human answer) is documented on ``vqa_score``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from idealagent.errors import InputError
from idealagent.evaluation.items import METRICS, Metric
from idealagent.parsing import is_undecided

if TYPE_CHECKING:
    from idealagent.trace import Trace

VqaMetric = Literal["vqa2021", "vqa-legacy"]
# Name → what it is, for help texts and reports; the first is the default.
VQA_METRICS: dict[str, str] = {
    "vqa2021": "the official vqaEval.py since March 2021",
    "vqa-legacy": "the official vqaEval.py before March 2021, as in LAVIS and lmms-eval",
}
DEFAULT_VQA_METRIC: VqaMetric = "vqa2021"
DEFAULT_COVERAGES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
# A finished sample whose answer came from one of these did not end on a confident verdict.
FALLBACK_STOP_REASONS = frozenset({"questioner_failed", "reasoner_failed", "error"})

# --- the official normalisation tables (vqaEval.py), copied verbatim, curly apostrophes and all.
# Some entries look wrong ("somebody’d" -> "somebodyd"); they are kept so scores stay comparable.
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn’t’ve", "couldnt’ve": "couldn’t’ve", "didnt": "didn’t", "doesnt": "doesn’t",
    "dont": "don’t", "hadnt": "hadn’t", "hadnt’ve": "hadn’t’ve", "hadn'tve": "hadn’t’ve",
    "hasnt": "hasn’t", "havent": "haven’t", "hed": "he’d", "hed’ve": "he’d’ve", "he’dve": "he’d’ve",
    "hes": "he’s", "howd": "how’d", "howll": "how’ll", "hows": "how’s", "Id’ve": "I’d’ve",
    "I’dve": "I’d’ve", "Im": "I’m", "Ive": "I’ve", "isnt": "isn’t", "itd": "it’d", "itd’ve": "it’d’ve",
    "it’dve": "it’d’ve", "itll": "it’ll", "let’s": "let’s", "maam": "ma’am", "mightnt": "mightn’t",
    "mightnt’ve": "mightn’t’ve", "mightn’tve": "mightn’t’ve", "mightve": "might’ve", "mustnt": "mustn’t",
    "mustve": "must’ve", "neednt": "needn’t", "notve": "not’ve", "oclock": "o’clock", "oughtnt": "oughtn’t",
    "ow’s’at": "’ow’s’at", "’ows’at": "’ow’s’at", "’ow’sat": "’ow’s’at", "shant": "shan’t",
    "shed’ve": "she’d’ve", "she’dve": "she’d’ve", "she’s": "she’s", "shouldve": "should’ve",
    "shouldnt": "shouldn’t", "shouldnt’ve": "shouldn’t’ve", "shouldn’tve": "shouldn’t’ve",
    "somebody’d": "somebodyd", "somebodyd’ve": "somebody’d’ve", "somebody’dve": "somebody’d’ve",
    "somebodyll": "somebody’ll", "somebodys": "somebody’s", "someoned": "someone’d",
    "someoned’ve": "someone’d’ve", "someone’dve": "someone’d’ve", "someonell": "someone’ll",
    "someones": "someone’s", "somethingd": "something’d", "somethingd’ve": "something’d’ve",
    "something’dve": "something’d’ve", "somethingll": "something’ll", "thats": "that’s",
    "thered": "there’d", "thered’ve": "there’d’ve", "there’dve": "there’d’ve", "therere": "there’re",
    "theres": "there’s", "theyd": "they’d", "theyd’ve": "they’d’ve", "they’dve": "they’d’ve",
    "theyll": "they’ll", "theyre": "they’re", "theyve": "they’ve", "twas": "’twas", "wasnt": "wasn’t",
    "wed’ve": "we’d’ve", "we’dve": "we’d’ve", "weve": "we've", "werent": "weren’t", "whatll": "what’ll",
    "whatre": "what’re", "whats": "what’s", "whatve": "what’ve", "whens": "when’s", "whered": "where’d",
    "wheres": "where's", "whereve": "where’ve", "whod": "who’d", "whod’ve": "who’d’ve",
    "who’dve": "who’d’ve", "wholl": "who’ll", "whos": "who’s", "whove": "who've", "whyll": "why’ll",
    "whyre": "why’re", "whys": "why’s", "wont": "won’t", "wouldve": "would’ve", "wouldnt": "wouldn’t",
    "wouldnt’ve": "wouldn’t’ve", "wouldn’tve": "wouldn’t’ve", "yall": "y’all", "yall’ll": "y’all’ll",
    "y’allll": "y’all’ll", "yall’d’ve": "y’all’d’ve", "y’alld’ve": "y’all’d’ve", "y’all’dve": "y’all’d’ve",
    "youd": "you’d", "youd’ve": "you’d’ve", "you’dve": "you’d’ve", "youll": "you’ll", "youre": "you’re",
    "youve": "you’ve",
}  # fmt: skip
NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = (";", ":", "/", "'", "[", "]", '"', "(", ")", "=", "+", "\\", "_", ">", "<", "@", "`", ",", "?")
# The official "(?!<=\d)" is a negative *lookahead* for the text "<=digit" (a typo for a
# lookbehind), so it never fires: every period not followed by a digit goes ("3.5" keeps its).
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
# The official code passes re.UNICODE as ``sub``'s third positional argument, which is ``count``:
# at most 32 periods are stripped. Kept for fidelity; no real answer has that many.
_PERIOD_STRIP_COUNT = int(re.UNICODE)


def process_punctuation(text: str) -> str:
    """The official ``processPunctuation``: drop or space out punctuation, strip periods.

    A mark is deleted when it touches a space somewhere in the text, or when the text has a digit
    comma digit ("1,000" -> "1000"); otherwise it becomes a space ("a/b" -> "a b"). The hyphen is
    not in the list, so "x-ray" stays.
    """
    out = text
    glued_number = _COMMA_STRIP.search(text) is not None
    for mark in PUNCTUATION:
        if mark + " " in text or " " + mark in text or glued_number:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_STRIP.sub("", out, _PERIOD_STRIP_COUNT)


def process_digit_article(text: str) -> str:
    """The official ``processDigitArticle``: lower-case, number words to digits, drop articles,
    restore contractions ("dont" -> "don’t", with the official curly apostrophe)."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in ARTICLES]
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def strip_whitespace(text: str) -> str:
    """The official first step on every answer: newlines and tabs become spaces, ends trimmed."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(text: str) -> str:
    """An answer fully processed as the official VQA evaluation does it (whitespace, punctuation,
    then digits and articles)."""
    return process_digit_article(process_punctuation(strip_whitespace(text)))


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
    Departures from both: with fewer than 10 answers the leave-one-out runs over those there
    are; with a single answer there is nothing to leave out (the official loop would always
    score 0), so the score is ``exact_match`` with both sides normalised.
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


def _paired(
    confidences: Sequence[float | None], scores: Sequence[float | None]
) -> tuple[list[float], list[float]]:
    """Validated (confidence, score) lists; a missing confidence or score (failed sample) is 0."""
    if len(confidences) != len(scores):
        raise InputError(
            f"{len(confidences)} confidences for {len(scores)} scores; pass one of each per sample"
        )
    if not scores:
        raise InputError("no samples to measure; run the evaluation first")
    conf = [0.0 if c is None else float(c) for c in confidences]
    if any(not 0.0 <= c <= 1.0 for c in conf):
        raise InputError("confidences must lie in [0, 1]")
    return conf, [0.0 if s is None else float(s) for s in scores]


def calibration_bins(
    confidences: Sequence[float | None], scores: Sequence[float | None], bins: int = 10
) -> list[dict[str, float | int | None]]:
    """Equal-width confidence bins over [0, 1]: bounds, count, mean confidence and accuracy.

    Bin i holds confidences in [i/bins, (i+1)/bins); the last bin also holds 1.0. Scores may be
    fractional (VQA accuracy) and are averaged as they are. Empty bins have None means.
    """
    if bins < 1:
        raise InputError("bins must be at least 1")
    conf, acc = _paired(confidences, scores)
    members: list[list[int]] = [[] for _ in range(bins)]
    for i, c in enumerate(conf):
        members[min(int(c * bins), bins - 1)].append(i)
    table: list[dict[str, float | int | None]] = []
    for b, idx in enumerate(members):
        table.append({
            "low": b / bins, "high": (b + 1) / bins, "n": len(idx),
            "confidence": math.fsum(conf[i] for i in idx) / len(idx) if idx else None,
            "accuracy": math.fsum(acc[i] for i in idx) / len(idx) if idx else None,
        })  # fmt: skip
    return table


def expected_calibration_error(
    confidences: Sequence[float | None], scores: Sequence[float | None], bins: int = 10
) -> float:
    """ECE: the count-weighted mean gap between accuracy and mean confidence over the bins."""
    table = calibration_bins(confidences, scores, bins)
    total = sum(int(b["n"] or 0) for b in table)
    return sum(
        int(b["n"] or 0) / total * abs(float(b["accuracy"] or 0) - float(b["confidence"] or 0)) for b in table
    )


def accuracy_at_coverage(
    confidences: Sequence[float | None],
    scores: Sequence[float | None],
    coverages: Sequence[float] = DEFAULT_COVERAGES,
) -> list[tuple[float, float]]:
    """Selective accuracy: answer only the most confident fraction ``c`` of the samples.

    Samples are ranked by confidence, highest first, and the top k = ceil(c * n) (at least one)
    are kept; the accuracy at coverage ``c`` is their mean score. Samples of equal confidence
    form one group that no ranking can order, so when the k-th place falls inside a group, each
    of its kept places counts the group's mean score: the expected accuracy had the tie been
    broken at random. The coverage reported is thus always the requested k / n, and the numbers
    never depend on the order of the rows.
    """
    conf, acc = _paired(confidences, scores)
    members: dict[float, list[float]] = {}
    for c, a in zip(conf, acc):
        members.setdefault(c, []).append(a)
    # (size, total score) per confidence, highest first; fsum is exact, so row order can't leak in.
    groups = [(len(members[c]), math.fsum(members[c])) for c in sorted(members, reverse=True)]
    curve = []
    for coverage in coverages:
        if not 0.0 < coverage <= 1.0:
            raise InputError(f"coverage {coverage} is outside (0, 1]")
        # round() first so 0.3 * 10 = 3.0000000000000004 keeps 3 samples, not 4.
        wanted = max(1, math.ceil(round(coverage * len(conf), 9)))
        kept, total = 0, 0.0
        for size, group_total in groups:
            take = min(size, wanted - kept)
            total += group_total if take == size else group_total * take / size
            kept += take
            if kept == wanted:
                break
        curve.append((float(coverage), total / wanted))
    return curve


def _percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation (numpy's default method)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def is_fallback(trace: Trace) -> bool:
    """Whether a finished trace's answer did not come from the loop's normal course.

    True when the run stopped because a role failed (``questioner_failed``, ``reasoner_failed``)
    or the sample errored, or when it hit ``max_rounds`` and the answer it kept is the forced
    last round's (the reasoner had to commit). ``max_rounds`` keeping an earlier, unforced verdict
    and ``no_new_questions`` are not fallbacks: those answers were given freely, just below the
    threshold.
    """
    if trace.stop_reason in FALLBACK_STOP_REASONS:
        return True
    if trace.stop_reason != "max_rounds":
        return False
    if trace.answer_source is not None:  # the trace says which candidate it kept
        return trace.answer_source == "round" and any(r.forced and r.index == trace.answer_round
                                                       for r in trace.rounds)
    best = trace.best_verdict  # written before candidates: the most confident verdict was kept
    return any(r.forced and r.verdict is best for r in trace.rounds) if best is not None else False


def agent_stats(traces: Sequence[Trace]) -> dict[str, Any]:
    """What the agent spent and how it stopped, over finished traces (JSON-able).

    Means are per sample. ``unknown_rate``: samples that ran (no error) but ended without an
    answer or with a non-answer such as "unknown"; errored samples count in ``error_rate``
    instead, so the two add up to the share with no usable answer. ``fallback_rate``: see
    ``is_fallback``. Latency percentiles cover every sample, errored ones included.
    """
    n = len(traces)
    stats: dict[str, Any] = {"n": n}
    if n == 0:
        return stats

    def mean(values: Sequence[float]) -> float:
        return sum(values) / n

    for name in ("llm_calls", "llm_input_tokens", "llm_output_tokens", "answerer_calls", "answerer_input_tokens",
                 "answerer_output_tokens"):
        values = [getattr(t.usage, name) for t in traces]
        stats[f"total_{name}"] = sum(values)
        stats[f"mean_{name}"] = mean(values)
    latencies = [t.latency_s for t in traces]
    errored = [t.stop_reason == "error" or t.error is not None for t in traces]
    stats.update(
        mean_rounds=mean([len(t.rounds) for t in traces]),
        mean_sub_questions=mean([len(t.sub_questions) for t in traces]),
        stop_reasons=dict(Counter(t.stop_reason or "unfinished" for t in traces).most_common()),
        error_rate=mean([float(e) for e in errored]),
        unknown_rate=mean([float(not e and is_undecided(t.answer)) for t, e in zip(traces, errored)]),
        fallback_rate=mean([float(is_fallback(t)) for t in traces]),
        latency_mean_s=mean(latencies),
        latency_p50_s=_percentile(latencies, 50),
        latency_p90_s=_percentile(latencies, 90),
    )
    return stats


# --- can the confidence be trusted, and does the loop help? -----------------------------------

RIGHT_AT = 0.5  # a score at or above this counts as right (AUROC, McNemar, loop changes)
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed, so the same results file always gives the same interval
MIN_EXEMPLAR_WORDS = 4  # shorter exemplar sentences ("Is it red?") are asked for their own sake
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def brier_score(confidences: Sequence[float | None], scores: Sequence[float | None]) -> float:
    """The mean squared gap between confidence and score (0 is perfect; a missing one is 0)."""
    conf, acc = _paired(confidences, scores)
    return math.fsum((c - a) ** 2 for c, a in zip(conf, acc)) / len(conf)


def auroc(confidences: Sequence[float | None], scores: Sequence[float | None]) -> float | None:
    """How well confidence ranks right answers (score >= 0.5) above wrong ones: the chance that
    a random right sample is more confident than a random wrong one, a tie counting 1/2.

    None when every sample is right or every one is wrong (there is nothing to rank).
    """
    conf, acc = _paired(confidences, scores)
    counts: dict[float, list[int]] = {}  # confidence -> [right, wrong]
    for c, a in zip(conf, acc):
        counts.setdefault(c, [0, 0])[0 if a >= RIGHT_AT else 1] += 1
    right = sum(r for r, _ in counts.values())
    wrong = len(conf) - right
    if not right or not wrong:
        return None
    # Mann-Whitney U over the confidence levels, lowest first: each right sample beats every
    # wrong one below its level and half-beats those at it.
    wins, wrong_below = 0.0, 0
    for c in sorted(counts):
        r, w = counts[c]
        wins += r * (wrong_below + w / 2)
        wrong_below += w
    return wins / (right * wrong)


def risk_coverage(
    confidences: Sequence[float | None], scores: Sequence[float | None]
) -> list[tuple[float, float, float]]:
    """The risk-coverage curve: (confidence threshold, coverage, risk) for each distinct
    confidence, highest first.

    Answering only the samples at or above the threshold covers that share of them; the risk
    is 1 - their mean score. Tied confidences enter together, as one point, so the curve never
    depends on the order of the rows.
    """
    conf, acc = _paired(confidences, scores)
    members: dict[float, list[float]] = {}
    for c, a in zip(conf, acc):
        members.setdefault(c, []).append(a)
    curve, kept, total = [], 0, 0.0
    for c in sorted(members, reverse=True):
        kept += len(members[c])
        total += math.fsum(members[c])
        curve.append((c, kept / len(conf), 1 - total / kept))
    return curve


def area_under_risk_coverage(confidences: Sequence[float | None], scores: Sequence[float | None]) -> float:
    """AURC: the mean risk over the n coverage steps of one sample each (lower is better).

    AURC = (1/n) * sum over k = 1..n of (1 - A_k), where A_k is the mean score of the k most
    confident samples. When the k-th place falls inside a group of tied confidences, each kept
    place of the group counts the group's mean score (the expected value had the tie been
    broken at random), exactly as ``accuracy_at_coverage`` does; so A_k is that function's
    value at coverage k/n.
    """
    conf, acc = _paired(confidences, scores)
    members: dict[float, list[float]] = {}
    for c, a in zip(conf, acc):
        members.setdefault(c, []).append(a)
    risks, kept, total = 0.0, 0, 0.0
    for c in sorted(members, reverse=True):
        size, group_total = len(members[c]), math.fsum(members[c])
        for j in range(1, size + 1):
            risks += 1 - (total + group_total * j / size) / (kept + j)
        kept += size
        total += group_total
    return risks / len(conf)


def mcnemar_p(agent_only_right: int, baseline_only_right: int) -> float:
    """McNemar's exact two-sided p: how likely a split of the discordant pairs at least this
    lopsided is if either side were as often the only one right (binomial, p = 1/2)."""
    n = agent_only_right + baseline_only_right
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(agent_only_right, baseline_only_right) + 1))
    return min(1.0, 2 * tail / 2**n)  # exact: Python divides big integers with correct rounding


def paired_comparison(
    agent: Sequence[float], baseline: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any] | None:
    """Agent against baseline on the same samples (one score of each per sample), or None for
    no samples.

    ``difference`` is the mean of agent - baseline; ``interval`` its paired bootstrap 95%
    interval (samples resampled with replacement ``resamples`` times with a fixed ``seed``;
    the 2.5th and 97.5th percentiles of the resampled means, linearly interpolated);
    ``mcnemar_p`` is McNemar's exact test on right (score >= 0.5) vs wrong;
    ``significantly_worse``: the whole interval lies below 0.
    """
    import numpy as np

    if len(agent) != len(baseline):
        raise InputError(
            f"{len(agent)} agent scores for {len(baseline)} baseline scores; pass one of each per sample"
        )
    n = len(agent)
    if n == 0:
        return None
    diffs = np.asarray(agent, dtype=float) - np.asarray(baseline, dtype=float)
    rng = np.random.default_rng(seed)
    means = []
    # In chunks, so a large run does not hold resamples * n indices at once.
    for start in range(0, resamples, 250):
        idx = rng.integers(0, n, size=(min(250, resamples - start), n))
        means.append(diffs[idx].mean(axis=1))
    low, high = (float(v) for v in np.percentile(np.concatenate(means), [2.5, 97.5]))
    agent_right = [a >= RIGHT_AT for a in agent]
    baseline_right = [b >= RIGHT_AT for b in baseline]
    agent_only = sum(a and not b for a, b in zip(agent_right, baseline_right))
    baseline_only = sum(b and not a for a, b in zip(agent_right, baseline_right))
    return {
        "n": n, "agent_accuracy": math.fsum(agent) / n, "baseline_accuracy": math.fsum(baseline) / n,
        "difference": math.fsum(diffs.tolist()) / n, "interval": [low, high],
        "resamples": resamples, "seed": seed,
        "agent_only_right": agent_only, "baseline_only_right": baseline_only,
        "mcnemar_p": mcnemar_p(agent_only, baseline_only), "significantly_worse": high < 0,
    }  # fmt: skip


def loop_changes(
    traces: Sequence[Trace], scores: Sequence[float], direct_scores: Sequence[float | None]
) -> dict[str, Any] | None:
    """How often the loop's final answer differs from the direct answer, and who was right.

    Only traces with a direct answer count (None if there are none). An answer is changed when
    the final answer differs from the direct one after ``normalize_answer`` (no final answer
    counts as a change). Of the changed, ``agent_right`` counts those whose final answer is right
    (score >= 0.5) and ``direct_right`` those whose direct answer was (``direct_scores``, None
    where it could not be scored: then it is not counted, and ``direct_scored`` says how many were).
    """
    if not len(traces) == len(scores) == len(direct_scores):
        raise InputError("pass one score and one direct score per trace")
    n = changed = agent_right = direct_right = direct_scored = 0
    for trace, value, direct in zip(traces, scores, direct_scores):
        if trace.direct is None or trace.direct.answer is None:
            continue
        n += 1
        final = None if trace.answer is None else normalize_answer(trace.answer)
        if final == normalize_answer(trace.direct.answer):
            continue
        changed += 1
        agent_right += value >= RIGHT_AT
        if direct is not None:
            direct_scored += 1
            direct_right += direct >= RIGHT_AT
    if n == 0:
        return None
    return {
        "n": n, "changed": changed, "changed_rate": changed / n,
        "agent_right": agent_right, "agent_right_rate": agent_right / changed if changed else None,
        "direct_scored": direct_scored, "direct_right": direct_right,
        "direct_right_rate": direct_right / direct_scored if direct_scored else None,
    }  # fmt: skip


def answer_sources(traces: Sequence[Trace]) -> dict[str, int] | None:
    """Where the final answers came from: ``direct`` or ``round N``, with counts (most first);
    None when no trace records it (results written before the direct answer existed)."""
    sources = Counter(
        "direct" if t.answer_source == "direct" else f"round {t.answer_round}"
        for t in traces if t.answer_source is not None
    )  # fmt: skip
    return dict(sorted(sources.items(), key=lambda item: (-item[1], item[0]))) if sources else None


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``: split after ``.``, ``!`` or ``?`` followed by whitespace."""
    return [s for s in (part.strip() for part in _SENTENCE_END.split(text)) if s]


def _flat(text: str) -> str:
    return " ".join(text.lower().split())


def exemplar_echo(traces: Sequence[Trace], exemplar_sentences: Sequence[str]) -> dict[str, Any]:
    """How many of the generated texts (every sub-question and every verdict analysis) repeat a
    few-shot exemplar sentence verbatim.

    Texts and sentences are compared lower-cased with whitespace collapsed; a text echoes when a
    sentence, less its final ``.``, ``!`` or ``?``, occurs in it. Sentences shorter than
    ``MIN_EXEMPLAR_WORDS`` words are ignored. ``rate`` is None when there are no texts;
    ``echoed`` names the sentences that were repeated, with how many texts repeat each.
    """
    sentences = sorted({_flat(s).rstrip(".!?") for s in exemplar_sentences
                        if len(s.split()) >= MIN_EXEMPLAR_WORDS})  # fmt: skip
    texts = [qa.question for t in traces for r in t.rounds for qa in r.sub_qas]
    texts += [r.verdict.analysis for t in traces for r in t.rounds if r.verdict and r.verdict.analysis]
    echoed: Counter[str] = Counter()
    echoes = 0
    for text in map(_flat, texts):
        found = [s for s in sentences if s in text]
        echoes += bool(found)
        echoed.update(found)
    return {
        "texts": len(texts), "echoes": echoes, "rate": echoes / len(texts) if texts else None,
        "echoed": dict(echoed.most_common()),
    }  # fmt: skip
