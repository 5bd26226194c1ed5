"""Run a benchmark through the agent, one durable results line per finished sample.

``prepare_eval`` does everything that needs no model (load and subsample the benchmark, pick
the shard, read what the results file already holds, check its configuration), so a mistake
fails in milliseconds; ``EvalPlan.run`` then streams the remaining samples through the batched
agent (``IdealAgent.iter_batch``, pool refill) with the answerer-only baseline beside it.
``run_eval`` does both. Re-running the same command resumes: finished ids are skipped.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idealagent.errors import InputError
from idealagent.events import Event, SampleFinished
from idealagent.evaluation.baseline import BaselineResult, load_images, run_baseline
from idealagent.evaluation.results import (
    ExistingResults,
    ResultsWriter,
    fingerprint_difference,
    header_field,
    prompts_sha256,
    read_existing,
)
from idealagent.evaluation.scoring import DEFAULT_VQA_METRIC, check_vqa_metric, score
from idealagent.parsing import match_choice
from idealagent.trace import Sample, Trace

if TYPE_CHECKING:
    from idealagent.agent import IdealAgent
    from idealagent.evaluation.items import EvalItem

log = logging.getLogger(__name__)

Shard = tuple[int, int]  # (index, count): this run takes the selection's positions p with p % count == index


def parse_shard(text: str) -> Shard:
    """``"i/n"`` → (i, n) with 0 <= i < n; anything else is an InputError."""
    index, slash, count = text.partition("/")
    try:
        shard = (int(index), int(count))
    except ValueError:
        shard = None
    if not slash or shard is None or not 0 <= shard[0] < shard[1]:
        raise InputError(f"--shard must be i/n with 0 <= i < n (e.g. 0/4), got {text!r}")
    return shard


def expected_settings(preset: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The settings a results header records for ``load_preset(preset, **overrides)``'s agent,
    without loading it: those that change answers, the preset name and its models."""
    from idealagent.presets import preset_models, preset_settings

    given = dict(overrides or {})
    vlm, llm = given.pop("vlm", None), given.pop("llm", None)
    settings: dict[str, Any] = {**preset_settings(preset, **given).fingerprint(), "preset": preset}
    models = preset_models(preset, vlm, llm)
    if models:
        settings["models"] = models
    return settings


def agent_settings(agent: IdealAgent) -> dict[str, Any]:
    """An agent's settings as a results header records them: speed knobs such as the batch
    size are left out, so a run may resume with another."""
    return {**agent.settings.fingerprint(), **agent.origin}


@dataclass
class Progress:
    """Live counts for a progress display; scores cover earlier runs' samples too."""

    total: int  # samples in this shard's selection
    done: int = 0  # finished, by this run or an earlier one
    new: int = 0  # finished by this run
    pending: int = 0  # left to do when this run started
    agent_score: float = 0.0  # sum of scores (failures count 0)
    baseline_score: float = 0.0
    baseline_n: int = 0
    failures: int = 0
    started: float = field(default_factory=time.perf_counter)
    settle: int = 1  # samples this run must finish before its rate means something (the pool's size)
    _running: dict[int, Trace] = field(default_factory=dict, repr=False)  # in the agent's pool
    _finished_calls: int = 0

    def observe(self, event: Event) -> None:
        """Follow the samples in the agent's pool through its events (``iter_batch`` callbacks)."""
        if isinstance(event, SampleFinished):
            if self._running.pop(id(event.trace), None) is not None:
                self._finished_calls += model_calls(event.trace)
        else:
            self._running[id(event.trace)] = event.trace

    @property
    def in_flight(self) -> int:
        """Samples in the agent's pool that have begun and not finished."""
        return len(self._running)

    @property
    def calls(self) -> int:
        """Model calls this run has made so far, finished samples and those in flight."""
        return self._finished_calls + sum(model_calls(trace) for trace in list(self._running.values()))

    @property
    def agent_accuracy(self) -> float | None:
        """Mean agent score so far."""
        return self.agent_score / self.done if self.done else None

    @property
    def baseline_accuracy(self) -> float | None:
        """Mean baseline score so far (None without a baseline)."""
        return self.baseline_score / self.baseline_n if self.baseline_n else None

    @property
    def elapsed_s(self) -> float:
        """Seconds since this run started."""
        return time.perf_counter() - self.started

    @property
    def eta_s(self) -> float | None:
        """Seconds left at this run's rate so far; None until the pool has turned over once (the
        first samples to finish took the whole start-up, so their rate would mislead)."""
        if not self.new or self.new < min(self.settle, self.pending):
            return None
        return (self.pending - self.new) * self.elapsed_s / self.new

    def add(self, score: float | None, baseline_score: float | None, failed: bool, *, new: bool) -> None:
        """Count one finished sample."""
        self.done += 1
        self.new += new
        self.agent_score += score or 0.0
        self.failures += failed
        if baseline_score is not None:
            self.baseline_score += baseline_score
            self.baseline_n += 1


