"""Rich rendering of Rounds and Traces, and ``LiveRun``, which shows a run as it happens.

All console output of the package lives here, in console_looks.py (the closer looks' lines) and
in report_console.py (reports and bench tables); the library itself only logs. Every function
takes the ``Console`` to draw on, so the CLI decides where output goes (stdout, or stderr when
stdout is reserved for ``--json``).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from idealagent.console_looks import looks_panel, looks_summary, new_look_lines
from idealagent.errors import one_line
from idealagent.events import Event, Looked
from idealagent.trace import DirectAnswer, Failure, Round, Trace

if TYPE_CHECKING:
    from idealagent.agent import IdealAgent

BAR_WIDTH = 20

STOP_REASONS = {
    "confident": "confident enough",
    "max_rounds": "reached the last round, so the reasoner had to commit",
    "no_new_questions": "the questioner had nothing new to ask",
    "questioner_failed": "the questioner's replies stayed unusable after every retry",
    "reasoner_failed": "the reasoner's replies stayed unusable after every retry",
    "answerer_failed": "the answerer failed on every sub-question of the round",
    "rounds_do_not_pay": "in the calibration's fitted run, the next round never fixed a wrong answer",
    "error": "the run failed",
}


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 sample``, ``2 samples``: a count with its noun agreeing (``many`` for irregular ones)."""
    return f"{count} {word if count == 1 else many or word + 's'}"


def confidence_bar(confidence: float | None, threshold: float, width: int = BAR_WIDTH) -> Text:
    """A bar of blocks with the value: red below the threshold, green at or above it."""
    if confidence is None:
        return Text("no confidence", style="dim")
    filled = round(max(0.0, min(1.0, confidence)) * width)
    style = "green" if confidence >= threshold else "red"
    return Text.assemble(
        ("█" * filled, style),
        ("░" * (width - filled), "dim"),
        (f" {confidence:.2f}", f"bold {style}"),
        (f"  (threshold {threshold:.2f})", "dim"),
    )


def round_panel(round_: Round, threshold: float) -> Panel:
    """One round as a panel: sub-questions with answers, then the verdict and its confidence."""
    title = f"Round {round_.index}" + (" · final round" if round_.forced else "")
    rows = Table.grid(padding=(0, 1))
    rows.add_column(style="bold cyan", no_wrap=True)
    rows.add_column()
    for qa in round_.sub_qas:
        rows.add_row("Q", Text(qa.question) + (Text(f"  (zoomed in: {qa.where})", style="dim") if qa.where else ""))
        if qa.error:
            rows.add_row("A", Text(f"failed: {qa.error}", style="red"))
        else:
            rows.add_row("A", Text(qa.answer) if qa.answer else Text("…", style="dim"))
    verdict = round_.verdict
    if verdict is not None:
        rows.add_row("", "")
        rows.add_row("analysis", Text(verdict.analysis or "—", style="italic"))
        answer = Text(verdict.answer, style="bold") if verdict.answer else Text("undecided", style="dim")
        rows.add_row("answer", answer)
        rows.add_row("confidence", confidence_bar(verdict.acted_on, threshold))
        if verdict.answer and verdict.signals:
            rows.add_row("signals", signals_text(verdict.signals))
    if round_.failures:
        rows.add_row("retries", failure_summary(round_.failures))
    return Panel(rows, title=title, title_align="left", border_style="green" if verdict else "blue")


def direct_panel(direct: DirectAnswer, threshold: float) -> Panel:
    """The answerer's direct answer to the main question, with its calibrated confidence."""
    rows = Table.grid(padding=(0, 1))
    rows.add_column(style="bold cyan", no_wrap=True)
    rows.add_column()
    rows.add_row("Q", Text(direct.question))
    if direct.error is not None:
        rows.add_row("A", Text(f"failed: {direct.error}", style="red"))
    else:
        rows.add_row("A", Text(direct.answer, style="bold") if direct.answer else Text("no answer", style="dim"))
        rows.add_row("confidence", confidence_bar(direct.calibrated, threshold))
        if direct.signals:
            rows.add_row("signals", signals_text(direct.signals))
    return Panel(rows, title="Direct answer (the vision model alone)", title_align="left", border_style="green")


