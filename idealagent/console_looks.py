"""Rich rendering of a trace's closer looks (``Trace.search``): one line per look as it happens,
a summary for the result, and a panel of every look for the full trace. console.py uses them.
"""

from __future__ import annotations

from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from idealagent.looking.boxes import Box, describe_box
from idealagent.trace import Look, Search

ASKED = {"exists": "exists?", "detect": "find:", "box": "where?", "describe": "describe:", "answer": "answer:"}


def look_line(number: int, look: Look) -> Text:
    """One look in one line: ``look 3 · lower right, about a tenth of the width · exists? yes (p 0.95)``."""
    line = Text.assemble((f"look {number}", "bold cyan"), (f" · {look.where or look.box} · ", "dim"),
                         ASKED.get(look.kind, look.kind), " ")
    if look.error:
        return line.append(f"failed: {_short(look.error)}", style="red")
    line.append(_short(look.reply) or "—", style="bold" if look.kind == "answer" else "")
    p = look.p_yes if look.kind in ("exists", "detect") else look.probability
    return line.append(f" (p {p:.2f})", style="dim") if p is not None else line


def new_look_lines(search: Search, looks: list[Look]) -> list[Text]:
    """The lines of ``looks``, the newest looks of ``search``, numbered as in the whole search."""
    first = len(search.looks) - len(looks) + 1
    return [look_line(number, look) for number, look in enumerate(looks, start=first)]


def looks_summary(search: Search) -> str:
    """``9 looks (quadtree), best view at lower right, about a tenth of the width``."""
    count = len(search.looks)
    head = f"{count} look{'' if count == 1 else 's'} ({search.mode})"
    if search.best is None:
        return f"{head}, no view stood out"
    where = next((look.where for look in search.looks if look.box == search.best and look.kind != "box"),
                 None) or describe_box(Box(*search.best), (search.size[0], search.size[1]))
    return f"{head}, best view at {where}"


def looks_panel(search: Search) -> Panel:
    """Every look of a search, numbered in order, under its summary."""
    rows = Table.grid()
    rows.add_column()
    for number, look in enumerate(search.looks, start=1):
        rows.add_row(look_line(number, look))
    title = f"Looked closer for the {search.target}: {looks_summary(search)}"
    return Panel(rows, title=title, title_align="left", border_style="cyan")


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