def progress_line(progress: Progress) -> str:
    """One line for logs: done/total, accuracies, failures, ETA."""
    def pct(value: float | None) -> str:
        return "–" if value is None else f"{value:.1%}"

    eta = progress.eta_s
    return (f"{progress.done}/{progress.total} done, agent {pct(progress.agent_accuracy)}, baseline "
            f"{pct(progress.baseline_accuracy)}, {progress.failures} failed, {progress.in_flight} in flight, "
            f"{progress.calls} model calls" + (f", ~{eta:.0f}s left" if eta is not None else ""))


def model_calls(trace: Trace) -> int:
    """The model calls a sample has cost so far: captions, answers, questioner and reasoner."""
    return trace.usage.llm_calls + trace.usage.answerer_calls + (trace.caption is not None)


@dataclass
class EvalResult:
    """What a run did, for the closing summary (``idealagent report`` gives the full one)."""

    path: Path
    n: int  # samples of the selection in the file
    new: int  # of which this run finished
    failures: int
    agent_accuracy: float | None
    baseline_accuracy: float | None
    seconds: float
    # Samples the infrastructure kept failing on: not in the file, so the rerun tries them again.
    unfinished: int = 0

    @property
    def samples_per_s(self) -> float | None:
        """This run's throughput."""
        return self.new / self.seconds if self.new and self.seconds > 0 else None


@dataclass
class EvalPlan:
    """A checked run that has not loaded a model yet: the items, what is left, the file's state."""

    header: dict[str, Any]  # the header a fresh file gets
    items: list[EvalItem]  # this shard's selection, in order
    pending: list[EvalItem]  # not in the results file yet
    existing: ExistingResults
    fresh: bool  # start the file afresh (it is new, or --force)
    skipped: list[str] = field(default_factory=list)  # malformed records the loader left out
    # Each item's position in the whole seeded selection (before sharding), written to its row
    # as "index" so merged shards can be put back in one canonical order.
    positions: dict[str, int] = field(default_factory=dict)

    @property
    def out(self) -> Path:
        """The results file."""
        return self.existing.path

    def progress(self) -> Progress:
        """Counts of the samples already in the file, ready for this run to add to."""
        progress = Progress(total=len(self.items), pending=len(self.pending))
        for item in self.items:
            done = None if self.fresh else self.existing.done.get(item.id)
            if done is not None:
                progress.add(done.score, done.baseline_score, done.failed, new=False)
        return progress

    def run(self, agent: IdealAgent | None, *, on_progress: Callable[[Progress], None] | None = None,
            log_every: int = 10) -> EvalResult:
        """Run the pending samples and append a line for each as it finishes.

        ``on_progress`` is called after every sample (a display); without it, a log line is
        written every ``log_every`` samples. ``agent`` may be None when nothing is pending.
        """
        progress = self.progress()
        unfinished = 0
        if self.pending and agent is None:
            raise InputError(f"{len(self.pending)} samples are left to run, but no agent was given")
        if self.pending and agent is not None:
            planned = self.header["settings"]
            wrong = {k: v for k, v in agent_settings(agent).items() if planned.get(k, v) != v}
            if wrong:
                raise InputError(f"the agent's settings {wrong} differ from the planned {planned}")
            progress.settle = agent.batch_size
            stream = _Stream(self, agent, progress)
            with closing(ResultsWriter(self.existing, self.header, fresh=self.fresh)) as writer:
                if on_progress:
                    on_progress(progress)
                for row in stream.rows():
                    writer.append(row)
                    baseline = row["baseline"] or {}
                    progress.add(row["score"], baseline.get("score"), row["error"] is not None, new=True)
                    if on_progress:
                        on_progress(progress)
                    elif progress.new % log_every == 0:
                        log.info("%s", progress_line(progress))
            unfinished = len(stream.unfinished)
            if unfinished:
                # The CLI says so in its one error line; this is for --verbose and library logs.
                log.info("%d samples were not run to the end because a model service kept failing "
                         "(first: %s); rerun the same command to retry them", unfinished, stream.unfinished[0])
        return EvalResult(self.out, progress.done, progress.new, progress.failures, progress.agent_accuracy,
                          progress.baseline_accuracy, progress.elapsed_s, unfinished)