def signals_text(signals: dict[str, float]) -> Text:
    """A candidate's raw signals in one dim line: ``stated 0.90 · answer_prob 0.41 · ...``."""
    if not signals:
        return Text("none", style="dim")
    return Text(" · ".join(f"{name} {value:.2f}" for name, value in signals.items()), style="dim")


def failure_summary(failures: Sequence[Failure]) -> Text:
    """Unusable replies in one line: how many per role, and the last reason."""
    counts = Counter(failure.role for failure in failures)
    per_role = ", ".join(f"{role} ×{count}" for role, count in counts.items())
    last = one_line(failures[-1].error, limit=sys.maxsize)
    return Text.assemble((per_role, "yellow"), (f" — last: {_shorten(last, 100)}", "dim"))


def result_panel(trace: Trace, threshold: float) -> Panel:
    """The final answer with confidence, why the loop stopped, and what the run cost."""
    rows = Table.grid(padding=(0, 1))
    rows.add_column(style="bold", no_wrap=True)
    rows.add_column()
    answer = Text(trace.answer, style="bold green") if trace.answer else Text("no answer", style="bold red")
    source = answer_source_text(trace)
    if source:
        answer.append(f"  ({source})", style="dim")
    rows.add_row("answer", answer)
    rows.add_row("confidence", confidence_bar(trace.confidence, threshold))
    rows.add_row("stopped", Text(stop_reason_text(trace)))
    if trace.search is not None:
        rows.add_row("looked closer", looks_summary(trace.search))
    rows.add_row("rounds", f"{trace.judged_rounds} ({plural(len(trace.sub_questions), 'sub-question')})")
    if trace.shown:
        rows.add_row("roles saw", shown_summary(trace))
    if trace.failures:
        rows.add_row("unusable", failure_summary(trace.failures))
    usage = trace.usage
    rows.add_row(
        "LLM",
        f"{plural(usage.llm_calls, 'call')}, {plural(usage.llm_input_tokens, 'token')} in, "
        f"{usage.llm_output_tokens} out",
    )
    answerer_tokens = (f", {plural(usage.answerer_input_tokens, 'token')} in, {usage.answerer_output_tokens} out"
                       if usage.answerer_input_tokens or usage.answerer_output_tokens else "")
    rows.add_row("answerer", f"{plural(usage.answerer_calls, 'answer')}{answerer_tokens}")
    phases = ", ".join(f"{phase} {seconds:.2f}s" for phase, seconds in trace.timings.items())
    rows.add_row("latency", f"{trace.latency_s:.2f}s" + (f" ({phases})" if phases else ""))
    return Panel(rows, title="Result", title_align="left", border_style="green" if trace.answer else "red")


def shown_summary(trace: Trace) -> str:
    """What each seeing role was shown: "questioner: the picture; reasoner: the picture and 2 views"."""
    parts = []
    for role, images in trace.shown.items():
        views = sum(1 for image in images if image.where)
        seen = ["the picture"] if len(images) > views else []
        if views:
            seen.append(plural(views, "view"))
        parts.append(f"{role}: {' and '.join(seen) or 'nothing'}")
    return "; ".join(parts)


def answer_source_text(trace: Trace) -> str:
    """Where the answer came from when that is news: the direct answer, or a round's verdict
    other than the last (the agent keeps the candidate with the highest calibrated confidence)."""
    if trace.answer is None:
        return ""
    if trace.answer_source == "direct":
        return "the vision model's direct answer"
    if trace.answer_source == "look":
        return "the vision model's answer on a closer look"
    if trace.answer_round is not None and trace.rounds and trace.answer_round != trace.rounds[-1].index:
        return f"from round {trace.answer_round}"
    return ""


