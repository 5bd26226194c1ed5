"""One evaluation run by several processes of one launch (``accelerate launch``, ``torchrun``).

The launcher gives each process its rank (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``). A rank is a
shard (``--shard RANK/WORLD_SIZE``) that runs into a results file of its own under
``OUT.ranks/``, on its own GPU, with its own copy of the models; rerunning the launch resumes
every rank's file. When all ranks are done, rank 0 writes the rows of all of them into ``OUT``,
in the order of the seeded selection: the file one process would have written.

The ranks meet in a gloo process group (CPU sockets, whatever the accelerator): at the end, to
say how their shards went, and once more while rank 0 merges, so no rank is torn down by the
launcher before the merge is written. A rank that dies breaks the group at once, so the others
stop too; the rows already written stay in the rank files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, MutableMapping
from contextlib import closing
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from idealagent.errors import InfrastructureError, InputError
from idealagent.evaluation.results import (
    ExistingResults,
    ResultsWriter,
    fingerprint_difference,
    read_existing,
    read_file,
)
from idealagent.evaluation.runner import EvalPlan, EvalResult, Progress

log = logging.getLogger(__name__)

# How long a rank waits for the others (the slowest shard, after its own is done) before it
# gives up; IDEALAGENT_RANK_TIMEOUT_S overrides it. Long: shards of equal size finish close
# together, and a rank that dies is noticed at once without it.
DEFAULT_TIMEOUT_S = 24 * 3600.0


@dataclass(frozen=True)
class Rank:
    """This process's place in a launch of several."""

    index: int  # RANK: which shard this process runs
    count: int  # WORLD_SIZE: how many processes, so how many shards
    local: int  # LOCAL_RANK: its place on this machine, so which of its GPUs it uses

    @property
    def shard(self) -> tuple[int, int]:
        """The ``--shard`` this rank runs."""
        return self.index, self.count

    def path(self, out: Path) -> Path:
        """This rank's own results file for the run whose merged results go to ``out``."""
        return ranks_dir(out) / f"shard-{self.index}-of-{self.count}.jsonl"


def launch_rank(environ: Mapping[str, str] = os.environ) -> Rank | None:
    """This process's rank when a launcher started several of them, else None (one process)."""
    count = environ.get("WORLD_SIZE", "1")
    index = environ.get("RANK")
    if count.strip() in ("", "1") or index is None:
        return None
    try:
        rank = Rank(int(index), int(count), int(environ.get("LOCAL_RANK", index)))
    except ValueError:
        raise InputError(f"RANK={index!r}, WORLD_SIZE={count!r} from the launcher are not whole numbers") from None
    if not 0 <= rank.index < rank.count:
        raise InputError(f"RANK={rank.index} is not below WORLD_SIZE={rank.count}")
    return rank


def ranks_dir(out: Path) -> Path:
    """Where the ranks of a launch keep their files: ``results.jsonl`` → ``results.ranks/``."""
    return out.with_suffix(".ranks")


def use_own_gpu(rank: Rank, environ: MutableMapping[str, str] = os.environ) -> None:
    """Let this process see only its own GPU, the LOCAL_RANK-th of those it may use, so a model
    loaded with ``device_map="auto"`` or ``.to("cuda")`` lands there. Must run before CUDA starts."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    devices = [d for d in visible.split(",") if d.strip()] if visible is not None else None
    if devices == []:  # no GPU allowed (e.g. accelerate's --cpu): nothing to choose
        return
    own = devices[rank.local % len(devices)] if devices else str(rank.local)
    environ["CUDA_VISIBLE_DEVICES"] = own
    log.info("rank %d of %d uses GPU %s (if this machine has it)", rank.index, rank.count, own)


def check_out(out: Path, header: dict[str, Any], *, force: bool) -> ExistingResults | None:
    """What ``out`` holds that the merge keeps: its rows if they are this run's configuration
    (a merge never drops a finished sample), None if it is new or ``force``; another
    configuration's results are an InputError, as for one process."""
    if force:
        return None
    existing = read_existing(out)
    if existing.header is None:
        return None
    difference = fingerprint_difference(existing.header, header)
    if difference:
        raise InputError(f"{out} holds results of another configuration ({difference}); "
                         "choose another --out, or pass --force to overwrite it")
    return existing


