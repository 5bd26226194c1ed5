"""The data model: what goes in (Sample) and the single record of what happened (Trace).

Console output, ``--json`` output, evaluation lines and reports all read a Trace; nothing else
invents its own dict shape. Everything round-trips through JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, model_validator

from idealagent.errors import InputError

TaskKind = Literal["open", "multiple_choice", "yes_no", "entailment"]
TASK_KINDS: tuple[str, ...] = ("open", "multiple_choice", "yes_no", "entailment")
YES_NO = ("yes", "no")
ENTAILMENT_LABELS = ("entailment", "neutral", "contradiction")
MAX_CHOICES = 26  # the options are lettered A to Z

StopReason = Literal[
    "confident",  # the best candidate's calibrated confidence reached the threshold
    "max_rounds",  # the last allowed round was judged (the reasoner had to commit)
    "no_new_questions",  # the questioner could only repeat earlier sub-questions
    "questioner_failed",  # the questioner's replies stayed unusable after every retry
    "answerer_failed",  # the answerer failed on every sub-question of a round
    "rounds_do_not_pay",  # the calibration's fitted run: the next round never fixed a wrong answer
    "reasoner_failed",  # the reasoner's replies stayed unusable after every retry
    "error",  # the sample could not run (e.g. unreadable image); see Trace.error
    # A model service failed on it every time it was tried (retries exhausted, out of memory):
    # not a result. There is no answer, and the eval runner leaves the sample to the rerun.
    "infrastructure",
]


class Sample(BaseModel):
    """One question about one image.

    ``image`` is a file path, an http(s) URL or an in-memory PIL image (which is written to
    JSON as a placeholder, not as pixels). For ``entailment`` the question is the hypothesis.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    question: str
    image: Any = None
    kind: TaskKind = "open"
    choices: list[str] | None = None
    id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _infer_kind(cls, data: Any) -> Any:
        # Choices without a kind mean multiple choice; fixed-label kinds get their labels.
        if isinstance(data, dict):
            data = dict(data)
            if data.get("kind") is not None and data["kind"] not in TASK_KINDS:
                raise InputError(f"unknown task kind {data['kind']!r}; choose one of: {', '.join(TASK_KINDS)}")
            if data.get("kind") is None:
                data["kind"] = "multiple_choice" if data.get("choices") else "open"
            if data["kind"] == "yes_no" and not data.get("choices"):
                data["choices"] = list(YES_NO)
            if data["kind"] == "entailment" and not data.get("choices"):
                data["choices"] = list(ENTAILMENT_LABELS)
            if isinstance(data.get("image"), Path):
                data["image"] = str(data["image"])
        return data

    @model_validator(mode="after")
    def _check(self) -> Sample:
        if not self.question or not self.question.strip():
            raise InputError("the question is empty")
        if self.kind == "open":
            if self.choices:
                raise InputError("an open-ended question takes no choices")
        else:
            choices = [c.strip() for c in self.choices or []]
            if len(choices) < 2 or any(not c for c in choices):
                raise InputError(f"a {self.kind} question needs at least 2 non-empty choices")
            if len({c.lower() for c in choices}) != len(choices):
                raise InputError("the choices repeat each other")
            if self.kind == "multiple_choice" and len(choices) > MAX_CHOICES:
                raise InputError(f"a multiple-choice question takes at most {MAX_CHOICES} choices (A to Z), "
                                 f"got {len(choices)}")
        return self

    @field_serializer("image")
    def _image_ref(self, image: Any) -> str | None:
        if image is None or isinstance(image, str):
            return image
        size = getattr(image, "size", None)
        return f"<in-memory image {size[0]}x{size[1]}>" if size else "<in-memory image>"


class SubQA(BaseModel):
    """A sub-question the questioner asked and the answerer's short answer."""

    question: str
    answer: str = ""
    error: str | None = None  # the answerer failed on it: no answer, and no evidence
    # Asked of a region, not the whole picture: a sub-question about the search's target is
    # answered on the view where the search found it (box in original pixels, and in words).
    box: list[int] | None = None
    where: str | None = None


class Verdict(BaseModel):
    """The reasoner's judgement after a round."""

    analysis: str
    answer: str | None  # None: the reasoner could not decide (only in non-final rounds)
    confidence: float = Field(ge=0.0, le=1.0)  # as the reasoner stated it
    choice_index: int | None = None  # index into Sample.choices, for choice kinds
    # What else speaks for or against the answer (confidence.py names them: the reasoner's
    # probability of its answer tokens, agreement with the direct answer and the sub-answers...);
    # a signal the models could not give is absent, never guessed.
    signals: dict[str, float] = Field(default_factory=dict)
    calibrated: float | None = None  # the signals through the calibration: what the loop acts on
    votes: list[str] = Field(default_factory=list)  # answers of the sampled reasoner replies (--votes)

    @property
    def acted_on(self) -> float | None:
        """The confidence the loop acted on: the calibrated one (traces written before
        calibration existed acted on the stated one)."""
        return self.calibrated if self.calibrated is not None or self.signals else self.confidence


