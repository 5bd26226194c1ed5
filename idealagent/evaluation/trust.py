"""Can the agent's confidence be trusted, and does the loop beat its baseline?

Calibration (equal-width bins, ECE, Brier), ranking (AUROC), selective answering (accuracy at
coverage, the risk-coverage curve and its area) and the paired comparison with the baseline
(bootstrap interval, McNemar's exact test). Every function takes one confidence and one score
per sample; a missing one (a failed sample) counts as 0. Ties in confidence are handled so that
no figure depends on the order of the rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from idealagent.errors import InputError

DEFAULT_COVERAGES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
RIGHT_AT = 0.5  # a score at or above this counts as right (AUROC, McNemar, loop changes)
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed, so the same results file always gives the same interval


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
