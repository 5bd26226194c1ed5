"""One confidence that means what it says, made from a candidate answer's signals.

A ``Calibration`` maps a candidate's signals (confidence.py) to the probability that it is
right. There is one map per kind of candidate, the answerer's ``direct`` answer and a round's
``verdict``, because they carry different signals. Four methods:

- ``default`` (no file): a fixed combination, documented on ``default_score``. It has never
  seen data, so its numbers are a ranking more than probabilities; fit one for your models.
- ``stated``: the reasoner's stated confidence alone (verdicts; the direct answer gets none, so
  it never wins). The loop as IdealGPT ran it: the ablation baseline.
- ``logistic``: logistic regression (Platt scaling over several signals) fitted on a labelled
  run by ``idealagent calibrate``. Probabilities enter as their log-odds.
- ``isotonic``: isotonic regression of rightness on the ``default`` score: monotone, no shape
  assumed, needs more samples.

Every candidate gets a number: where none of the signals a method reads could be measured (an
answerer that gives no probabilities, under ``default``), it is the calibration's prior for
that kind of candidate: a fitted file's base rate (the share of its training candidates that
were right), and ``NO_DATA_PRIOR`` (even odds) for the built-in methods, which have seen no
data. A prior is not evidence: it never stops the loop early, and a candidate with a measured
confidence is preferred to one with only the prior.

The loop compares the calibrated value with the threshold, so ``--threshold 0.8`` means "stop
when answers like this are right 80% of the time" (on data like the calibration run's).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from idealagent.errors import InputError, one_line

Method = Literal["default", "stated", "logistic", "isotonic"]
METHODS: tuple[str, ...] = ("default", "stated", "logistic", "isotonic")
FITTED = ("logistic", "isotonic")
# A look's answer (the main question on the search's best view) is calibrated as its own kind
# where a file has a fit for it, and as a direct answer where it has not (files fitted before).
CandidateKind = Literal["direct", "look", "verdict"]
KINDS: tuple[CandidateKind, ...] = ("direct", "look", "verdict")
FORMAT = 1
# Signals that are probabilities: a logistic model takes their log-odds, clipped to these.
PROBABILITIES = frozenset({"stated", "answer_prob", "direct_prob", "direct_support", "direct_against", "found"})
CLIP = 0.01
RIDGE = 1.0  # L2 penalty on the logistic weights: a few hundred samples, several signals
MIN_FIT = 10  # candidates of a kind a fit needs (fewer looks are fitted with the direct answers)
MIN_PRESENT = 0.5  # a signal missing from more of the training candidates than this is not used
NO_DATA_PRIOR = 0.5  # the prior of a built-in method (or a kind a file has no fit for): even odds
Example = tuple[Mapping[str, float], float]  # (a candidate's signals, its score 0..1)


class Fit(BaseModel):
    """One candidate kind's fitted map from signals to a probability."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = 0  # training candidates
    mean_score: float = 0.0  # their accuracy: the answer when no feature varies
    features: list[str] = Field(default_factory=list)  # logistic: the inputs, in weight order
    weights: list[float] = Field(default_factory=list)
    bias: float = 0.0
    fill: list[float] = Field(default_factory=list)  # a missing input's value: its training mean
    knots: list[tuple[float, float]] = Field(default_factory=list)  # isotonic: (score, probability)


MIN_ROUND_EVIDENCE = 30  # samples a round must have reached before its record can stop the loop
MIN_ROUND_GAIN = 0.01  # the share of them a round must have fixed to be worth asking


