"""``idealagent eval`` runs a benchmark, ``report`` summarises results files, ``bench`` measures speed.

``eval`` checks every argument, the data and the results file before any model loads; then it
shows a progress bar on a terminal (elsewhere, under a batch scheduler or into a file, a line
every ``PROGRESS_EVERY_S`` seconds) and ends with a short summary. ``report`` reads one or more
results files and prints the full report, or draws where one sample looked closer
(``--sample ID --show-looks FILE.png``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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
    setting_option,
    with_loop_options,
)
from idealagent.console import plural
from idealagent.errors import ImageError, InfrastructureError, InputError, ModelLoadError
from idealagent.evaluation import ranks, runner
from idealagent.evaluation.runner import (
    EvalResult,
    expected_settings,
    parse_shard,
    prepare_eval,
    progress_line,
)
from idealagent.evaluation.scoring import DEFAULT_VQA_METRIC
from idealagent.images import load_image
from idealagent.looking.draw import check_looks_path

# Seconds between progress lines when stderr is not a terminal: often enough for a batch job's
# log to show it is alive, rarely enough to stay readable.
PROGRESS_EVERY_S = 30.0


@with_loop_options
def eval_command(
    benchmark: Annotated[str, typer.Argument(
        metavar="BENCHMARK", show_default=False, help="Benchmark name, e.g. vqav2, gqa, easy-vqa, jsonl, hf.")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", metavar="PATH", show_default=False,
        help="Results file (JSON Lines); re-running resumes it.")],
    data: Annotated[str | None, typer.Option(
        "--data", metavar="PATH", show_default=False,
        help="Folder (or file, for jsonl) with the benchmark's data; for hf a Hugging Face dataset id or a "
        "saved folder.")] = None,
    split: Annotated[str | None, typer.Option(
        "--split", metavar="NAME", show_default="the benchmark's first", help="Split to run.")] = None,
    preset: PresetOption = "tiny",
    limit: Annotated[int | None, typer.Option(
        "--limit", metavar="N", show_default=False, help="Run a seeded random subset of this many samples.")]
    = None,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Seed of the --limit subset.")] = 0,
    shard: Annotated[str, typer.Option(
        "--shard", metavar="I/N", help="Run every n-th sample from the i-th (0-based).")] = "0/1",
    force: Annotated[bool, flag(
        "--force", help="Start --out afresh, deleting what it holds (even another config's results).")] = False,
    batch_size: Annotated[int | None, setting_option("batch_size", "--batch-size")] = None,
    no_baseline: Annotated[bool, flag("--no-baseline", help="Skip the answerer-only baseline.")] = False,
    vqa_metric: Annotated[str, typer.Option(
        "--vqa-metric", metavar="NAME", help="VQA accuracy: vqa2021 (the official vqaEval.py since 2021) or "
        "vqa-legacy (its older answer processing, as LAVIS and lmms-eval report).")] = DEFAULT_VQA_METRIC,
    loop: LoopOptions = NOTHING_GIVEN,
    vlm: VlmOption = None,
    llm: LlmOption = None,
    verbose: Verbose = False,
    debug: Debug = False,
) -> None:
    """Run a benchmark; one line per sample goes to --out as it finishes (safe to kill and re-run)."""
    with cli_logging(verbose, debug), exit_on_error(debug):
        rank = ranks.launch_rank()  # one of several processes of `accelerate launch`: its shard
        if rank is not None and shard != "0/1":
            raise InputError("--shard is the launcher's rank here (each process runs RANK/WORLD_SIZE); leave it out")
        if rank is not None:
            ranks.use_own_gpu(rank)
        shard_pair = rank.shard if rank is not None else parse_shard(shard)
        if batch_size is not None and batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {batch_size}")
        overrides = loop_overrides(preset, loop, vlm=vlm, llm=llm)
        plan = prepare_eval(benchmark, data, split, out=rank.path(out) if rank is not None else out,
                            preset=preset, settings=expected_settings(preset, overrides), limit=limit, seed=seed,
                            shard=shard_pair, force=force, baseline=not no_baseline, vqa_metric=vqa_metric)
        if rank is not None:
            kept = ranks.check_out(out, plan.header, force=force)
            if rank.index == 0:
                typer.echo(f"{rank.count} processes; this one runs shard 0/{rank.count} into {plan.out}, then "
                           f"merges every shard into {out}", err=True)
            with ranks.RankGroup(rank) as group:
                result = _run(plan, preset, overrides, batch_size, rank)
                merged = ranks.finish(group, plan, result, out, kept)
            if merged is not None:
                _print_summary(plan, merged)
                _raise_if_unfinished(merged, out)
            return
        result = _run(plan, preset, overrides, batch_size, rank)
        _print_summary(plan, result)
        _raise_if_unfinished(result, out)


def _run(plan: runner.EvalPlan, preset: str, overrides: dict[str, Any], batch_size: int | None,
         rank: ranks.Rank | None) -> EvalResult:
    """Load the agent if samples are left and run them, showing progress (on rank 0 only, when
    a launcher started several processes)."""
    out = plan.out
    quiet = rank is not None and rank.index != 0
    console = Console(stderr=True)  # the loader has already warned about malformed records
    done = len(plan.items) - len(plan.pending)
    if done and not quiet:
        typer.echo(f"{done} of {plural(len(plan.items), 'sample')} already in {out}; running the other "
                   f"{len(plan.pending)}", err=True)
    agent = None
    if plan.pending:
        if batch_size is not None:
            overrides["batch_size"] = batch_size
        agent = load_agent(preset, overrides, announce=not quiet)
    resume = f"the finished samples are kept in {out}; run the same command again to resume"
    seen: list[runner.Progress] = []  # the run's live counts, for the interrupt line
    try:
        if quiet:
            result = plan.run(agent)
        elif console.is_terminal:
            result = _run_with_bar(plan, agent, console, seen.append)
        else:
            if plan.pending:
                typer.echo(f"running {plural(len(plan.pending), 'sample')}; a progress line every "
                           f"{PROGRESS_EVERY_S:g}s and at the end", err=True)
            with closing(_LinePrinter(seen.append)) as printer:
                result = plan.run(agent, on_progress=printer)
    except KeyboardInterrupt:
        error_line(f"interrupted; {_kept(seen[-1] if seen else None, agent, out)}; run the same command again "
                   "to resume")
        raise typer.Exit(130) from None
    except (InfrastructureError, ModelLoadError) as exc:  # nothing in flight was recorded
        raise type(exc)(f"{exc}; {resume}") from exc
    cache = getattr(agent, "response_cache", None)
    if cache is not None and not quiet and cache.counts.hits + cache.counts.misses:  # else nothing was cacheable
        typer.echo(cache.counts.line())
    return result


def _kept(progress: runner.Progress | None, agent: Any, out: Path) -> str:
    """What an interrupted run keeps: the samples it finished, in the results file, and the
    model replies of the samples in flight, in the response cache (a rerun does not pay again)."""
    finished = f"{plural(progress.new, 'sample')} finished by this run" if progress else "the finished samples"
    text = f"{finished} {'is' if progress and progress.new == 1 else 'are'} kept in {out}"
    cache = getattr(agent, "response_cache", None)
    if progress is not None and progress.in_flight:
        stored = cache.counts.stored if cache is not None else 0
        text += (f"; {plural(progress.in_flight, 'sample')} in flight had made {plural(progress.calls, 'model call')}"
                 + (f", and {plural(stored, 'reply', 'replies')} are in the response cache, so the rerun "
                    "does not pay for them again" if stored else ", none of them kept in the response cache"))
    return text


def _raise_if_unfinished(result: EvalResult, out: Path) -> None:
    if result.unfinished:
        raise InfrastructureError(
            f"{plural(result.unfinished, 'sample')} left unfinished because a model service kept failing "
            f"on them; they are not in {out}: run the same command again to retry them")


def report_command(
    results: Annotated[list[Path], typer.Argument(
        metavar="RESULTS", show_default=False, help="Results file(s) of one run (shards merge).")],
    json_output: Annotated[bool, flag("--json", help="Print only the summary JSON on stdout.")] = False,
    out_dir: Annotated[Path | None, typer.Option(
        "--out-dir", metavar="PATH", show_default="RESULTS.report/ beside the first file",
        help="Where summary.json and the plots go.")] = None,
    force: Annotated[bool, flag(
        "--force", help="Merge files even if their runs differ (models, settings, prompts, version, metric).",
    )] = False,
    sample: Annotated[str | None, typer.Option(
        "--sample", metavar="ID", show_default=False,
        help="The sample whose looks --show-looks draws.")] = None,
    looks_file: Annotated[Path | None, typer.Option(
        "--show-looks", metavar="FILE.png", show_default=False,
        help="Instead of the report, draw where the --sample's trace looked closer on its picture and save "
             "it to FILE.png.")] = None,
    verbose: Verbose = False,
    debug: Debug = False,
) -> None:
    """Summarise results files: accuracy agent vs baseline, per question type, calibration, cost, plots."""
    from idealagent.report_console import render_report
    from idealagent.evaluation.report import read_results, summarize, write_plots

    with cli_logging(verbose, debug), exit_on_error(debug):
        if sample is not None or looks_file is not None:
            if sample is None or looks_file is None:
                raise InputError("--sample ID and --show-looks FILE.png go together: which sample's looks to "
                                 "draw, and where to save them")
            if json_output or out_dir is not None:
                raise InputError("--show-looks draws one sample's looks instead of the report: "
                                 "it takes no --json or --out-dir")
            check_looks_path(looks_file)
            draw_sample_looks(read_results(results, force=force)[1], sample, looks_file)
            return
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


def draw_sample_looks(rows: list[dict[str, Any]], sample: str, path: Path) -> None:
    """``report --sample ID --show-looks FILE.png``: that sample's looks, drawn on its picture."""
    from idealagent.evaluation.report import sample_row

    row, trace = sample_row(rows, sample)
    picture: Any = None
    if trace.search is not None:
        try:
            picture = load_image(row.get("image") or trace.sample.image)
        except ImageError as exc:
            raise ImageError(f"sample {sample}: its picture cannot be read ({exc})") from None
    show_looks(trace, path, picture)