class RankGroup:
    """The process group the ranks of a launch meet in; use it as a context manager."""

    def __init__(self, rank: Rank, timeout_s: float | None = None) -> None:
        """Join the group (every rank must); ``timeout_s`` bounds every wait on the others."""
        try:
            import torch.distributed as dist
        except ImportError:
            raise InputError("several processes of one launch meet through torch.distributed, which is not "
                             "installed (pip install 'idealagent[local]' installs it)") from None
        self.rank, self._dist = rank, dist
        self.timeout_s = timeout_s if timeout_s is not None else rank_timeout_s()
        try:
            dist.init_process_group("gloo", rank=rank.index, world_size=rank.count,
                                    timeout=timedelta(seconds=self.timeout_s))
        except (RuntimeError, ValueError) as exc:
            raise InfrastructureError(f"rank {rank.index} could not join the other ranks ({exc}); "
                                      "start every rank with the same launcher command") from None

    def __enter__(self) -> RankGroup:
        return self

    def __exit__(self, *_: object) -> None:
        if self._dist.is_initialized():
            self._dist.destroy_process_group()

    def gather(self, report: dict[str, Any]) -> list[dict[str, Any]]:
        """Every rank's ``report`` (JSON-able), in rank order, once all have sent theirs."""
        reports: list[Any] = [None] * self.rank.count
        self._meet(lambda: self._dist.all_gather_object(reports, report))
        return reports

    def barrier(self) -> None:
        """Return when every rank has come here."""
        self._meet(self._dist.barrier)

    def _meet(self, call: Any) -> None:
        try:
            call()
        except RuntimeError as exc:
            # A dead rank closes its sockets: the others hear of it at once, not at the timeout.
            what = (f"waited {self.timeout_s:g}s (IDEALAGENT_RANK_TIMEOUT_S) for the other ranks"
                    if "timed out" in str(exc).lower() else "lost touch with the other ranks (did one stop?)")
            raise InfrastructureError(f"rank {self.rank.index} {what}: {str(exc).splitlines()[0]}") from None


def rank_timeout_s() -> float:
    """``IDEALAGENT_RANK_TIMEOUT_S``, or the default; anything else is an InputError."""
    text = os.environ.get("IDEALAGENT_RANK_TIMEOUT_S")
    if text is None:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise InputError(f"IDEALAGENT_RANK_TIMEOUT_S must be a positive number of seconds, got {text!r}")
    return seconds


def merge(out: Path, header: dict[str, Any], paths: list[Path], kept: ExistingResults | None) -> list[dict[str, Any]]:
    """Write the rows of the rank files ``paths`` (and ``kept``'s, first) to ``out`` in the
    order of the seeded selection, under the header one process writes; returns the rows.

    ``header`` is rank 0's; every rank file must share its fingerprint. A sample in two files
    keeps its first row, as ``idealagent report`` does.
    """
    merged_header = {**header, "shard": [0, 1]}  # what one process writes
    by_id: dict[str, dict[str, Any]] = {}
    for path in ([kept.path] if kept is not None else []) + paths:
        read = read_file(path, strict=True)  # a rank file is whole: its rank finished
        if read.header is None:
            raise InfrastructureError(f"{path} is missing; rerun the same command to run its shard again")
        difference = fingerprint_difference(read.header, header, f"in {path.name}", "in rank 0's")
        if difference:
            raise InputError(f"{path} is from another configuration ({difference}); "
                             "start the ranks with the same arguments, or pass --force")
        if kept is not None and path == kept.path:
            merged_header = read.header  # as when one process resumes: the file keeps its header
        for row in read.rows:
            by_id.setdefault(row["id"], row)
    unique = sorted(by_id.values(), key=lambda row: (row.get("index") is None, row.get("index") or 0))
    with closing(ResultsWriter(ExistingResults(out), merged_header, fresh=True)) as writer:
        writer.extend(unique)
    log.info("merged %d rows from %d rank files into %s", len(unique), len(paths), out)
    return unique


def finish(group: RankGroup, plan: EvalPlan, result: EvalResult, out: Path,
           kept: ExistingResults | None) -> EvalResult | None:
    """Tell the other ranks how this rank's shard went; on rank 0, once all have, merge their
    files into ``out`` and return the whole run's result (None on the other ranks)."""
    reports = group.gather({"path": str(plan.out), "new": result.new, "unfinished": result.unfinished,
                            "seconds": result.seconds})
    if group.rank.index != 0:
        group.barrier()  # rank 0 merges meanwhile; a launcher would stop it if this rank ended first
        return None
    try:
        rows = merge(out, plan.header, [Path(report["path"]) for report in reports], kept)
    finally:
        group.barrier()
    progress = Progress(total=len(plan.positions))
    for row in rows:
        if row["id"] in plan.positions:  # the file may keep samples of a larger --limit
            progress.add(row["score"], (row.get("baseline") or {}).get("score"), row.get("error") is not None,
                         new=False)
    return EvalResult(out, progress.done, sum(r["new"] for r in reports), progress.failures,
                      progress.agent_accuracy, progress.baseline_accuracy, max(r["seconds"] for r in reports),
                      sum(r["unfinished"] for r in reports))