class RoundRecord(BaseModel):
    """What one round did in a fitted run (see ``Calibration.rounds``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reached: int = 0
    fixed: int = 0


class Calibration(BaseModel):
    """Turns a candidate's signals into a calibrated confidence (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method = "default"
    fits: dict[CandidateKind, Fit] = Field(default_factory=dict)
    fitted_on: dict[str, Any] = Field(default_factory=dict)  # what the fit saw: files, counts
    # What each round did in the fitted run, by round number: samples that got a verdict in it
    # ("reached") and those whose candidates were all wrong before it and its verdict right
    # ("fixed"). A round that fixed none of enough samples is not asked (``round_pays``).
    rounds: dict[int, RoundRecord] = Field(default_factory=dict)

    def round_pays(self, index: int) -> bool:
        """Whether round ``index`` has changed a wrong answer into a right one in the fitted run;
        True where the fit saw too few samples reach it to tell (or saw no rounds at all)."""
        record = self.rounds.get(index)
        if record is None or record.reached < MIN_ROUND_EVIDENCE:
            return True
        return record.fixed / record.reached >= MIN_ROUND_GAIN

    def confidence(self, kind: CandidateKind, signals: Mapping[str, float]) -> float:
        """The probability a candidate of ``kind`` with ``signals`` is right: the prior for
        ``kind`` where no signal this calibration reads was measured (see ``measures``)."""
        value = self._measured(kind, signals)
        return self.prior(kind) if value is None else value

    def measures(self, kind: CandidateKind, signals: Mapping[str, float]) -> bool:
        """Whether ``confidence`` comes from the signals rather than the prior."""
        return self._measured(kind, signals) is not None

    def prior(self, kind: CandidateKind) -> float:
        """The confidence of a candidate of ``kind`` with no measured signal: the base rate."""
        fit = self.fits.get(self._fitted_as(kind)) if self.method in FITTED else None
        return fit.mean_score if fit is not None else NO_DATA_PRIOR

    def _fitted_as(self, kind: CandidateKind) -> CandidateKind:
        """The kind whose fit serves ``kind``: a look's answer without its own is a direct answer."""
        return "direct" if kind == "look" and "look" not in self.fits else kind

    def _measured(self, kind: CandidateKind, signals: Mapping[str, float]) -> float | None:
        kind = self._fitted_as(kind)
        if self.method == "stated":
            return signals.get("stated") if kind == "verdict" else None
        if self.method == "default":
            return default_score(kind, signals)
        fit = self.fits.get(kind)
        if fit is None:
            return None
        if self.method == "isotonic":
            score = default_score(kind, signals)
            return None if score is None or not fit.knots else _interpolate(fit.knots, score)
        if not any(value is not None for value in features_of(kind, signals, fit.features)) and fit.features:
            return None
        x = [value if value is not None else fill
             for value, fill in zip(features_of(kind, signals, fit.features), fit.fill)]
        return _sigmoid(fit.bias + sum(w * v for w, v in zip(fit.weights, x)))

    @property
    def name(self) -> str:
        """How traces and reports name it: the method, and what a fitted one was fitted on."""
        if self.fitted_on.get("shipped"):
            return f"{self.method} (shipped: {self.fitted_on['shipped']})"
        files = self.fitted_on.get("files")
        return f"{self.method} ({', '.join(map(str, files))})" if files else self.method

    def save(self, path: str | Path) -> None:
        """Write it as JSON (``load`` reads it back)."""
        Path(path).write_text(json.dumps({"format": FORMAT, **self.model_dump(mode="json")}, indent=2) + "\n",
                              encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a file ``save`` wrote; any problem is a one-line InputError."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the calibration file {path}: {one_line(exc)}") from None
        if not isinstance(data, dict) or data.pop("format", None) != FORMAT:
            raise InputError(f"{path} is not a calibration file (write one with `idealagent calibrate`)")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(map(str, error["loc"]))
            raise InputError(f"{path}: invalid calibration file: {where}: {error['msg']}") from None


# Calibrations fitted for the built-in presets ship in the package, by preset name; how each was
# fitted (the command, the data, the figures) is in docs/benchmarks.md.
SHIPPED_DIR = Path(__file__).parent / "calibrations"


def shipped() -> list[str]:
    """The names of the calibrations that ship with the package (``--calibration NAME``)."""
    return sorted(path.stem for path in SHIPPED_DIR.glob("*.json"))


