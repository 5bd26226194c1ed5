"""The ``idealagent eval`` and ``idealagent report`` commands (registered at the end of cli.py).

``eval`` checks every argument, the data and the results file before any model loads; then it
shows a progress bar on a terminal (a line every few samples otherwise) and ends with a short
summary. ``report`` reads one or more results files and prints the full report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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
from idealagent.errors import InfrastructureError, InputError, ModelLoadError
from idealagent.evaluation import runner
from idealagent.evaluation.metrics import DEFAULT_VQA_METRIC
from idealagent.evaluation.runner import (
    EvalResult,
    expected_settings,
    parse_shard,
    prepare_eval,
    progress_line,
)

LOG_EVERY = 10  # samples between progress lines when stderr is not a terminal


def eval_command(
    benchmark: Annotated[str, typer.Argument(help="Benchmark name, e.g. vqav2, gqa, easy-vqa, jsonl, hf.",
                                             show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Results file (JSON Lines); re-running resumes it.",
                                      show_default=False)],
    data: Annotated[str | None, typer.Option("--data", help="Folder (or file, for jsonl) with the benchmark's data; for hf a Hugging Face dataset id or a saved folder.")]
    = None,
    split: Annotated[str | None, typer.Option("--split", help="Split to run (default: the benchmark's first).")]
    = None,
    preset: PresetOption = "tiny",
    limit: Annotated[int | None, typer.Option("--limit", help="Run a seeded random subset of this many samples.")]
    = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the --limit subset.")] = 0,
    shard: Annotated[str, typer.Option("--shard", help="i/n: run every n-th sample from the i-th (0-based).")]
    = "0/1",
    force: Annotated[bool, typer.Option("--force", help="Start --out afresh, deleting what it holds (even another config's results).")]
    = False,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Samples the agent runs together.")]
    = None,
    no_baseline: Annotated[bool, typer.Option("--no-baseline", help="Skip the answerer-only baseline.")] = False,
    vqa_metric: Annotated[str, typer.Option(
        "--vqa-metric", help="VQA accuracy: vqa2021 (the official vqaEval.py since 2021) or vqa-legacy (its "
        "older answer processing, as LAVIS and lmms-eval report).")] = DEFAULT_VQA_METRIC,
    max_rounds: MaxRounds = None,
    threshold: Threshold = None,
    max_sub_questions: MaxSubQuestions = None,
    structured: Structured = None,
    vlm: VlmOption = None,
    llm: LlmOption = None,
    verbose: Verbose = False,
    debug: Debug = False,
) -> None:
    """Run a benchmark; one line per sample goes to --out as it finishes (safe to kill and re-run)."""
    from idealagent.cli import _check_loop, _cli_logging, _error, _exit_on_error, _load_agent

    with _cli_logging(verbose, debug), _exit_on_error(debug):
        shard_pair = parse_shard(shard)
        if batch_size is not None and batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {batch_size}")
        overrides = _check_loop(preset, max_rounds, threshold, max_sub_questions, vlm=vlm, llm=llm,
                                structured=structured)
        plan = prepare_eval(benchmark, data, split, out=out, preset=preset,
                            settings=expected_settings(preset, overrides), limit=limit, seed=seed,
                            shard=shard_pair, force=force, baseline=not no_baseline, vqa_metric=vqa_metric)
        console = Console(stderr=True)  # the loader has already warned about malformed records
        done = len(plan.items) - len(plan.pending)
        if done:
            typer.echo(f"{done} of {len(plan.items)} samples already in {out}; running the other "
                       f"{len(plan.pending)}", err=True)
        agent = None
        if plan.pending:
            if batch_size is not None:
                overrides["batch_size"] = batch_size
            agent = _load_agent(preset, overrides)
        resume = f"the finished samples are kept in {out}; run the same command again to resume"
        try:
            if console.is_terminal:
                result = _run_with_bar(plan, agent, console)
            else:
                result = plan.run(agent, on_progress=_line_printer())
        except KeyboardInterrupt:
            _error(f"interrupted; {resume}")
            raise typer.Exit(130) from None
        except (InfrastructureError, ModelLoadError) as exc:  # nothing in flight was recorded
            raise type(exc)(f"{exc}; {resume}") from exc
        _print_summary(plan, result)
        if result.unfinished:
            raise InfrastructureError(
                f"{result.unfinished} samples were left unfinished because a model service kept failing on "
                f"them; they are not in {out}: run the same command again to retry them")


def report_command(
    results: Annotated[list[Path], typer.Argument(help="Results file(s) of one run (shards merge).",
                                                  show_default=False)],
    json_output: Annotated[bool, typer.Option("--json", help="Print only the summary JSON on stdout.")] = False,
    out_dir: Annotated[Path | None, typer.Option(
        "--out-dir", help="Where summary.json and the plots go (default: RESULTS.report/ beside the first file).")]
    = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Merge files even if their runs differ (models, settings, prompts, version, metric).",
    )]
    = False,
    verbose: Verbose = False,
    debug: Debug = False,
) -> None:
    """Summarise results files: accuracy agent vs baseline, per question type, calibration, cost, plots."""
    from idealagent.cli import _cli_logging, _exit_on_error
    from idealagent.console import render_report
    from idealagent.evaluation.report import read_results, summarize, write_plots

    with _cli_logging(verbose, debug), _exit_on_error(debug):
        header, rows = read_results(results, force=force)
        summary = summarize(header, rows)
        folder = out_dir or results[0].with_suffix(".report")
        folder.mkdir(parents=True, exist_ok=True)
        summary_path = folder / "summary.json"
        summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        plots = write_plots(rows, folder)
        if json_output:
            typer.echo(json.dumps(summary, indent=2))
            return
        console = Console()
        render_report(summary, console)
        typer.echo(f"wrote {summary_path}" + "".join(f", {p.name}" for p in plots))


def bench_command(
    preset: PresetOption = "tiny",
    samples: Annotated[int, typer.Option("--samples", "-n", help="Questions to run at each batch size.")] = 8,
    batch_size: Annotated[list[int] | None, typer.Option(
        "--batch-size", "-b", help="A batch size to measure; repeat for several (default: 1 and 8).")] = None,
    mode: Annotated[list[str] | None, typer.Option(
        "--mode", help="agent (the whole loop) or baseline (the answerer alone); repeat for both (default).")]
    = None,
    benchmark: Annotated[str, typer.Option("--benchmark", help="Where the questions come from.")] = "easy-vqa",
    data: Annotated[str | None, typer.Option("--data", help="The benchmark's data folder (not for easy-vqa).")]
    = None,
    split: Annotated[str | None, typer.Option("--split", help="Split (default: the benchmark's first).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the question subset.")] = 0,
    max_rounds: MaxRounds = None,
    threshold: Threshold = None,
    max_sub_questions: MaxSubQuestions = None,
    structured: Structured = None,
    vlm: VlmOption = None,
    llm: LlmOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON line per measurement on stdout.")] = False,
    verbose: Verbose = False,
    debug: Debug = False,
) -> None:
    """Measure a preset's throughput: samples/s of the loop and of the direct-answer baseline."""
    from idealagent.cli import _check_loop, _cli_logging, _exit_on_error, _load_agent
    from idealagent.console import render_bench
    from idealagent.evaluation.bench import MODES, run_bench
    from idealagent.evaluation.datasets import load_benchmark

    with _cli_logging(verbose, debug), _exit_on_error(debug):
        modes = mode or list(MODES)
        unknown = sorted(set(modes) - set(MODES))
        if unknown:
            raise InputError(f"unknown --mode {unknown[0]!r}; choose from: {', '.join(MODES)}")
        sizes = batch_size or [1, 8]
        if samples < 1 or min(sizes) < 1:
            raise InputError("--samples and every --batch-size must be at least 1")
        overrides = _check_loop(preset, max_rounds, threshold, max_sub_questions, vlm=vlm, llm=llm,
                                structured=structured)
        items = load_benchmark(benchmark, data, split, limit=samples, seed=seed).items
        agent = _load_agent(preset, overrides)
        lines = []
        for line in run_bench(agent, items, sizes, modes):  # type: ignore[arg-type]
            line = {"preset": preset, "benchmark": benchmark, **line}
            lines.append(line)
            if json_output:
                typer.echo(json.dumps(line))
            else:
                typer.echo(f"{line['mode']} at batch {line['batch_size']}: {line['samples_per_s']} samples/s",
                           err=True)
        if not json_output:
            render_bench(lines, Console())


