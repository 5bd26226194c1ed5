"""Named presets: name → (chat model, answerer, settings). The only place model ids live."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from idealagent.errors import InputError

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from idealagent.agent import IdealAgent
    from idealagent.answerers import Answerer


@dataclass(frozen=True)
class Preset:
    """A named configuration of models and loop settings."""

    name: str
    description: str
    build: Callable[[], tuple[BaseChatModel, Answerer]]  # loads the models; may be slow
    settings: dict[str, Any] = field(default_factory=dict)  # IdealAgent keyword arguments


def _build_tiny() -> tuple[BaseChatModel, Answerer]:
    from idealagent.answerers.perception import PerceptionAnswerer
    from idealagent.llms.smollm2 import load_smollm2

    llm = load_smollm2()
    return llm, PerceptionAnswerer(llm)


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
            settings={"max_rounds": 2, "max_sub_questions": 2, "confidence_threshold": 0.7},
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
    llm, answerer = preset.build()
    return IdealAgent(llm, answerer, **settings)