def calibrate_command(
    results: Annotated[list[Path], typer.Argument(
        metavar="RESULTS", show_default=False, help="Results file(s) of a labelled run (shards merge).")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="PATH", help="Where the calibration goes.")]
    = Path("calibration.json"),
    method: Annotated[str, typer.Option(
        "--method", metavar="logistic|isotonic",
        help="logistic: logistic regression over the signals; isotonic: a monotone map of the default "
        "combination (needs more samples).")] = "logistic",
    force: Annotated[bool, flag("--force", help="Merge files even if their runs differ.")] = False,
    verbose: Verbose = False,
    debug: Debug = False,
) -> None:
    """Fit a confidence calibration on a labelled run; use it with --calibration FILE."""
    from idealagent.evaluation.calibrate import calibrate

    with cli_logging(verbose, debug), exit_on_error(debug):
        if method not in ("logistic", "isotonic"):
            raise InputError(f"--method must be logistic or isotonic, got {method!r}")
        calibration = calibrate(results, method, force=force)  # type: ignore[arg-type]
        calibration.save(out)
        for kind, fit in calibration.fits.items():
            if fit.features:
                terms = ", ".join(f"{name} {weight:+.2f}" for name, weight in zip(fit.features, fit.weights))
                shape = f"bias {fit.bias:+.2f}; {terms}"
            else:
                shape = f"{len(fit.knots)} knots"
            typer.echo(f"{kind}: {plural(fit.n, 'candidate')}, {fit.mean_score:.1%} right; {shape}")
        for index, record in calibration.rounds.items():
            pays = "asked" if calibration.round_pays(index) else "not asked (rounds_do_not_pay)"
            typer.echo(f"round {index}: {record.fixed} of {plural(record.reached, 'sample')} fixed "
                       f"(wrong before it, right after); {pays}")
        typer.echo(f"wrote {out}; use it with --calibration {out}")