def _run_with_bar(plan: runner.EvalPlan, agent: Any, console: Console) -> EvalResult:
    """Run with a rich progress bar on stderr: done/total, live accuracies, failures, ETA."""
    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("agent {task.fields[agent]}  baseline {task.fields[baseline]}  failed {task.fields[failed]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(plan.header["benchmark"], total=len(plan.items), agent="–", baseline="–", failed=0)

        def show(progress: runner.Progress) -> None:
            bar.update(task, completed=progress.done, agent=_pct(progress.agent_accuracy),
                       baseline=_pct(progress.baseline_accuracy), failed=progress.failures)

        return plan.run(agent, on_progress=show)


def _line_printer() -> Any:
    """A progress callback that echoes a line to stderr every LOG_EVERY samples and at the end."""
    def show(progress: runner.Progress) -> None:
        if progress.new and (progress.new % LOG_EVERY == 0 or progress.new == progress.pending):
            typer.echo(progress_line(progress), err=True)

    return show


def _print_summary(plan: runner.EvalPlan, result: EvalResult) -> None:
    """Two plain lines on stdout (unwrapped, so the path can be copied)."""
    header = plan.header
    baseline = f", baseline {_pct(result.baseline_accuracy)}" if header["baseline"] else ""
    speed = f", {result.samples_per_s:.2f} samples/s" if result.samples_per_s else ""
    typer.echo(f"{header['benchmark']} {header['split']}: {result.n} samples ({result.failures} failed): "
               f"agent {_pct(result.agent_accuracy)}{baseline}; this run {result.new} in {result.seconds:.1f}s{speed}")
    typer.echo(f"results: {result.path}  (full report: idealagent report {result.path})")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"
