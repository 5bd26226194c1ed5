"""The ``idealagent`` command: ``ask``, ``chat`` and ``presets`` (cli/ask.py); ``eval``,
``report``, ``calibrate`` and ``bench`` (cli/evaluation.py). Shared helpers live in cli/common.py and the
shared options in cli/options.py; this module only assembles the app, so nothing imports it back.
"""

from __future__ import annotations

from typing import Annotated

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
    """The console-script entry point."""
    app()


__all__ = ["app", "main"]
