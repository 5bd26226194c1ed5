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
from idealagent.errors import InputError

StructuredMode = Literal["auto", "on", "off"]


def _setting(default: Any, help: str, *, flag: str | None = None, fingerprint: bool = True,
             **checks: Any) -> Any:
    """A settings field: ``flag`` is its command-line option (None: not on the command line);
    ``fingerprint`` says whether results made under other values are comparable."""
    return Field(default, description=help, json_schema_extra={"flag": flag, "fingerprint": fingerprint},
                 **checks)


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
    calibration: Calibration = _setting(
        Calibration(), "How signals become the confidence the threshold applies to: a file from "
        "`idealagent calibrate`, default (a fixed combination) or stated (the reasoner's stated "
        "confidence alone).", flag="--calibration")
    votes: int = _setting(0, "Sample the reasoner this many more times (temperature vote_temperature); "
                          "the share agreeing with its answer is a signal.", flag="--votes", ge=0, le=16)
    vote_temperature: float = _setting(0.7, "Sampling temperature of the --votes replies.", gt=0.0, le=2.0)
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
        return resolve(value)  # a file's path or a built-in name becomes the Calibration

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
            raise InputError(f"{name}: {error['msg'].lower()}, got {error.get('input')!r}") from None

    def replace(self, **values: Any) -> AgentSettings:
        """A copy with some settings changed (None leaves one as it is), checked again."""
        return AgentSettings.of(**{**self.model_dump(), **values})

    def record(self) -> dict[str, Any]:
        """Every setting, as the trace records it."""
        return self.model_dump(mode="json")

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change answers: what must match for two runs to share a file."""
        return {name: value for name, value in self.record().items() if FIELD_FINGERPRINT[name]}


FIELD_FINGERPRINT: dict[str, bool] = {
    name: bool((field.json_schema_extra or {}).get("fingerprint", True))  # type: ignore[union-attr]
    for name, field in AgentSettings.model_fields.items()
}
FIELD_FLAGS: dict[str, str] = {
    name: flag for name, field in AgentSettings.model_fields.items()
    if (flag := (field.json_schema_extra or {}).get("flag"))  # type: ignore[union-attr]
}
