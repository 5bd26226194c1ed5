"""Named presets: name → (chat model, answerer, settings). The only place model ids live."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from idealagent.errors import InputError

if TYPE_CHECKING:
    from idealagent.agent import IdealAgent


@dataclass(frozen=True)
class Preset:
    """A named configuration of models and loop settings."""

    name: str
    description: str
    # Loads the models (may be slow) and returns the model arguments of IdealAgent:
    # llm and answerer, optionally questioner_llm and reasoner_llm.
    build: Callable[[], dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)  # IdealAgent keyword arguments


def _build_tiny() -> dict[str, Any]:
    from idealagent.answerers.perception import PerceptionAnswerer
    from idealagent.llms.smollm2 import load_smollm2

    # One copy of the weights; each role gets its own token budget (model_copy is shallow).
    # The penalty on self-repetition stops the 135M model from looping on a phrase.
    llm = load_smollm2().model_copy(update={"repetition_penalty": 1.3})
    return {
        "llm": llm,
        "answerer": PerceptionAnswerer(llm.model_copy(update={"max_new_tokens": 16})),
        "questioner_llm": llm.model_copy(update={"max_new_tokens": 80}),
        "reasoner_llm": llm.model_copy(update={"max_new_tokens": 120}),
    }


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in [
        Preset(
            name="tiny",
            description=(
                "Embedded CPU default: SmolLM2-135M-Instruct (questioner, reasoner and answerer) over "
                "an EfficientNet-Lite0 ImageNet classifier and colour analysis. Runs offline anywhere; "
                "far too small to be accurate."
            ),
            build=_build_tiny,
            # Two tries per reply: constrained decoding makes replies parseable, and a greedy
            # 135M model that repeated itself once mostly repeats itself again.
            settings={"max_rounds": 2, "max_sub_questions": 2, "confidence_threshold": 0.7, "attempts": 2},
        ),
    ]
}


def preset_names() -> list[str]:
    """The names of every preset."""
    return sorted(PRESETS)


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name is an InputError that lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}; choose one of: {', '.join(preset_names())}") from None


def load_preset(name: str = "tiny", **overrides: Any) -> IdealAgent:
    """Build the agent for a preset; keyword arguments override its loop settings."""
    from idealagent.agent import IdealAgent, check_settings

    preset = get_preset(name)
    settings = {**preset.settings, **{k: v for k, v in overrides.items() if v is not None}}
    check_settings(**settings)  # fail fast, before loading any weights
    return IdealAgent(**preset.build(), **settings)
