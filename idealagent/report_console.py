"""Rich rendering of evaluation reports (``idealagent report``) and of ``idealagent bench``.

The summary is the plain data of ``evaluation.report.summarize``; console.py renders single runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from idealagent.console import plural



def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def render_report(summary: dict[str, Any], console: Console) -> None:
    """An evaluation summary (``evaluation.report.summarize``): first any warning, then whether
    the loop helps (agent vs baseline per question type), whether its confidence can be trusted,
    what the loop changed, and the agent's costs."""
    if summary.get("warning"):
        console.print(Panel(Text(summary["warning"], style="bold red"), title="warning", title_align="left",
                            border_style="red"))  # fmt: skip
    groups = [("overall", summary["overall"]), *summary["by_type"].items()]
    title = f"{summary['benchmark']} · {summary['split']} · preset {summary['preset']}"
    console.print(_accuracy_table(title, groups, summary["baseline"]))
    console.print(run_identity(summary), style="dim", highlight=False, soft_wrap=True)
    official = summary.get("benchmark_summary")
    if official and official.get("average"):
        line = " · ".join(f"{name} {100 * value:.1f}%" for name, value in official["average"].items())
        if official.get("baseline_average"):
            line += f" (baseline all {100 * official['baseline_average'].get('all', 0.0):.1f}%)"
        console.print(f"{summary['benchmark']} official score, {official['metric']}: {line}", highlight=False)
    comparison = summary["overall"].get("vs_baseline")
    if comparison:
        console.print(f"Δ paired: agent - baseline on the {plural(comparison['n'], 'sample')} with a baseline score, "
                      f"its 95% bootstrap interval ({comparison['resamples']} resamples) and McNemar's exact p",
                      style="dim", highlight=False)  # fmt: skip
    console.print(_trust_table(groups))
    console.print("ECE, Brier, AURC (mean risk over coverage): lower is better · AUROC: 0.5 is chance, 1 ranks "
                  "every right answer above every wrong one", style="dim", highlight=False)  # fmt: skip
    loop = _loop_table(summary["overall"])
    if loop.row_count:
        console.print(loop)
    console.print(_stats_table(summary["overall"]))
    # The warnings themselves were logged by read_results; this line just says they happened.
    notes = [f"{len(summary['files'])} file(s)", plural(summary["overall"]["n"], "sample")]
    if summary["skipped_lines"]:
        notes.append(f"{summary['skipped_lines']} unreadable line(s) skipped")
    if summary["duplicate_ids"]:
        notes.append(f"{summary['duplicate_ids']} repeated id(s) ignored")
    console.print(" · ".join(notes), style="dim", highlight=False)


def _accuracy_table(title: str, groups: list[tuple[str, dict[str, Any]]], baseline: bool) -> Table:
    """Does the loop help: accuracy per question type, and against the baseline on the same
    samples (difference, its bootstrap 95% interval, McNemar's p); significantly worse in red."""
    paired = any(group.get("vs_baseline") for _, group in groups)
    table = Table(title=title, title_justify="left")
    table.add_column("type")
    table.add_column("n", justify="right")
    table.add_column("agent", justify="right")
    if baseline:
        table.add_column("baseline", justify="right")
    if paired:
        for name in ("Δ paired", "95% interval", "McNemar p"):
            table.add_column(name, justify="right", no_wrap=True)
    for i, (name, group) in enumerate(groups):
        cells = [name, str(group["n"]), _pct(group["accuracy"])]
        if baseline:
            cells.append(_pct(group.get("baseline_accuracy")))
        style = "bold" if i == 0 else None
        comparison = group.get("vs_baseline")
        if paired and comparison:
            low, high = comparison["interval"]
            cells += [f"{100 * comparison['difference']:+.1f}", f"{100 * low:+.1f} … {100 * high:+.1f}",
                      f"{comparison['mcnemar_p']:.3g}"]  # fmt: skip
            if comparison["significantly_worse"]:
                style = "bold red"
        elif paired:
            cells += ["—", "—", "—"]
        table.add_row(*cells, style=style, end_section=i == 0 and len(groups) > 1)
    return table


def _trust_table(groups: list[tuple[str, dict[str, Any]]]) -> Table:
    """Can the confidence be trusted: calibration (ECE, Brier) and ranking (AUROC, AURC)."""
    table = Table(title="confidence", title_justify="left")
    table.add_column("question type")
    for name in ("ECE", "Brier", "AUROC", "AURC"):
        table.add_column(name, justify="right")
    for i, (name, group) in enumerate(groups):
        auroc = group.get("auroc")
        table.add_row(
            name, f"{group['ece']:.3f}", _number(group.get("brier")), "—" if auroc is None else f"{auroc:.3f}",
            _number(group.get("aurc")), style="bold" if i == 0 else None, end_section=i == 0 and len(groups) > 1,
        )  # fmt: skip
    return table


def _loop_table(overall: dict[str, Any]) -> Table:
    """What the loop did to the direct answer, where the final answers came from, and how much
    of the generated text parrots the prompts' exemplars (empty for results without them)."""
    table = Table(title="the loop", title_justify="left", show_header=False)
    table.add_column(style="cyan")
    table.add_column()
    changes = overall.get("loop_changes")
    if changes:
        table.add_row("changed the direct answer",
                      f"{changes['changed']} of {changes['n']} ({_pct(changes['changed_rate'])})")  # fmt: skip
        if changes["changed"]:
            table.add_row("of those, final answer right",
                          f"{changes['agent_right']} ({_pct(changes['agent_right_rate'])})")  # fmt: skip
            table.add_row("of those, direct answer right",
                          f"{changes['direct_right']} of {changes['direct_scored']} scored "
                          f"({_pct(changes['direct_right_rate'])})")  # fmt: skip
    sources = overall.get("answer_sources")
    if sources:
        table.add_row("final answer from", "  ".join(f"{name}: {count}" for name, count in sources.items()))
    echo = overall.get("exemplar_echo")
    if echo and echo.get("rate") is not None:
        over = echo["rate"] > 0.01
        table.add_row(
            "exemplar echo",
            Text(f"{echo['echoes']} of {echo['texts']} generated texts ({_pct(echo['rate'])}; target ≤ 1%)",
                 style="bold red" if over else ""),
        )  # fmt: skip
    return table


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


