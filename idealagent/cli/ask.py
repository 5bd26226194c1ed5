"""``idealagent ask`` one question, ``chat`` about an image, list the ``presets``.

Arguments are checked before any model loads, and the image is read before the models too, so
a typo fails in milliseconds.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.padding import Padding
from rich.text import Text

from idealagent.calibration import Calibration
from idealagent.cli.common import cli_logging, error_line, exit_on_error, load_agent, show_looks
from idealagent.cli.options import (
    NOTHING_GIVEN,
    Debug,
    LlmOption,
    LoopOptions,
    PresetOption,
    Verbose,
    VlmOption,
    flag,
    loop_overrides,
    with_loop_options,
)
from idealagent.console import LiveRun, print_trace, result_panel, stop_reason_text
from idealagent.errors import IdealAgentError, InputError
from idealagent.images import load_image, upright_size
from idealagent.looking.closer import input_side, view_size_of
from idealagent.looking.draw import check_looks_path
from idealagent.presets import PRESETS, preset_names, preset_settings
from idealagent.settings import AgentSettings
from idealagent.trace import ENTAILMENT_LABELS, TASK_KINDS, YES_NO, Sample, Trace

if TYPE_CHECKING:
    from idealagent.agent import IdealAgent

ImageArg = Annotated[str, typer.Argument(metavar="IMAGE", help="An image file or an http(s) URL.",
                                         show_default=False)]

CHAT_HELP = """\
Type a question about the image, or a command:
  /image PATH       switch to another image (a path or an http(s) URL)
  /choices a | b    choices for the next question only (/choices alone clears them)
  /trace [json]     the last question's full trace, readable or as JSON
  /help             this help
  /quit             end the session (so does Ctrl-D)"""

FIXED_LABELS = {"yes_no": YES_NO, "entailment": ENTAILMENT_LABELS}


@with_loop_options
def ask(
    image: ImageArg,
    question: Annotated[str, typer.Argument(metavar="QUESTION", help="The question about the image.",
                                            show_default=False)],
    choice: Annotated[list[str] | None, typer.Option(
        "--choice", "-c", metavar="TEXT", show_default=False,
        help="A possible answer; repeat for each choice.")] = None,
    kind: Annotated[str | None, typer.Option(
        metavar="KIND", show_default="inferred", help=f"One of: {', '.join(TASK_KINDS)}.")] = None,
    preset: PresetOption = "tiny",
    loop: LoopOptions = NOTHING_GIVEN,
    vlm: VlmOption = None,
    llm: LlmOption = None,
    json_output: Annotated[bool, flag("--json", help="Print only the trace as JSON on stdout.")] = False,
    looks_file: Annotated[Path | None, typer.Option(
        "--show-looks", metavar="FILE.png", show_default=False,
        help="Draw where the agent looked closer on the picture (numbered in order, the best view in "
             "cyan) and save it to FILE.png.")] = None,
    verbose: Verbose = False,
    debug: Debug = False,
) -> None:
    """Answer one question about an image, showing each round as it happens."""
    with cli_logging(verbose, debug), exit_on_error(debug):
        choices = choice or None
        check_question(question, choices, kind)
        overrides = loop_overrides(preset, loop, vlm=vlm, llm=llm)
        if looks_file is not None:
            check_looks_path(looks_file)
        picture = load_image(image)
        agent = load_agent(preset, overrides)
        # With --json, stdout holds the trace alone: the rounds go to stderr, and only to a terminal.
        console = Console(stderr=json_output)
        if json_output and not console.is_terminal:
            trace = agent.run(picture, question, choices=choices, kind=kind)  # type: ignore[arg-type]
        else:
            live = LiveRun(console, agent.confidence_threshold)
            trace = live.run(agent, picture, question, choices=choices, kind=kind)
        trace = with_image_ref(trace, image)
        if json_output:
            typer.echo(trace.to_json(indent=2))
        else:
            console.print(result_panel(trace, agent.confidence_threshold))
        if looks_file is not None:
            show_looks(trace, looks_file, picture, err=json_output,
                       picture_size=upright_size(image) or picture.size,
                       input_side=input_side(view_size_of(agent.answerer)))
        if verbose and getattr(agent, "response_cache", None) is not None:
            typer.echo(agent.response_cache.counts.line(), err=True)
        if trace.answer is None:
            raise IdealAgentError(f"no answer: {stop_reason_text(trace)}")


@with_loop_options
def chat(
    image: ImageArg,
    preset: PresetOption = "tiny",
    loop: LoopOptions = NOTHING_GIVEN,
    vlm: VlmOption = None,
    llm: LlmOption = None,
    verbose: Verbose = False,
    debug: Debug = False,
) -> None:
    """Ask questions about an image one after another (reads stdin; /help lists commands)."""
    with cli_logging(verbose, debug), exit_on_error(debug):
        overrides = loop_overrides(preset, loop, vlm=vlm, llm=llm)
        picture = load_image(image)
        agent = load_agent(preset, overrides)
        ChatSession(agent, Console(), image, picture, debug=debug).run()


def list_presets() -> None:
    """List the presets, with what each one loads and its loop settings."""
    console = Console()
    # Every preset shows the settings any preset sets, so they compare line by line (tiny's
    # batch size too, which it leaves at the default).
    shown = {key for name in preset_names() for key in PRESETS[name].settings}
    for name in preset_names():
        preset = PRESETS[name]
        console.print(Text.assemble((name, "bold"), "  ", (f"pip install 'idealagent[{preset.extra}]'", "dim")))
        # Indented text that wraps at the terminal's width: every line fits 80 columns.
        lines = [preset.description, *(f"{role}: {model}" for role, model in preset.models.items()),
                 _settings_line(name, shown)]
        for line in lines:
            console.print(Padding(Text(line), (0, 0, 0, 2)))
        console.print()


def _settings_line(preset: str, shown: set[str]) -> str:
    """``key=value, ...`` of the preset's loop settings in ``shown``, in the settings' order."""
    settings = preset_settings(preset)
    values = {key: getattr(settings, key) for key in AgentSettings.model_fields if key in shown}
    return ", ".join(f"{key}={_shown(value)}" for key, value in values.items()) or "default settings"


def _shown(value: Any) -> Any:
    """A setting as ``--FLAG`` takes it: a shipped calibration by its name (tiny), else its method."""
    if isinstance(value, Calibration):
        return value.fitted_on.get("shipped") or value.name
    return value


class ChatSession:
    """One image, many questions: reads lines from stdin and answers each, keeping the models loaded."""

    def __init__(self, agent: IdealAgent, console: Console, image: str, picture: Any, *,
                 debug: bool = False) -> None:
        self.agent = agent
        self.console = console
        self.image, self.picture = image, picture  # the reference, and the decoded image
        self.choices: list[str] | None = None  # for the next question only
        self.last: Trace | None = None
        self.debug = debug
        self.interactive = sys.stdin.isatty()

    def run(self) -> None:
        """Read and handle lines until /quit or end of input."""
        self.console.print(f"[bold]image:[/] {self.image}  [dim](type a question, or /help)[/]")
        while (line := self._read()) is not None:
            line = line.strip()
            if not line:
                continue
            if not self.interactive:  # echo piped questions so the transcript reads in order
                self.console.print(f"[bold cyan]›[/] {line}", highlight=False)
            if line.startswith("/"):
                if not self._command(line):
                    return
            else:
                self._ask(line)

    def _read(self) -> str | None:
        try:
            if self.interactive:
                return self.console.input("[bold cyan]›[/] ")
            line = sys.stdin.readline()
            return line or None
        except (EOFError, KeyboardInterrupt):
            if self.interactive:  # end the prompt's line, so the shell's prompt starts on its own
                self.console.print()
            return None

    def _command(self, line: str) -> bool:
        """Handle a /command; False means end the session."""
        name, _, rest = line.partition(" ")
        rest = rest.strip()
        if name in ("/quit", "/exit", "/q"):
            return False
        if name == "/help":
            self.console.print(CHAT_HELP, highlight=False, markup=False)
        elif name == "/image":
            self._switch_image(rest)
        elif name == "/choices":
            self.choices = [c.strip() for c in rest.split("|")] if rest else None
            shown = " | ".join(self.choices) if self.choices else "none"
            self.console.print(f"choices for the next question: {shown}", highlight=False)
        elif name == "/trace":
            self._show_trace(as_json=rest == "json")
        else:
            error_line(f"unknown command {name}; type /help")
        return True

    def _switch_image(self, ref: str) -> None:
        if not ref:
            error_line("usage: /image PATH")
            return
        try:
            self.picture = load_image(ref)
        except IdealAgentError as exc:
            error_line(str(exc))
            return
        self.image = ref
        self.console.print(f"[bold]image:[/] {ref}", highlight=False)

    def _show_trace(self, *, as_json: bool) -> None:
        if self.last is None:
            error_line("no trace yet: ask a question first")
        elif as_json:
            self.console.print_json(self.last.to_json())
        else:
            print_trace(self.console, self.last, self.agent.confidence_threshold)

    def _ask(self, question: str) -> None:
        choices, self.choices = self.choices, None
        threshold = self.agent.confidence_threshold
        try:
            check_question(question, choices, None)
            trace = LiveRun(self.console, threshold).run(self.agent, self.picture, question, choices=choices)
        except IdealAgentError as exc:
            if self.debug:
                traceback.print_exc()
            error_line(str(exc))
            return
        except KeyboardInterrupt:
            error_line("interrupted")
            return
        self.last = with_image_ref(trace, self.image)
        self.console.print(result_panel(trace, threshold))


def check_question(question: str, choices: list[str] | None, kind: str | None) -> None:
    """Raise InputError for an empty question, an unknown kind or unusable choices."""
    if kind in FIXED_LABELS and choices:  # the Sample would silently keep the user's choices
        raise InputError(f"--kind {kind} has fixed answers ({', '.join(FIXED_LABELS[kind])}) "
                         "and takes no --choice")
    Sample(question=question, choices=choices, kind=kind)  # the Sample's own checks


def with_image_ref(trace: Trace, ref: str) -> Trace:
    """The trace with the image as the user named it (the agent was given the decoded pixels)."""
    trace.sample = trace.sample.model_copy(update={"image": ref})
    return trace