@with_loop_options(exclude=("cache",))  # bench never reads the cache: a hit would time nothing
def bench_command(
    preset: PresetOption = "tiny",
    samples: Annotated[int, typer.Option(
        "--samples", "-n", metavar="N", help="Questions to run at each batch size.")] = 8,
    batch_size: Annotated[list[int] | None, typer.Option(
        "--batch-size", "-b", metavar="N", show_default="1 and 8",
        help="A batch size to measure; repeat for several.")] = None,
    mode: Annotated[list[str] | None, typer.Option(
        "--mode", metavar="MODE", show_default="both",
        help="agent (the whole loop) or baseline (the answerer alone); repeat for both.")] = None,
    benchmark: Annotated[str, typer.Option(
        "--benchmark", metavar="NAME", help="Where the questions come from.")] = "easy-vqa",
    data: Annotated[str | None, typer.Option(
        "--data", metavar="PATH", show_default=False, help="The benchmark's data folder (not for easy-vqa).")]
    = None,
    split: Annotated[str | None, typer.Option(
        "--split", metavar="NAME", show_default="the benchmark's first", help="Split.")] = None,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Seed of the question subset.")] = 0,
    loop: LoopOptions = NOTHING_GIVEN,
    vlm: VlmOption = None,
    llm: LlmOption = None,
    lock_step: Annotated[bool, flag(
        "--lock-step", help="Run the loop as first designed, one batched call per step for the whole batch, "
        "to compare with the pipelined default.")] = False,
    json_output: Annotated[bool, flag("--json", help="One JSON line per measurement on stdout.")] = False,
    verbose: Verbose = False,
    debug: Debug = False,
) -> None:
    """Measure a preset's throughput: samples/s of the loop and of the direct-answer baseline."""
    from idealagent.report_console import render_bench
    from idealagent.evaluation.bench import MODES, run_bench
    from idealagent.evaluation.datasets import load_benchmark

    with cli_logging(verbose, debug), exit_on_error(debug):
        modes = mode or list(MODES)
        unknown = sorted(set(modes) - set(MODES))
        if unknown:
            raise InputError(f"unknown --mode {unknown[0]!r}; choose from: {', '.join(MODES)}")
        sizes = batch_size or [1, 8]
        if samples < 1 or min(sizes) < 1:
            raise InputError("--samples and every --batch-size must be at least 1")
        overrides = loop_overrides(preset, loop, vlm=vlm, llm=llm)
        items = load_benchmark(benchmark, data, split, limit=samples, seed=seed).items
        # Never the response cache: a hit takes no time, so it would measure nothing.
        agent = load_agent(preset, {**overrides, "cache": False, **({"pipeline": False} if lock_step else {})})
        lines = []
        for line in run_bench(agent, items, sizes, modes):  # type: ignore[arg-type]
            line = {"preset": preset, "benchmark": benchmark, "loop": "lock-step" if lock_step else "pipelined",
                    **line}
            lines.append(line)
            if json_output:
                typer.echo(json.dumps(line))
            else:
                typer.echo(f"{line['mode']} at batch {line['batch_size']}: {line['samples_per_s']} samples/s",
                           err=True)
        if not json_output:
            render_bench(lines, Console())


