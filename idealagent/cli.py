"""The ``idealagent`` command: ``ask`` one question, ``chat`` about an image, list ``presets``;
``eval``, ``report`` and ``bench`` come from evaluation/cli.py.

Arguments are checked before any model loads, and the image is read before the models too, so
a typo fails in milliseconds. Errors are one ``error: ...`` line on stderr; exit code 2 means
the arguments were wrong, 1 that the image, the models or the run failed (see errors.py).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.padding import Padding

from idealagent.cli_options import (
    Debug,
    LlmOption,
    MaxRounds,
    MaxSubQuestions,
    PresetOption,
    Structured,
    Threshold,
    Verbose,
    VlmOption,
)
from idealagent.console import LiveRun, print_trace, result_panel, stop_reason_text
from idealagent.errors import IdealAgentError, ModelLoadError
from idealagent.images import load_image
from idealagent.presets import PRESETS, get_preset, load_preset, preset_models, preset_names, preset_settings
from idealagent.trace import TASK_KINDS, Sample, Trace

if TYPE_CHECKING:
    from idealagent.agent import IdealAgent

app = typer.Typer(
    help="Iterative visual question answering in the style of IdealGPT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # a bug should show a plain traceback, not a rich panel
)

ImageArg = Annotated[str, typer.Argument(help="An image file or an http(s) URL.", show_default=False)]

CHAT_HELP = """\
Type a question about the image, or a command:
  /image PATH       switch to another image (a path or an http(s) URL)
  /choices a | b    choices for the next question only (/choices alone clears them)
  /trace [json]     the last question's full trace, readable or as JSON
  /help             this help
  /quit             end the session (so does Ctrl-D)"""


@app.command()
def ask(
    image: ImageArg,
    question: Annotated[str, typer.Argument(help="The question about the image.", show_default=False)],
    choice: Annotated[
        list[str] | None, typer.Option("--choice", "-c", help="A possible answer; repeat for each choice.")
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help=f"One of: {', '.join(TASK_KINDS)} (default: inferred).")
    ] = None,
    preset: PresetOption = "tiny",
    max_rounds: MaxRounds = None,
    threshold: Threshold = None,
    max_sub_questions: MaxSubQuestions = None,
    structured: Structured = None,
    vlm: VlmOption = None,
    llm: LlmOption = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print only the trace as JSON on stdout.")
    ] = False,
    verbose: Verbose = False,
    debug: Debug = False,
) -> None:
    """Answer one question about an image, showing each round as it happens."""
    with _cli_logging(verbose, debug), _exit_on_error(debug):
        choices = choice or None
        _check_question(question, choices, kind)
        overrides = _check_loop(preset, max_rounds, threshold, max_sub_questions, vlm=vlm, llm=llm,
                                structured=structured)
        picture = load_image(image)
        agent = _load_agent(preset, overrides)
        # With --json, stdout holds the trace alone: the rounds go to stderr, and only to a terminal.
        console = Console(stderr=json_output)
        if json_output and not console.is_terminal:
            trace = agent.run(picture, question, choices=choices, kind=kind)  # type: ignore[arg-type]
        else:
            live = LiveRun(console, agent.confidence_threshold)
            trace = live.run(agent, picture, question, choices=choices, kind=kind)
        trace = _with_image_ref(trace, image)
        if json_output:
            typer.echo(trace.to_json(indent=2))
        else:
            console.print(result_panel(trace, agent.confidence_threshold))
        if trace.answer is None:
            raise IdealAgentError(f"no answer: {stop_reason_text(trace)}")


@app.command()
def chat(
    image: ImageArg,
    preset: PresetOption = "tiny",
    max_rounds: MaxRounds = None,
    threshold: Threshold = None,
    max_sub_questions: MaxSubQuestions = None,
    structured: Structured = None,
    vlm: VlmOption = None,
    llm: LlmOption = None,
    verbose: Verbose = False,
    debug: Debug = False,
) -> None:
    """Ask questions about an image one after another (reads stdin; /help lists commands)."""
    with _cli_logging(verbose, debug), _exit_on_error(debug):
        overrides = _check_loop(preset, max_rounds, threshold, max_sub_questions, vlm=vlm, llm=llm,
                                structured=structured)
        picture = load_image(image)
        agent = _load_agent(preset, overrides)
        ChatSession(agent, Console(), image, picture, debug=debug).run()


@app.command("presets")
def list_presets() -> None:
    """List the presets, with what each one loads and its loop settings."""
    console = Console()
    for name in preset_names():
        preset = PRESETS[name]
        settings = ", ".join(f"{key}={value}" for key, value in preset.settings.items())
        console.print(f"[bold]{name}[/]  [dim]{settings}[/]", highlight=False)
        for role, model in preset.models.items():
            console.print(f"    {role}: {model}", highlight=False)
        console.print(Padding(preset.description, (0, 0, 1, 4)), highlight=False)


def main() -> None:
    """The console-script entry point."""
    app()


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
            _error(f"unknown command {name}; type /help")
        return True

    def _switch_image(self, ref: str) -> None:
        if not ref:
            _error("usage: /image PATH")
            return
        try:
            self.picture = load_image(ref)
        except IdealAgentError as exc:
            _error(str(exc))
            return
        self.image = ref
        self.console.print(f"[bold]image:[/] {ref}", highlight=False)

    def _show_trace(self, *, as_json: bool) -> None:
        if self.last is None:
            _error("no trace yet: ask a question first")
        elif as_json:
            self.console.print_json(self.last.to_json())
        else:
            print_trace(self.console, self.last, self.agent.confidence_threshold)

    def _ask(self, question: str) -> None:
        choices, self.choices = self.choices, None
        threshold = self.agent.confidence_threshold
        try:
            _check_question(question, choices, None)
            trace = LiveRun(self.console, threshold).run(self.agent, self.picture, question, choices=choices)
        except IdealAgentError as exc:
            if self.debug:
                traceback.print_exc()
            _error(str(exc))
            return
        except KeyboardInterrupt:
            _error("interrupted")
            return
        self.last = _with_image_ref(trace, self.image)
        self.console.print(result_panel(trace, threshold))


# -- checks before anything loads -------------------------------------------------------------


def _check_question(question: str, choices: list[str] | None, kind: str | None) -> None:
    """Raise InputError for an empty question, an unknown kind or unusable choices."""
    Sample(question=question, choices=choices, kind=kind)  # the Sample's own checks


def _check_loop(preset: str, max_rounds: int | None, threshold: float | None,
                max_sub_questions: int | None, *, vlm: str | None = None, llm: str | None = None,
                **more: Any) -> dict[str, Any]:
    """What the user overrode (loop settings, models), after checking it and the preset name."""
    overrides = {"max_rounds": max_rounds, "confidence_threshold": threshold,
                 "max_sub_questions": max_sub_questions, **more}
    given = {key: value for key, value in overrides.items() if value is not None}
    preset_settings(preset, **given)  # the settings' own checks
    preset_models(preset, vlm, llm)  # an override the preset can't take is an InputError
    return {**given, **{role: value for role, value in {"vlm": vlm, "llm": llm}.items() if value}}


def _load_agent(preset: str, overrides: dict[str, Any]) -> IdealAgent:
    """Build the preset's agent, with a spinner on a terminal; missing packages are ModelLoadErrors."""
    status = Console(stderr=True)
    try:
        if status.is_terminal:
            with status.status(f"loading the {preset} preset's models…", spinner="dots"):
                agent = load_preset(preset, **overrides)
        else:
            agent = load_preset(preset, **overrides)
    except ImportError as exc:
        extra = get_preset(preset).extra
        raise ModelLoadError(
            f"the {preset!r} preset needs {exc.name or exc}, which is not installed "
            f"(pip install 'idealagent[{extra}]' installs what it needs)"
        ) from exc
    _quiet_transformers()
    return agent