def resolve(value: Any) -> Calibration:
    """A Calibration from a setting's value: a Calibration, its dict, ``None`` (the default),
    the name of a built-in one (``default``, ``stated``), of a shipped one (``tiny``) or a
    calibration file's path."""
    if value is None:
        return Calibration()
    if isinstance(value, Calibration):
        return value
    if isinstance(value, Mapping):
        return Calibration.model_validate(value)
    if isinstance(value, (str, Path)):
        if str(value) in ("default", "stated"):
            return Calibration(method=str(value))  # type: ignore[arg-type]
        if isinstance(value, str) and value in shipped():
            return Calibration.load(SHIPPED_DIR / f"{value}.json")
        if not Path(value).is_file():
            names = ", ".join(["default", "stated", *shipped()])
            raise InputError(f"no calibration file {value}; give a file `idealagent calibrate` wrote, "
                             f"or one of {names}")
        return Calibration.load(value)
    raise InputError(f"a calibration is a file path, default or stated, not {type(value).__name__}")


def default_score(kind: CandidateKind, signals: Mapping[str, float]) -> float | None:
    """The combination used without a calibration file.

    The direct answer: the answerer's probability of its answer tokens (None without one). A
    verdict: the mean of the signals it has among the stated confidence, the reasoner's answer
    probability, agreement with the direct answer and the votes' agreement. So a verdict that
    contradicts the direct answer, or that the reasoner's own tokens doubt, ranks lower.
    """
    if kind in ("direct", "look"):
        return signals.get("answer_prob")
    values = [signals[name] for name in ("stated", "answer_prob", "agrees_direct", "votes") if name in signals]
    return sum(values) / len(values) if values else None


def features_of(kind: CandidateKind, signals: Mapping[str, float], names: Sequence[str]) -> list[float | None]:
    """The logistic inputs ``names`` of a candidate, None where a signal is missing.

    Besides the signals themselves, a verdict has ``direct_support`` (the direct answer's
    probability when the verdict agrees with it, else 0) and ``direct_against`` (the same when
    it disagrees): the answerer's certainty speaks for or against the verdict accordingly. As
    log-odds a 0 becomes logit(CLIP), so each also tells agreement from disagreement.
    """
    derived = dict(signals)
    if kind == "verdict" and "direct_prob" in signals and "agrees_direct" in signals:
        agree = signals["agrees_direct"] >= 0.5
        derived["direct_support"] = signals["direct_prob"] if agree else 0.0
        derived["direct_against"] = 0.0 if agree else signals["direct_prob"]
    values: list[float | None] = []
    for name in names:
        value = derived.get(name)
        values.append(None if value is None else _log_odds(value) if name in PROBABILITIES else float(value))
    return values


def candidate_features(kind: CandidateKind) -> list[str]:
    """The inputs a logistic fit may use for ``kind``, those present in the data permitting."""
    if kind == "direct":
        return ["answer_prob", "in_caption", "agrees_sub"]
    if kind == "look":  # ``found``: how sure the search was that the target is where it looked
        return ["answer_prob", "found", "in_caption"]
    return ["stated", "answer_prob", "direct_support", "direct_against", "agrees_direct", "agrees_sub",
            "in_caption", "votes"]


def fit(examples: Mapping[CandidateKind, Sequence[Example]], method: Method = "logistic",
        fitted_on: Mapping[str, Any] | None = None) -> Calibration:
    """Fit a calibration on labelled candidates (``examples[kind]``: (signals, score) pairs)."""
    if method not in FITTED:
        raise InputError(f"only {' and '.join(FITTED)} calibrations are fitted, not {method!r}")
    fits: dict[CandidateKind, Fit] = {}
    rows_of = {kind: list(examples.get(kind, [])) for kind in KINDS}
    if len(rows_of["look"]) < MIN_FIT:  # too few looks for a fit of their own: fitted as direct answers
        rows_of["direct"] += rows_of.pop("look")
    for kind, rows in rows_of.items():
        if len(rows) < MIN_FIT:
            continue  # too few to fit: candidates of this kind get no confidence, so never win
        fits[kind] = _fit_isotonic(kind, rows) if method == "isotonic" else _fit_logistic(kind, rows)
    if not fits:
        raise InputError("too few labelled candidates to fit a calibration (at least 10 of a kind); "
                         "run `idealagent eval` on more samples")
    return Calibration(method=method, fits=fits, fitted_on=dict(fitted_on or {}))