def _run_with_bar(plan: runner.EvalPlan, agent: Any, console: Console,
                  remember: Callable[[runner.Progress], None] = lambda progress: None) -> EvalResult:
    """Run with a rich progress bar on stderr: done/total, live accuracies, failures, ETA."""
    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("agent {task.fields[agent]}  baseline {task.fields[baseline]}  failed {task.fields[failed]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(plan.header["benchmark"], total=len(plan.items), agent="–", baseline="–", failed=0)

        def show(progress: runner.Progress) -> None:
            remember(progress)
            bar.update(task, completed=progress.done, agent=_pct(progress.agent_accuracy),
                       baseline=_pct(progress.baseline_accuracy), failed=progress.failures)

        return plan.run(agent, on_progress=show)


class _LinePrinter:
    """A progress callback that echoes a line to stderr every PROGRESS_EVERY_S seconds and at the
    end: a steady pulse for logs, whether samples take milliseconds or minutes. A sample that
    finishes prints the line when the interval has passed; while none finishes (the first ones
    of a slow model take minutes) a timer prints it, with the samples in flight and the model
    calls made, so a log is never silent for longer than the interval."""

    def __init__(self, remember: Callable[[runner.Progress], None] = lambda progress: None) -> None:
        self.remember = remember
        self.last = _now()  # the clock of the sample-driven lines (tests move it)
        self.printed_at = time.monotonic()  # real time, for the timer
        self.progress: runner.Progress | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def __call__(self, progress: runner.Progress) -> None:
        with self._lock:
            if self.progress is None:
                self.progress = progress
                self.remember(progress)
                threading.Thread(target=self._beat, name="progress-line", daemon=True).start()
            if not progress.new:
                return
            now = _now()
            if now - self.last >= PROGRESS_EVERY_S or progress.new == progress.pending:
                self.last = now
                self._print(progress)

    def close(self) -> None:
        """Stop the timer."""
        self._stop.set()

    def _beat(self) -> None:
        interval = PROGRESS_EVERY_S
        while not self._stop.wait(interval / 4):
            with self._lock:
                if self.progress is not None and time.monotonic() - self.printed_at >= interval:
                    self._print(self.progress)

    def _print(self, progress: runner.Progress) -> None:
        self.printed_at = time.monotonic()
        typer.echo(progress_line(progress), err=True)


def _now() -> float:
    return time.monotonic()  # a function of its own so that tests can move the clock


def _print_summary(plan: runner.EvalPlan, result: EvalResult) -> None:
    """Two plain lines on stdout (unwrapped, so the path can be copied)."""
    header = plan.header
    baseline = f", baseline {_pct(result.baseline_accuracy)}" if header["baseline"] else ""
    speed = f", {result.samples_per_s:.2f} samples/s" if result.samples_per_s else ""
    typer.echo(f"{header['benchmark']} {header['split']}: {plural(result.n, 'sample')} ({result.failures} failed): "
               f"agent {_pct(result.agent_accuracy)}{baseline}; this run {result.new} in {result.seconds:.1f}s{speed}")
    typer.echo(f"results: {result.path}  (full report: idealagent report {result.path})")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"