class DirectAnswer(BaseModel):
    """The answerer's own answer to the main question, asked once before round 1.

    It is evidence for the reasoner, a candidate for the final answer, and in evaluation the
    answerer-alone baseline.
    """

    question: str  # as the answerer was asked it (the options and answer format included)
    reply: str = ""  # what the answerer said (under --scoring likelihood: the option it scored highest)
    answer: str | None = None  # the reply read as an answer (a choice, for choice kinds)
    choice_index: int | None = None
    signals: dict[str, float] = Field(default_factory=dict)
    calibrated: float | None = None
    error: str | None = None  # the answerer failed on this sample
    # Under --scoring likelihood, each option's summed token log-probability as the reply to the
    # bare question, and its token count, in the options' order (the choice: the best per token).
    option_logprobs: list[float] = Field(default_factory=list)
    option_tokens: list[int] = Field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0

    def __str__(self) -> str:
        """One line for ``print``: ``Direct answer 'cat' at 0.62 (reply: 'A cat.')``."""
        if self.error:
            return f"Direct answer: none ({self.error})"
        if self.answer is None:
            return f"Direct answer: none of the options (reply: {self.reply!r})"
        return f"Direct answer {self.answer!r} at {_confidence(self.calibrated)} (reply: {_short(self.reply)!r})"


class Failure(BaseModel):
    """An unusable LLM reply, kept so a trace shows what was retried and why."""

    role: Literal["questioner", "reasoner", "answerer"]
    attempt: int
    error: str
    raw: str = ""


class Round(BaseModel):
    """One questioner → answerer → reasoner cycle."""

    index: int  # 1-based
    sub_qas: list[SubQA] = Field(default_factory=list)
    verdict: Verdict | None = None
    forced: bool = False  # the last allowed round: the reasoner had to commit to an answer
    failures: list[Failure] = Field(default_factory=list)

    def __str__(self) -> str:
        """One line for ``print``: ``Round 1: 2 sub-questions; verdict 'cat' at 0.90``."""
        count = len(self.sub_qas)
        head = f"Round {self.index}{' (final)' if self.forced else ''}: {count} sub-question{'' if count == 1 else 's'}"
        if self.verdict is None:
            answered = sum(1 for qa in self.sub_qas if qa.answer)
            return f"{head}, {answered} answered; not judged yet"
        if not self.verdict.answer:
            return f"{head}; undecided"
        return f"{head}; verdict {self.verdict.answer!r} at {_confidence(self.verdict.acted_on)}"


LookKind = Literal["exists", "detect", "box", "describe", "answer"]
SearchMode = Literal["quadtree", "answers", "detect", "boxes", "grid"]


class Look(BaseModel):
    """One closer look at a part of the picture: where, what was asked and what came back."""

    box: list[int]  # [x0, y0, x1, y1] in the original picture's pixels (the whole picture for "box")
    # exists: "is the target here?"; detect: the same, asked of the answerer's own detector;
    # box: "where is it?"; describe; answer: the main question
    kind: LookKind
    question: str
    reply: str = ""  # for "detect": what the detector saw ("a yellow circle"), "" for nothing
    p_yes: float | None = None  # for "exists": p(yes) from the answer's probability; "detect": its score
    found: list[int] | None = None  # for "detect": where in the view it found the target (original pixels)
    probability: float | None = None  # for the others: the reply's own probability, where the answerer gives one
    depth: int = 0  # the view's level in the quadtree (0: the whole picture)
    where: str = ""  # the box in words: "upper left, about a tenth of the width"
    error: str | None = None  # the answerer failed on this view

    def __str__(self) -> str:
        """One line: ``Look at upper left, about a tenth of the width: 'Is there a red kite…' → 'yes' (p 0.91)``."""
        p = f" (p {self.p_yes:.2f})" if self.p_yes is not None else ""
        said = f"failed: {self.error}" if self.error else repr(_short(self.reply))
        return f"Look at {self.where or self.box}: {_short(self.question, 50)!r} → {said}{p}"


class Search(BaseModel):
    """A sample's visual search: how its views were chosen and every look, in order."""

    mode: SearchMode  # quadtree (yes/no probabilities), answers, detect, boxes (named in text) or grid
    target: str  # what was searched for
    size: list[int]  # the original picture's (width, height), the frame of every box
    looks: list[Look] = Field(default_factory=list)
    best: list[int] | None = None  # the box the main question was asked about, if any
    # The main question's answer on that view: a candidate for the final answer, like the
    # direct answer (its signals calibrated as a direct answer's).
    answer: DirectAnswer | None = None

    @property
    def calls(self) -> int:
        """Answerer calls the search made."""
        return len(self.looks)

    @property
    def presence(self) -> float | None:
        """How sure the search was that the target is where it looked: the highest p(yes) (a
        yes/no reply's, or a detector's score) of its looks; None where none had one."""
        scores = [look.p_yes for look in self.looks if look.p_yes is not None and not look.error]
        return max(scores) if scores else None

    def evidence(self) -> list[Look]:
        """The looks the questioner and reasoner are told about: the answer on the best view, the
        descriptions, and views found to hold the target."""
        return [look for look in self.looks if not look.error and (
            (look.kind == "answer" and look.box == self.best) or look.kind == "describe"
            or (look.kind in ("exists", "detect") and (look.p_yes or 0) >= 0.5))]