def prepare_eval(benchmark: str, data_dir: str | Path | None, split: str | None, *, out: str | Path,
                 preset: str, settings: dict[str, Any], limit: int | None = None, seed: int = 0,
                 shard: Shard = (0, 1), force: bool = False, baseline: bool = True,
                 vqa_metric: str = DEFAULT_VQA_METRIC) -> EvalPlan:
    """Check everything a run needs except the model; raises InputError on any problem.

    ``settings`` are the agent's (``expected_settings`` or ``agent_settings``). ``force``
    starts the results file afresh even if it holds another configuration's results.
    ``vqa_metric`` is the VQA accuracy variant (``scoring.VQA_METRICS``) the rows are scored with.
    """
    from idealagent.evaluation.datasets import get_benchmark, load_benchmark

    check_vqa_metric(vqa_metric)
    if not 0 <= shard[0] < shard[1]:
        raise InputError(f"shard must be i/n with 0 <= i < n, got {shard[0]}/{shard[1]}")
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    spec = get_benchmark(benchmark)
    split = split or spec.default_split
    out = Path(out)
    existing = read_existing(out) if not force else ExistingResults(out)
    loaded = load_benchmark(benchmark, Path(data_dir) if data_dir is not None else None, split,
                            limit=limit, seed=seed)
    if loaded.skipped:  # the loader has warned with the count; more detail for --verbose
        log.info("skipped records: %s", "; ".join(loaded.skipped[:5]))
    if settings.get("option_scoring") == "likelihood" and not any(i.kind == "multiple_choice" for i in loaded.items):
        raise InputError(f"--scoring likelihood chooses among a question's options; {benchmark} has no "
                         "multiple-choice samples (use --scoring letter)")
    header = {
        "format": 1, "benchmark": benchmark, "split": split, "preset": preset, "settings": settings,
        "seed": seed, "limit": limit, "shard": list(shard), "baseline": baseline, "vqa_metric": vqa_metric,
        "prompts_sha256": prompts_sha256(), "idealagent_version": _version(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if existing.header is not None:
        difference = fingerprint_difference(existing.header, header)
        if difference:
            raise InputError(f"{out} holds results of another configuration ({difference}); "
                             "choose another --out, or pass --force to overwrite it")
    positions = {item.id: position for position, item in enumerate(loaded.items)}
    items = [item for item in loaded.items if positions[item.id] % shard[1] == shard[0]]
    fresh = existing.header is None
    pending = [item for item in items if fresh or item.id not in existing.done]
    return EvalPlan(header, items, pending, existing, fresh, list(loaded.skipped), positions)


def run_eval(benchmark: str, data_dir: str | Path | None = None, split: str | None = None, *,
             out: str | Path, preset: str = "tiny", agent: IdealAgent | None = None, limit: int | None = None,
             seed: int = 0, shard: Shard = (0, 1), force: bool = False, baseline: bool = True,
             vqa_metric: str = DEFAULT_VQA_METRIC, on_progress: Callable[[Progress], None] | None = None,
             **overrides: Any) -> EvalResult:
    """Evaluate a preset (or a ready ``agent``, recorded under the name ``preset``) on a benchmark.

    Keyword ``overrides`` (max_rounds, confidence_threshold, batch_size, ...) go to
    ``load_preset``; the model loads only if samples are left to run.
    """
    from idealagent.presets import load_preset

    settings = agent_settings(agent) if agent is not None else expected_settings(preset, overrides)
    plan = prepare_eval(benchmark, data_dir, split, out=out, preset=preset, settings=settings, limit=limit,
                        seed=seed, shard=shard, force=force, baseline=baseline, vqa_metric=vqa_metric)
    if plan.pending and agent is None:
        agent = load_preset(preset, **overrides)
    return plan.run(agent, on_progress=on_progress)


class _Stream:
    """Feeds the plan's pending items to ``agent.iter_batch`` and turns each finished trace
    into a results row, with the chunk's baseline computed just before it joins the pool."""

    def __init__(self, plan: EvalPlan, agent: IdealAgent, progress: Progress | None = None) -> None:
        self.plan, self.agent, self.progress = plan, agent, progress
        self.queue: deque[EvalItem] = deque(plan.pending)
        self.staged: deque[tuple[EvalItem, Any]] = deque()  # (item, decoded image or the path)
        self.in_flight: dict[str, EvalItem] = {}
        self.baselines: dict[str, BaselineResult] = {}
        self.unfinished: list[str] = []  # ids the infrastructure failed on: no row, the rerun retries

    def rows(self) -> Iterator[dict[str, Any]]:
        """A row per item, in the order the agent finishes them.

        An item the infrastructure kept failing on (retries exhausted, out of memory) gets no
        row: it is not a result, and the rerun tries it again (``unfinished`` counts them). A
        service that is down, or Ctrl-C, ends the run here; the items in flight get no row.
        """
        callbacks = [self.progress.observe] if self.progress is not None else []
        for trace in self.agent.iter_batch(self._samples(), callbacks=callbacks):
            item = self.in_flight.pop(trace.sample.id)
            if trace.stop_reason == "infrastructure":
                self.baselines.pop(item.id, None)
                self.unfinished.append(item.id)
                continue
            yield self._row(item, trace)

    def _samples(self) -> Iterator[Sample]:
        while self.queue or self.staged:
            if not self.staged:
                self._stage([self.queue.popleft() for _ in range(min(self.agent.batch_size, len(self.queue)))])
                continue
            item, image = self.staged.popleft()
            self.in_flight[item.id] = item
            yield item.to_sample().model_copy(update={"image": image})

    def _stage(self, chunk: list[EvalItem]) -> None:
        """Decode the chunk's images once (the agent reuses them) and run its baseline.

        A baseline request the infrastructure failed on is tried again a few times; an item
        still without a baseline is left for the rerun rather than run without one.
        """
        images = load_images(chunk)
        # The agent's direct answer is the baseline's very call: asked once, used twice (_row).
        if self.plan.header["baseline"] and not self.agent.settings.direct_answer:
            todo = chunk
            for _ in range(1 + self.agent.settings.infra_retries):
                self.baselines.update(run_baseline(self.agent.answerer, todo, images,
                                                   self.agent.settings.option_scoring))
                todo = [item for item in todo if item.id not in self.baselines]
                if not todo:
                    break
            self.unfinished += [item.id for item in todo]
            chunk = [item for item in chunk if item.id in self.baselines]
        for item in chunk:
            image = images[item.id]
            # An unreadable image goes in as its path: the agent fails that sample with the reason.
            self.staged.append((item, item.image if isinstance(image, Exception) else image))

    def _row(self, item: EvalItem, trace: Trace) -> dict[str, Any]:
        trace.sample = trace.sample.model_copy(update={"image": item.image})  # the path, not the pixels
        baseline = self.baselines.pop(item.id, None)
        if self.plan.header["baseline"] and self.agent.settings.direct_answer:
            baseline = baseline_of(trace)
        return {"index": self.plan.positions.get(item.id), **result_row(item, trace, self.plan.header, baseline)}


def baseline_of(trace: Trace) -> BaselineResult:
    """The baseline of a sample whose trace holds the agent's direct answer: the same question
    to the same answerer, so the same result (a sample that failed before it, fails it too)."""
    direct = trace.direct
    if direct is None:
        return BaselineResult(None, None, trace.error or "the sample stopped before its direct answer", 0.0)
    error = f"answerer failed: {direct.error}" if direct.error else None
    return BaselineResult(direct.answer, direct.choice_index, error, direct.latency_s, direct.input_tokens,
                          direct.output_tokens)


def result_row(item: EvalItem, trace: Trace, header: dict[str, Any], baseline: BaselineResult | None) -> dict[str, Any]:
    """One results line: the item, the agent's prediction and score, the baseline, the trace."""
    sample = trace.sample
    prediction = trace.answer
    choice_index = final_choice_index(trace)
    # A sample the answerer could not work on (its image rejected, no sub-answer at all) and
    # that found no candidate is a failure, not a wrong answer: it is never scored.
    failed = trace.stop_reason == "error" or (trace.stop_reason == "answerer_failed" and prediction is None)
    error = (trace.error or "the sample failed") if failed else None
    vqa_metric = header_field(header, "vqa_metric")
    return {
        "id": item.id, "benchmark": header["benchmark"], "split": header["split"],
        "question_type": item.question_type, "kind": item.kind, "metric": item.metric,
        "question": item.question, "image": item.image, "choices": sample.choices,
        "answers": list(item.answers), "gold_index": item.gold_index,
        "prediction": prediction, "choice_index": choice_index, "confidence": trace.confidence,
        "score": None if failed else score(item.metric, prediction, choice_index, item.answers,
                                           item.gold_index, vqa_metric=vqa_metric),
        "error": error, "stop_reason": trace.stop_reason,
        "baseline": baseline.to_json(item, vqa_metric=vqa_metric) if baseline is not None else None,
        "trace": trace.model_dump(mode="json"),
    }


def final_choice_index(trace: Trace) -> int | None:
    """The option the trace's final answer is, as the loop recorded it (``Trace.choice_index``).

    Only a trace written before that field existed (its JSON has no ``choice_index`` key) has
    its answer matched against the choices again, as the runner used to: matching text can
    pick the wrong option ("3." among "3." and "3" matches "3"), the loop's record cannot.
    """
    if "choice_index" in trace.model_fields_set or not trace.sample.choices or trace.answer is None:
        return trace.choice_index
    return match_choice(trace.answer, trace.sample.choices)


def _version() -> str:
    import idealagent

    return idealagent.__version__