# How the report says each --scoring.
OPTION_SCORING_WORDS = {"letter": "letter (options in the question, the reply matched)",
                        "likelihood": "likelihood (each option's log-likelihood, the best per token)"}


def run_identity(summary: dict[str, Any]) -> str:
    """What the numbers are of, beyond the title: models, calibration, prompts, library version,
    VQA metric, and how options were chosen where samples had them."""
    models = summary.get("models") or {}
    parts = [
        "models " + (", ".join(f"{role} {name}" for role, name in sorted(models.items())) or "of the preset"),
        f"calibration {summary.get('calibration') or '—'}",
        f"prompts {summary.get('prompts_sha256') or '—'}",
        f"idealagent {summary.get('idealagent_version') or '—'}",
        f"VQA metric {summary.get('vqa_metric') or '—'}",
    ]
    scoring = summary.get("option_scoring")
    if scoring:
        parts.append(f"options by {OPTION_SCORING_WORDS.get(scoring, scoring)}")
    return " · ".join(parts)


def _stats_table(overall: dict[str, Any]) -> Table:
    """The agent's behaviour and cost per sample, with selective accuracy and accuracy by rounds."""

    stats = overall["agent_stats"]
    table = Table(title="agent", title_justify="left", show_header=False)
    table.add_column(style="cyan")
    table.add_column()
    table.add_row("failed / unknown", f"{overall['failures']} / {_pct(overall['unknown_rate'])}")
    if stats.get("n"):
        reasons = ", ".join(f"{reason} {count}" for reason, count in stats["stop_reasons"].items())
        table.add_row(
            "rounds / sub-questions", f"{stats['mean_rounds']:.2f} / {stats['mean_sub_questions']:.2f}"
        )
        table.add_row("LLM calls / sample", f"{stats['mean_llm_calls']:.2f}")
        table.add_row(
            "LLM tokens in / out",
            f"{stats['mean_llm_input_tokens']:.0f} / {stats['mean_llm_output_tokens']:.0f}",
        )
        table.add_row("answerer calls / sample", f"{stats['mean_answerer_calls']:.2f}")
        if stats.get("mean_calls_by_step"):
            table.add_row("model calls / sample by step",
                          " · ".join(f"{step} {value:.2f}" for step, value in stats["mean_calls_by_step"].items()))
        table.add_row(
            "answerer tokens in / out",
            f"{stats.get('mean_answerer_input_tokens', 0):.0f} / {stats.get('mean_answerer_output_tokens', 0):.0f}",
        )
        table.add_row("stop reasons", reasons)
        table.add_row("fallback rate", _pct(stats["fallback_rate"]))
        table.add_row(
            "latency mean / p50 / p90",
            f"{stats['latency_mean_s']:.2f} / {stats['latency_p50_s']:.2f} / {stats['latency_p90_s']:.2f} s",
        )
    points = {round(c, 6): acc for c, acc in overall["accuracy_at_coverage"]}
    shown = [c for c in (0.2, 0.5, 0.8, 1.0) if c in points]
    if shown:
        table.add_row("accuracy @ coverage", "  ".join(f"{int(c * 100)}%: {_pct(points[c])}" for c in shown))
    by_rounds = overall["accuracy_by_rounds"]
    table.add_row(
        "accuracy by rounds",
        "  ".join(f"{k}: {_pct(v['accuracy'])} (n={v['n']})" for k, v in by_rounds.items()),
    )
    return table


def render_bench(lines: Sequence[dict[str, Any]], console: Console) -> None:
    """``idealagent bench``'s table. Into a file or a pipe rich assumes 80 columns; the table
    wants more, and wrapped numbers help nobody."""
    if not console.is_terminal:
        console = Console(width=160, file=console.file)
    console.print(bench_table(lines))


def bench_table(lines: Sequence[dict[str, Any]]) -> Table:
    """``idealagent bench``'s measurements, one row per (mode, batch size)."""
    first = lines[0] if lines else {}
    table = Table(title=f"{first.get('preset', '')} on {first.get('samples', 0)} {first.get('benchmark', '')} "
                        "questions", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    columns = [("mode", "mode"), ("batch", "batch_size"), ("samples/s", "samples_per_s"),
               ("sub-q/s", "sub_questions_per_s"), ("LLM tok/s", "llm_output_tokens_per_s"),
               ("ans. tok/s", "answerer_output_tokens_per_s"), ("rounds", "mean_rounds"),
               ("failed", "failures"), ("GPU GiB", "peak_gpu_memory_gib")]
    shown = [(title, key) for title, key in columns if any(key in line for line in lines)]
    for title, _ in shown:
        table.add_column(title, justify="left" if title == "mode" else "right", no_wrap=True)
    if any(line.get("calls_by_step") for line in lines):
        shown.append(("calls/sample by step", "calls_by_step"))
        table.add_column("calls/sample by step", justify="left")
    for line in lines:
        table.add_row(*(_cell(line.get(key, "")) for _, key in shown))
    return table


def _cell(value: Any) -> str:
    if isinstance(value, dict):  # calls by step: "caption 1 · direct 1 · look 8.5"
        return " · ".join(f"{step} {count:g}" for step, count in value.items())
    return str(value)
