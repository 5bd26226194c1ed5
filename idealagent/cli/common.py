"""What every command shares: logging to stderr, errors as one line, loading a preset's agent,
drawing where a trace looked closer (``--show-looks``).

Errors are one ``error: ...`` line on stderr; exit code 2 means the arguments were wrong, 1
that the image, the models or the run failed (see errors.py).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from idealagent.console_looks import looks_summary
from idealagent.errors import IdealAgentError, ModelLoadError, one_line
from idealagent.looking.draw import no_look_reason, write_looks
from idealagent.notices import is_notice
from idealagent.presets import get_preset, load_preset

if TYPE_CHECKING:
    from pathlib import Path

    from idealagent.agent import IdealAgent
    from idealagent.trace import Trace


def error_line(message: str) -> None:
    """Print one ``error: ...`` line on stderr."""
    sys.stdout.flush()  # keep the line in order with what came before it when both go to one file
    typer.echo(f"error: {one_line(message, limit=sys.maxsize)}", err=True)


def show_looks(trace: Trace, path: Path, picture: Any, *, err: bool = False, option: str = "--show-looks",
               picture_size: tuple[int, int] | None = None, input_side: float | None = None) -> None:
    """Draw where ``trace`` looked closer on ``picture`` into ``path`` and say so in one line (on
    stderr if ``err``); a trace with no search writes nothing, and the line says why (from the
    trace, and the picture's size and the answerer's input side where given)."""
    if trace.search is None:
        reason = no_look_reason(trace, picture_size, input_side)
        typer.echo(f"no closer look was taken, so {option} wrote nothing: {reason}", err=err)
        return
    write_looks(picture, trace.search, path, option)
    typer.echo(f"wrote {path}: {looks_summary(trace.search)}", err=err)


@contextmanager
def exit_on_error(debug: bool) -> Iterator[None]:
    """Turn our errors into one stderr line and their exit code; bugs keep their traceback."""
    try:
        yield
    except IdealAgentError as exc:
        if debug:
            traceback.print_exc()
        error_line(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        error_line("interrupted")
        raise typer.Exit(130) from None


def load_agent(preset: str, overrides: dict[str, Any], *, announce: bool = False) -> IdealAgent:
    """Build the preset's agent, with a spinner on a terminal (elsewhere a line, if ``announce``);
    missing packages are ModelLoadErrors."""
    status = Console(stderr=True)
    message = f"loading the {preset} preset's models…"
    try:
        if status.is_terminal:
            with status.status(message, spinner="dots"), _kept_from_the_collector():
                agent = load_preset(preset, **overrides)
        else:
            if announce:  # a batch job's log should say what it is waiting for
                typer.echo(message, err=True)
            with _kept_from_the_collector():
                agent = load_preset(preset, **overrides)
    except ImportError as exc:
        extra = get_preset(preset).extra
        raise ModelLoadError(
            f"the {preset!r} preset needs {exc.name or exc}, which is not installed "
            f"(pip install 'idealagent[{extra}]' installs what it needs)"
        ) from exc
    _quiet_transformers()
    return agent


class _CliLogHandler(logging.StreamHandler):
    """The stderr handler the CLI adds to the ``idealagent`` logger (and removes afterwards).

    It writes to whatever ``sys.stderr`` is at the time: under load_agent's spinner Rich
    redirects it, so a notice prints above the spinner instead of through its line.
    """

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # StreamHandler.__init__ sets it; the property above always wins


class _OneLineFormatter(logging.Formatter):
    """``warning: message (Error: detail)``: an exception in one line, not a traceback; a
    notice is its message alone."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if not is_notice(record):
            message = f"{record.levelname.lower()}: {message}"
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            message += f" ({type(exc).__name__}: {exc})"
        return one_line(message, limit=sys.maxsize)


@contextmanager
def cli_logging(verbose: bool, debug: bool) -> Iterator[None]:
    """Log ``idealagent`` to stderr for the length of a command (notices always, INFO with
    ``verbose``), quiet the model libraries, and give what ``load_agent`` froze back to the
    garbage collector when the command ends."""
    # We never download at run time; the presets' weights ship in packages or the user cache.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not debug:  # read when transformers / huggingface_hub are first imported
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF conversion uses bare tqdm
    logger = logging.getLogger("idealagent")
    handler = _CliLogHandler()
    handler.setFormatter(
        logging.Formatter("%(levelname)s %(name)s: %(message)s") if debug else _OneLineFormatter()
    )
    shown = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    handler.addFilter(lambda record: record.levelno >= shown or is_notice(record))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(min(shown, logging.INFO))  # notices are INFO records
    frozen = gc.get_freeze_count()
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        if gc.get_freeze_count() and not frozen:  # load_agent froze the models: hand them back
            gc.unfreeze()


@contextmanager
def _kept_from_the_collector() -> Iterator[None]:
    """Load with the cyclic garbage collector off, then freeze what is alive (``gc.freeze``).

    Importing torch and transformers creates millions of objects that live as long as the
    command: unfrozen, the collector walks them all again and again while they load and
    whenever it runs later (about a second of a warm ``ask`` on a small machine). A process
    that disabled or froze the collector itself is left as it is; ``cli_logging`` unfreezes
    when the command ends.
    """
    if not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _quiet_transformers() -> None:
    """Silence transformers' warnings and progress bars, if a preset imported it."""
    if "transformers" not in sys.modules or os.environ.get("TRANSFORMERS_VERBOSITY") != "error":
        return
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
