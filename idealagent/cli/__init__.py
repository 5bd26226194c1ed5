"""The ``idealagent`` command: ``ask``, ``chat`` and ``presets`` (cli/ask.py); ``eval``,
``report``, ``calibrate`` and ``bench`` (cli/evaluation.py). Shared helpers live in cli/common.py and the
shared options in cli/options.py; this module only assembles the app, so nothing imports it back.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated, Any

import typer

import idealagent
from idealagent.cli.ask import ask, chat, list_presets
from idealagent.cli.evaluation import bench_command, calibrate_command, eval_command, report_command
from idealagent.cli.options import Command, Group

app = typer.Typer(
    cls=Group,
    help="Iterative visual question answering in the style of IdealGPT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # a bug should show a plain traceback, not a rich panel
)

for name, command in (("ask", ask), ("chat", chat), ("presets", list_presets), ("eval", eval_command),
                      ("report", report_command), ("calibrate", calibrate_command), ("bench", bench_command)):
    app.command(name, cls=Command)(command)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"idealagent {idealagent.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[bool, typer.Option(
        "--version", metavar="", show_default=False, is_eager=True, callback=_print_version,
        help="Print the version and exit.")] = False,
) -> None:
    """Iterative visual question answering in the style of IdealGPT."""


def main() -> None:
    """The console-script entry point.

    Once the command is over and its output flushed, the process ends with ``os._exit``
    rather than tearing the interpreter down: after torch, transformers and LangChain have
    loaded, the teardown frees their millions of objects one by one, about 1.5 s of CPU at the
    end of a warm ``ask`` on a two-core box (docs/benchmarks.md). Nothing is lost by it: the
    commands write and flush their results (rows, the response cache's atomic files, plots)
    before they return, and their worker threads are daemons. A bug's traceback still comes
    the usual way.
    """
    try:
        app()
        code: Any = 0
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):  # sys.exit("message"): Python would print it and exit 1
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more to deliver
            pass
    logging.shutdown()
    os._exit(code if isinstance(code, int) else 0)


__all__ = ["app", "main"]
