"""The options several commands share, and how the help shows them.

The loop-setting options (``--max-rounds``, ``--threshold``, ...) are made from
``AgentSettings``: its ``FIELD_FLAGS`` names the flag, the field's description is the help.
Typer reads options from function signatures, so the Annotated types are built here once at
import time and each command lists them; ``loop_overrides`` turns what was given back into
settings. None always means "the preset's value".
"""

from __future__ import annotations

from typing import Annotated, Any, get_args, get_origin

import typer
from typer.core import TyperCommand, TyperGroup

from idealagent.presets import preset_models, preset_settings
from idealagent.settings import FIELD_FLAGS, AgentSettings

FROM_PRESET = "from the preset"  # shown as "[default: from the preset]"


# -- help that reads like a well-kept CLI ------------------------------------------------------
# Typer ≥ 0.27 shows Python types as metavars (`<str>`, `{image}`, `<list[Path]>`) and 0.29
# adds `<bool>` to every flag, --help included. Every option here names its metavar; these two
# classes keep flags bare and write arguments the usual way (IMAGE, RESULTS...) on every version.


def _no_type(ctx: Any) -> None:
    return None  # an argument's metavar (IMAGE) already says what it is


def _bare_help_option(option: Any) -> Any:
    if option is not None:
        option.metavar = ""
    return option


def _usage(command: Any, ctx: Any) -> list[str]:
    pieces = [command.options_metavar] if command.options_metavar else []
    for param in command.get_params(ctx):
        if param.param_type_name != "argument":
            continue
        name = (param.metavar or param.name).upper() + ("..." if param.nargs != 1 else "")
        pieces.append(name if param.required else f"[{name}]")
    return pieces


class Command(TyperCommand):
    """A command whose help shows ``IMAGE QUESTION`` and bare flags."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.param_type_name == "argument":  # typer ≥ 0.27 adds a `<str>` type column
                param.display_type_rich = _no_type  # type: ignore[method-assign]

    def get_help_option(self, ctx: Any) -> Any:
        return _bare_help_option(super().get_help_option(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return _usage(self, ctx)


class Group(TyperGroup):
    """The ``idealagent`` group, with the same help conventions as its commands."""

    def get_help_option(self, ctx: Any) -> Any:
        return _bare_help_option(super().get_help_option(ctx))


def flag(*names: str, help: str) -> Any:
    """A boolean flag (no metavar, no default shown)."""
    return typer.Option(*names, help=help, metavar="", show_default=False)


# -- options shared by several commands --------------------------------------------------------

PresetOption = Annotated[
    str, typer.Option("--preset", "-p", metavar="NAME", help="Models and settings to use; see `presets`.")
]
VlmOption = Annotated[
    str | None,
    typer.Option("--vlm", metavar="MODEL", show_default=False,
                 help="Replace the preset's vision-language model: a hub id or a local folder."),
]
LlmOption = Annotated[
    str | None,
    typer.Option("--llm", metavar="MODEL", show_default=False,
                 help="Replace the preset's questioner/reasoner LLM: a hub id or a local folder."),
]
Verbose = Annotated[bool, flag("--verbose", "-v", help="Log progress (INFO) to stderr.")]
Debug = Annotated[bool, flag("--debug", help="Log everything and show tracebacks.")]


# -- loop settings, from AgentSettings ---------------------------------------------------------


def setting_option(name: str, *names: str) -> Any:
    """A ``typer.Option`` for the AgentSettings field ``name``: its flag (or ``names``), its
    description as the help, its values as the metavar, and the preset as its default."""
    field = AgentSettings.model_fields[name]
    annotation = field.annotation
    if annotation is bool:  # --x/--no-x
        metavar = ""
    elif get_origin(annotation) is not None and get_args(annotation):  # a Literal: its values
        metavar = "|".join(map(str, get_args(annotation)))
    else:
        metavar = {int: "N", float: "X"}.get(annotation, "FILE")  # type: ignore[arg-type]
    return typer.Option(*(names or (FIELD_FLAGS[name],)), metavar=metavar, help=field.description,
                        show_default=FROM_PRESET)


def _setting_type(name: str) -> Any:
    """``Annotated[T | None, option]`` for a field with a flag; T is what typer can parse."""
    annotation = AgentSettings.model_fields[name].annotation
    # A Literal, or a calibration's file or name, is checked by the settings.
    python_type = annotation if annotation in (int, float, bool) else str
    return Annotated[python_type | None, setting_option(name)]  # type: ignore[valid-type]


# Parameter name (the flag without dashes) → settings field, e.g. threshold → confidence_threshold.
# (--direct-answer/--no-direct-answer → direct_answer)
LOOP_PARAMS: dict[str, str] = {flag.split("/")[0].lstrip("-").replace("-", "_"): name
                               for name, flag in FIELD_FLAGS.items()}

MaxRounds = _setting_type("max_rounds")
Threshold = _setting_type("confidence_threshold")
MaxSubQuestions = _setting_type("max_sub_questions")
Structured = _setting_type("structured")
DirectAnswer = _setting_type("direct_answer")
CalibrationFile = _setting_type("calibration")
Votes = _setting_type("votes")
Cache = _setting_type("cache")


def loop_overrides(preset: str, *, vlm: str | None = None, llm: str | None = None,
                   **loop: Any) -> dict[str, Any]:
    """What the user overrode, as ``load_preset`` keyword arguments: the loop options given
    (by parameter name, e.g. ``threshold``) and the models. Checks them and the preset's name
    first, so a wrong value is an InputError before anything loads."""
    unknown = sorted(set(loop) - set(LOOP_PARAMS))
    if unknown:  # our bug: a command passed something that is not a loop option
        raise TypeError(f"not loop options: {', '.join(unknown)}")
    given = {LOOP_PARAMS[param]: value for param, value in loop.items() if value is not None}
    preset_settings(preset, **given)  # the settings' own checks
    preset_models(preset, vlm, llm)  # an override the preset can't take is an InputError
    return {**given, **{role: value for role, value in {"vlm": vlm, "llm": llm}.items() if value}}