def stop_reason_text(trace: Trace) -> str:
    """Why the loop stopped, in words."""
    if trace.stop_reason is None:
        return "still running"
    words = STOP_REASONS.get(trace.stop_reason, trace.stop_reason)
    return f"{words}: {trace.error}" if trace.error else words


def print_trace(console: Console, trace: Trace, threshold: float) -> None:
    """Everything in a trace, readably: the question, the caption, every round, the result."""
    sample = trace.sample
    header = Table.grid(padding=(0, 1))
    header.add_column(style="bold", no_wrap=True)
    header.add_column()
    header.add_row("image", str(sample.image))
    header.add_row("question", sample.question)
    header.add_row("kind", sample.kind)
    if sample.choices:
        header.add_row("choices", " | ".join(sample.choices))
    header.add_row("caption", trace.caption or "—")
    console.print(header)
    if trace.direct is not None:
        console.print(direct_panel(trace.direct, threshold))
    if trace.search is not None:
        console.print(looks_panel(trace.search))
    for round_ in trace.rounds:
        console.print(round_panel(round_, threshold))
    console.print(result_panel(trace, threshold))


class LiveRun:
    """Shows ``agent.stream(..., partial=True)`` as it happens and returns the Trace.

    On a terminal the current round redraws in place and finished rounds stay printed above
    it. Elsewhere (a pipe, a file, a test) each round is printed once, when it is finished.
    Each closer look is printed as one line as soon as the answerer has replied.
    """

    def __init__(self, console: Console, threshold: float) -> None:
        self.console = console
        self.threshold = threshold
        self._printed = 0  # the index of the last round printed for good (0: none yet)
        self._live: Live | None = None

    def run(self, agent: IdealAgent, image: Any, question: str, *, choices: Sequence[str] | None = None,
            kind: str | None = None) -> Trace:
        """Run one question through ``agent``, drawing each round; return the finished Trace."""
        self._printed, self._live = 0, None
        updates = agent.stream(image, question, choices=choices, kind=kind,  # type: ignore[arg-type]
                               partial=True, callbacks=[self._looked])
        if not (self.console.is_terminal and not self.console.is_dumb_terminal):
            return self._consume(updates, live=None)
        with Live(self._status("looking at the image"), console=self.console, transient=True,
                  refresh_per_second=8) as self._live:
            return self._consume(updates, self._live)

    def _looked(self, event: Event) -> None:
        if isinstance(event, Looked) and event.trace.search is not None:
            self.console.print(Group(*new_look_lines(event.trace.search, event.looks)))
            if self._live is not None:
                self._live.update(self._status("looking closer"))

    def _consume(self, updates: Iterable[DirectAnswer | Round | Trace], live: Live | None) -> Trace:
        for update in updates:
            if isinstance(update, Trace):
                return update
            if isinstance(update, DirectAnswer):
                self.console.print(direct_panel(update, self.threshold))
                if live is not None:
                    live.update(self._status("round 1: asking sub-questions"))
                continue
            self._finish(r for r in [update] if r.verdict is not None)
            if live is not None:
                live.update(self._current(update))
        raise RuntimeError("the agent's stream ended without a Trace")

    def _finish(self, rounds: Iterable[Round]) -> None:
        for round_ in rounds:
            if round_.index > self._printed:
                self.console.print(round_panel(round_, self.threshold))
                self._printed = round_.index

    def _current(self, round_: Round) -> RenderableType:
        if round_.index <= self._printed:  # judged: either done, or the next round is being asked
            verdict = round_.verdict
            calibrated = verdict.calibrated if verdict is not None else None
            if round_.forced or (calibrated is not None and calibrated >= self.threshold):
                return self._status("finishing")
            return self._status(f"round {round_.index + 1}: asking sub-questions")
        phase = "answering" if any(not qa.answer for qa in round_.sub_qas) else "judging"
        return Group(round_panel(round_, self.threshold), self._status(f"round {round_.index}: {phase}"))

    @staticmethod
    def _status(text: str) -> Spinner:
        return Spinner("dots", Text(text, style="dim"))


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