def _fit_logistic(kind: CandidateKind, rows: Sequence[Example]) -> Fit:
    import numpy as np

    labels = np.array([min(1.0, max(0.0, float(y))) for _, y in rows])
    names, columns = [], []
    for name in candidate_features(kind):
        column = [features_of(kind, signals, [name])[0] for signals, _ in rows]
        present = [v for v in column if v is not None]
        if len(present) < MIN_PRESENT * len(rows) or len(set(present)) < 2:
            continue  # missing too often, or constant: it cannot tell candidates apart
        names.append(name)
        columns.append(column)
    fill = [float(np.mean([v for v in column if v is not None])) for column in columns]
    x = np.array([[v if v is not None else f for v in column] for column, f in zip(columns, fill)]).T
    x = x.reshape(len(rows), len(names))
    weights, bias = _newton(x, labels)
    return Fit(n=len(rows), mean_score=float(labels.mean()), features=names, weights=[float(w) for w in weights],
               bias=float(bias), fill=fill)


def _newton(x: Any, y: Any, steps: int = 50) -> tuple[Any, float]:
    """Ridge-penalised logistic regression by Newton's method (labels may be fractional)."""
    import numpy as np

    n, d = x.shape
    design = np.hstack([np.ones((n, 1)), x])
    beta = np.zeros(d + 1)
    mean = min(max(float(y.mean()), 1e-3), 1 - 1e-3)
    beta[0] = math.log(mean / (1 - mean))
    penalty = np.eye(d + 1) * RIDGE
    penalty[0, 0] = 0.0  # the intercept is free
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(design @ beta)))
        gradient = design.T @ (p - y) + penalty @ beta
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty + np.eye(d + 1) * 1e-9
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return beta[1:], float(beta[0])


def _fit_isotonic(kind: CandidateKind, rows: Sequence[Example]) -> Fit:
    """Pool-adjacent-violators on (default score, label), kept as interpolation knots."""
    pairs = sorted((score, min(1.0, max(0.0, float(y)))) for signals, y in rows
                   if (score := default_score(kind, signals)) is not None)
    if len(pairs) < 10:
        return Fit(n=len(rows), mean_score=sum(y for _, y in rows) / len(rows))
    tied: dict[float, list[float]] = {}  # equal scores are one point: [sum of labels, count]
    for score, label in pairs:
        tied.setdefault(score, [0.0, 0.0])
        tied[score][0] += label
        tied[score][1] += 1
    blocks: list[list[float]] = []  # [sum of labels, count, lowest score, highest score]
    for score, (total, count) in sorted(tied.items()):
        blocks.append([total, count, score, score])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            total, count, _, high = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
            blocks[-1][3] = high
    knots: list[tuple[float, float]] = []
    for total, count, low, high in blocks:
        knots.append((low, total / count))
        if high > low:
            knots.append((high, total / count))
    mean = sum(y for _, y in pairs) / len(pairs)
    return Fit(n=len(rows), mean_score=mean, knots=knots)


def _interpolate(knots: Sequence[tuple[float, float]], x: float) -> float | None:
    """The fitted curve at ``x``; None without knots (too few examples to fit: no signal)."""
    if not knots:
        return None
    if x <= knots[0][0]:
        return knots[0][1]
    for (x0, y0), (x1, y1) in zip(knots, knots[1:]):
        if x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return knots[-1][1]


def _log_odds(p: float) -> float:
    p = min(max(float(p), CLIP), 1 - CLIP)
    return math.log(p / (1 - p))


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))