def _with_image_ref(trace: Trace, ref: str) -> Trace:
    """The trace with the image as the user named it (the agent was given the decoded pixels)."""
    trace.sample = trace.sample.model_copy(update={"image": ref})
    return trace


# -- output plumbing --------------------------------------------------------------------------


def _error(message: str) -> None:
    """Print one ``error: ...`` line on stderr."""
    sys.stdout.flush()  # keep the line in order with what came before it when both go to one file
    typer.echo(f"error: {' '.join(message.split())}", err=True)


@contextmanager
def _exit_on_error(debug: bool) -> Iterator[None]:
    """Turn our errors into one stderr line and their exit code; bugs keep their traceback."""
    try:
        yield
    except IdealAgentError as exc:
        if debug:
            traceback.print_exc()
        _error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        _error("interrupted")
        raise typer.Exit(130) from None


class _CliLogHandler(logging.StreamHandler):
    """The stderr handler the CLI adds to the ``idealagent`` logger (and removes afterwards)."""


class _OneLineFormatter(logging.Formatter):
    """``warning: message (Error: detail)``: an exception in one line, not a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        message = f"{record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            message += f" ({type(exc).__name__}: {exc})"
        return " ".join(message.split())


@contextmanager
def _cli_logging(verbose: bool, debug: bool) -> Iterator[None]:
    """Log ``idealagent`` to stderr for the length of a command, and quiet the model libraries."""
    # We never download at run time; the presets' weights ship in packages or the user cache.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not debug:  # read when transformers / huggingface_hub are first imported
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF conversion uses bare tqdm
    logger = logging.getLogger("idealagent")
    handler = _CliLogHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(levelname)s %(name)s: %(message)s") if debug else _OneLineFormatter()
    )
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _quiet_transformers() -> None:
    """Silence transformers' warnings and progress bars, if a preset imported it."""
    if "transformers" not in sys.modules or os.environ.get("TRANSFORMERS_VERBOSITY") != "error":
        return
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


# The evaluation commands live in their own module, which imports this one's helpers.
from idealagent.evaluation.cli import bench_command, eval_command, report_command

app.command("eval")(eval_command)
app.command("report")(report_command)
app.command("bench")(bench_command)

if __name__ == "__main__":
    main()