class Shown(BaseModel):
    """An image a questioner or reasoner was shown beside its prompt (settings ``roles_see``)."""

    box: list[int]  # [x0, y0, x1, y1] in the original picture's pixels; the whole picture for the picture
    where: str = ""  # a view's place in words, as its prompt named it ("" for the whole picture)
    size: list[int]  # the (width, height) it was sent at


class Usage(BaseModel):
    """Model calls and tokens spent on one sample.

    The LLM figures cover the questioner and the reasoner (retries included). The answerer's
    cover its own model (the VLM, or the tiny preset's LLM), captions included, when the backend
    reports them (see ``answerers.Answer``); otherwise they stay 0.
    """

    llm_calls: int = 0
    llm_input_tokens: int = 0
    llm_output_tokens: int = 0
    answerer_calls: int = 0  # questions the answerer answered: the direct answer, looks and sub-questions (not captions)
    answerer_input_tokens: int = 0  # prompt and image tokens
    answerer_output_tokens: int = 0
    # Model calls by step (caption, direct, look, questioner, answerer, reasoner), retries and
    # failed calls included: where a sample's compute went.
    steps: dict[str, int] = Field(default_factory=dict)


class Trace(BaseModel):
    """Everything that happened for one sample; the library's only record."""

    sample: Sample
    caption: str | None = None
    direct: DirectAnswer | None = None  # the answerer's own answer, when the agent asks for it
    search: Search | None = None  # the closer looks before round 1 (settings.zoom), if any
    rounds: list[Round] = Field(default_factory=list)
    # Unusable replies that opened no round (the questioner's last tries), kept to explain a stop.
    failures: list[Failure] = Field(default_factory=list)
    answer: str | None = None
    choice_index: int | None = None  # the answer's index into Sample.choices, for choice kinds
    confidence: float | None = None  # the answer's calibrated confidence
    # Which candidate the answer is: the direct answer, the closer look's, or a round's verdict (answer_round).
    answer_source: Literal["direct", "look", "round"] | None = None
    answer_round: int | None = None
    stop_reason: StopReason | None = None
    error: str | None = None
    # Seconds per phase (caption, questioner, answerer, reasoner). A batched call's time is
    # shared equally among the samples in it, so the phases of a batch sum to its wall time.
    timings: dict[str, float] = Field(default_factory=dict)
    latency_s: float = 0.0  # wall time from the sample joining the batch to its end
    usage: Usage = Field(default_factory=Usage)
    # The images each role's model was shown beside its prompt, by role (questioner, reasoner):
    # the picture first, then the views looked at; no entry for a role that was blind.
    shown: dict[str, list[Shown]] = Field(default_factory=dict)
    # The loop settings this trace ran under (max_rounds, confidence_threshold, ...).
    settings: dict[str, Any] = Field(default_factory=dict)

    def __str__(self) -> str:
        """One line for ``print``: the question, the answer, its confidence, where it came from
        and why the loop stopped."""
        rounds = self.judged_rounds
        head = f"{self.sample.question!r} → "
        head += f"{self.answer!r} at {_confidence(self.confidence)}" if self.answer is not None else "no answer"
        if self.answer_source == "direct":
            head += " (the direct answer)"
        elif self.answer_source == "look":
            head += " (from a closer look)"
        elif self.answer_round is not None:
            head += f" (from round {self.answer_round})"
        head += f" after {rounds} round{'' if rounds == 1 else 's'}"
        return head + (f"; {self.stop_reason}" if self.stop_reason else "; running")

    @property
    def judged_rounds(self) -> int:
        """Rounds that produced a verdict: the rounds the loop counts."""
        return sum(1 for r in self.rounds if r.verdict is not None)

    @property
    def done(self) -> bool:
        """Whether the sample has stopped."""
        return self.stop_reason is not None

    @property
    def sub_questions(self) -> list[str]:
        """Every sub-question asked so far, in order."""
        return [qa.question for r in self.rounds for qa in r.sub_qas]

    @property
    def last_verdict(self) -> Verdict | None:
        """The most recent verdict, if any round has one."""
        return next((r.verdict for r in reversed(self.rounds) if r.verdict), None)

    @property
    def best_verdict(self) -> Verdict | None:
        """The most confident verdict with an answer (the later one on a tie), if any."""
        verdicts = [(r.verdict.confidence, r.index, r.verdict) for r in self.rounds if r.verdict and r.verdict.answer]
        return max(verdicts, key=lambda v: v[:2])[2] if verdicts else None

    def to_json(self, **kwargs: Any) -> str:
        """Serialise to JSON."""
        return self.model_dump_json(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> Trace:
        """Parse a JSON string written by ``to_json``."""
        return cls.model_validate_json(text)


def _confidence(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
