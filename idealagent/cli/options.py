"""The options several commands share, and how the help shows them.

The loop-setting options (``--max-rounds``, ``--threshold``, ...) are made from
``AgentSettings``: a field's ``flag`` names the option, its description is the help. Typer
reads options from function signatures, so ``with_loop_options`` writes them into a command's
signature in place of its ``loop`` parameter, and ``loop_overrides`` checks what was given.
A setting given a flag is on every such command with no other edit. None always means "the
preset's value".
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Annotated, Any, get_args, get_origin

import typer
from typer.core import TyperCommand, TyperGroup

from idealagent.errors import InputError, SettingError
from idealagent.presets import preset_models, preset_settings
from idealagent.settings import FIELD_FLAGS, AgentSettings, setting_flags, setting_meta

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


# A command's ``loop`` parameter: ``with_loop_options`` puts the options in its place and passes
# the values given, by settings field (nothing given: the preset's settings).
LoopOptions = Mapping[str, Any]
NOTHING_GIVEN: LoopOptions = MappingProxyType({})


def setting_option(name: str, *names: str, settings: type[AgentSettings] = AgentSettings) -> Any:
    """A ``typer.Option`` for the settings field ``name``: its flag (or ``names``), its
    description as the help, its metavar (or its values), and the preset as its default."""
    field = settings.model_fields[name]
    annotation = field.annotation
    metavar = setting_meta(settings, "metavar")[name]
    if metavar is None and annotation is bool:  # --x/--no-x
        metavar = ""
    elif metavar is None and get_origin(annotation) is not None and get_args(annotation):  # a Literal
        metavar = "|".join(map(str, get_args(annotation)))
    elif metavar is None:
        metavar = {int: "N", float: "X"}.get(annotation, "VALUE")  # type: ignore[arg-type]
    return typer.Option(*(names or (setting_flags(settings)[name],)), metavar=metavar, help=field.description,
                        show_default=FROM_PRESET)


def _setting_parameter(name: str, settings: type[AgentSettings]) -> inspect.Parameter:
    """The command parameter for a field with a flag: ``name: Annotated[T | None, option] = None``,
    T being what typer can parse (a Literal, or a calibration's file or name, is checked by the settings)."""
    annotation = settings.model_fields[name].annotation
    python_type = annotation if annotation in (int, float, bool) else str
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                             annotation=Annotated[python_type | None, setting_option(name, settings=settings)])


def with_loop_options(command: Callable[..., Any] | None = None, settings: type[AgentSettings] = AgentSettings,
                      *, exclude: tuple[str, ...] = ()) -> Any:
    """``command`` with one option per settings field that has a flag (but those in ``exclude``),
    in place of its ``loop`` parameter (typer reads the signature); it receives them as ``loop``:
    {field: value given}. Without ``command``, a decorator: ``@with_loop_options(exclude=...)``."""
    if command is None:
        return functools.partial(with_loop_options, settings=settings, exclude=exclude)
    signature = inspect.signature(command, eval_str=True)
    params = list(signature.parameters.values())
    names = [param.name for param in params]
    fields = [name for name in setting_flags(settings) if name not in exclude]
    clash = sorted(set(fields) & set(names))
    if clash:  # our bug: the command has a parameter of its own by a setting's name
        raise TypeError(f"{command.__name__} already has a parameter named {', '.join(clash)}")
    at = names.index("loop")
    params[at:at + 1] = [_setting_parameter(name, settings) for name in fields]

    @functools.wraps(command)
    def with_loop(**kwargs: Any) -> Any:
        loop = {name: value for name in fields if (value := kwargs.pop(name, None)) is not None}
        return command(**kwargs, loop=loop)

    with_loop.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    with_loop.__annotations__ = {param.name: param.annotation for param in params}
    return with_loop


def loop_overrides(preset: str, loop: LoopOptions, *, vlm: str | None = None,
                   llm: str | None = None) -> dict[str, Any]:
    """What the user overrode, as ``load_preset`` keyword arguments: the loop options given
    (``loop``, by settings field) and the models. Checks them and the preset's name first, so a
    wrong value is an InputError, naming the flag, before anything loads."""
    try:
        preset_settings(preset, **loop)  # the settings' own checks
    except SettingError as exc:
        if exc.setting not in loop:  # the preset's own value: not something the user typed
            raise
        raise InputError(f"{FIELD_FLAGS[exc.setting].split('/')[0]}: {exc.problem}") from None
    preset_models(preset, vlm, llm)  # an override the preset can't take is an InputError
    return {**loop, **{role: value for role, value in {"vlm": vlm, "llm": llm}.items() if value}}
