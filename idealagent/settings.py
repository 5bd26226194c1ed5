"""The loop's settings, defined once.

``AgentSettings`` gives every setting its default, its check, its place in the trace, whether
it belongs in a results file's fingerprint (settings that change answers do; speed knobs such
as ``batch_size`` do not), and its command-line option. ``IdealAgent``, the presets, the CLI
and the eval runner all read it; none of them repeats a default or a range.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from idealagent.calibration import Calibration, resolve
from idealagent.errors import InputError, SettingError

StructuredMode = Literal["auto", "on", "off"]
ZoomMode = Literal["auto", "on", "off"]
LookMode = Literal["auto", "quadtree", "answers", "detect", "boxes", "grid"]
RolesSeeMode = Literal["auto", "on", "off"]
OptionScoring = Literal["letter", "likelihood"]


def _setting(default: Any, help: str, *, flag: str | None = None, metavar: str | None = None,
             fingerprint: bool = True, **checks: Any) -> Any:
    """A settings field: ``flag`` is its command-line option (None: not on the command line) and
    ``metavar`` what its help shows it takes (None: from its type); ``fingerprint`` says whether
    results made under other values are comparable."""
    extra = {"flag": flag, "metavar": metavar, "fingerprint": fingerprint}
    return Field(default, description=help, json_schema_extra=extra, **checks)


class AgentSettings(BaseModel):
    """How the loop runs. Unknown names and values out of range are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    max_rounds: int = _setting(3, "Most question → answer → judge rounds.", flag="--max-rounds", ge=1)
    confidence_threshold: float = _setting(
        0.7, "Stop once the best answer's calibrated confidence reaches this (0..1).", flag="--threshold",
        ge=0.0, le=1.0)
    max_sub_questions: int = _setting(3, "Most sub-questions per round (1..5).", flag="--max-sub-questions",
                                      ge=1, le=5)
    attempts: int = _setting(3, "Tries for a questioner or reasoner reply that cannot be used.", ge=1)
    structured: StructuredMode = _setting(
        "auto", "JSON-schema structured output for the questioner and reasoner: auto (where the model "
        "has it), on, or off (parse plain text: servers without json_schema).", flag="--structured")
    direct_answer: bool = _setting(
        True, "Ask the answerer the main question before round 1: evidence for the reasoner and a "
        "candidate for the final answer.", flag="--direct-answer/--no-direct-answer")
    zoom: ZoomMode = _setting(
        "auto", "Look closer before round 1 (a visual search of the picture, looking.py): auto (when the "
        "direct answer is not confident and the picture has far more detail than the answerer's input), "
        "on (always), off.", flag="--zoom")
    look_budget: int = _setting(
        9, "Most answerer calls one sample's search may make (views scored, boxes asked for, the main "
        "question on the best view).", flag="--look-budget", ge=1, le=64)
    look_mode: LookMode = _setting(
        "auto", "How the search picks views: auto (by what the answerer offers: its own detector, else a "
        "quadtree with yes/no probabilities, else boxes named in text, else a grid), detect, quadtree, "
        "answers (a quadtree scored by the probability of each view's answer to the question), boxes or "
        "grid.", flag="--look-mode")
    roles_see: RolesSeeMode = _setting(
        "auto", "Show the questioner and the reasoner the picture, and the reasoner the views the search "
        "looked at: auto (for a role whose model takes images, a VLM), on (refused for a text model), off "
        "(blind roles, as IdealGPT's).", flag="--roles-see")
    option_scoring: OptionScoring = _setting(
        "letter", "How the answerer picks an option of a multiple-choice question (the direct answer and "
        "the closer look's): letter (the options are in the question and its reply names one) or likelihood "
        "(each option is scored as its reply to the bare question, and the most likely per token is chosen: "
        "V* Bench's official protocol; needs an answerer that scores options).", flag="--scoring")
    calibration: Calibration = _setting(
        Calibration(), "How signals become the confidence the threshold applies to: a file from "
        "`idealagent calibrate`, default (a fixed combination), stated (the reasoner's stated "
        "confidence alone), or tiny (shipped: fitted for the tiny preset, its default).",
        flag="--calibration", metavar="FILE|default|stated|tiny")
    votes: int = _setting(0, "Sample the reasoner this many more times (at the vote temperature); the "
                          "share agreeing with its answer is a signal.", flag="--votes", ge=0, le=16)
    vote_temperature: float = _setting(0.7, "Sampling temperature of the --votes replies.",
                                       flag="--vote-temperature", gt=0.0, le=2.0)
    batch_size: int = _setting(8, "Samples the agent runs together.", fingerprint=False, ge=1)
    pipeline: bool = _setting(
        True, "Move each sample on as soon as its own step returns (off: one call per step for the whole "
        "batch, the first design; the same answers, slower against model servers).", fingerprint=False)
    infra_retries: int = _setting(
        2, "More tries for a step the infrastructure failed (retries exhausted, out of memory).",
        fingerprint=False, ge=0)
    cache: bool = _setting(
        True, "Keep deterministic model replies (greedy, or temperature 0) on disk and reuse them, so a "
        "rerun repeats no such call; sampled replies (--votes) and failures are never kept.",
        flag="--cache/--no-cache", fingerprint=False)
    down_after: int = _setting(
        8, "Requests failing on the infrastructure in a row, none passing, that mean a service is down.",
        fingerprint=False, ge=1)

    @field_validator("calibration", mode="before")
    @classmethod
    def _calibration(cls, value: Any) -> Calibration:
        try:
            return resolve(value)  # a file's path or a built-in name becomes the Calibration
        except InputError as exc:  # pydantic passes it on as it is: say which setting it is
            raise SettingError("calibration", str(exc)) from None

    @classmethod
    def of(cls, **values: Any) -> AgentSettings:
        """Settings from keyword arguments (None means the default), or a one-line InputError."""
        given = {key: value for key, value in values.items() if value is not None}
        unknown = sorted(set(given) - set(cls.model_fields))
        if unknown:
            raise InputError(f"unknown agent setting(s): {', '.join(unknown)}; "
                             f"known: {', '.join(cls.model_fields)}")
        try:
            return cls(**given)
        except ValidationError as exc:
            error = exc.errors()[0]
            name = ".".join(str(part) for part in error["loc"])
            given = error.get("input")
            if isinstance(given, float) and given.is_integer():
                given = int(given)  # the command line reads --threshold 2 as 2.0: show what was typed
            raise SettingError(name, f"{error['msg'].lower()}, got {given!r}") from None

    def replace(self, **values: Any) -> AgentSettings:
        """A copy with some settings changed (None leaves one as it is), checked again."""
        return AgentSettings.of(**{**self.model_dump(), **values})

    def record(self) -> dict[str, Any]:
        """Every setting, as the trace records it."""
        return self.model_dump(mode="json")

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change answers: what must match for two runs to share a file."""
        return {name: value for name, value in self.record().items() if FIELD_FINGERPRINT[name]}


def setting_meta(model: type[BaseModel], key: str, default: Any = None) -> dict[str, Any]:
    """``key`` of each field's ``_setting`` metadata (``flag``, ``metavar``, ``fingerprint``),
    by field name; ``default`` where a field has none."""
    return {name: (field.json_schema_extra or {}).get(key, default)  # type: ignore[union-attr]
            for name, field in model.model_fields.items()}


def setting_flags(model: type[BaseModel]) -> dict[str, str]:
    """The fields that have a command-line option, and its flag (``--a/--no-a`` for a switch)."""
    return {name: flag for name, flag in setting_meta(model, "flag").items() if flag}


FIELD_FINGERPRINT: dict[str, bool] = {name: bool(value) for name, value
                                      in setting_meta(AgentSettings, "fingerprint", True).items()}
FIELD_FLAGS: dict[str, str] = setting_flags(AgentSettings)
