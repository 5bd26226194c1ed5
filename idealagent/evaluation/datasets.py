"""The benchmarks the evaluation runs on, and seeded, reproducible subsets of them.

``load_benchmark("vqav2", "data/vqav2", "val", limit=500, seed=0)`` reads the official files
(formats.py), drops malformed records into ``LoadResult.skipped`` and picks ``limit`` items so
that a bigger limit with the same seed is a superset of a smaller one: shards and resumed runs
can grow a sample without re-running what is done.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from idealagent.errors import InputError
from idealagent.evaluation import formats, highres, hub, vcr
from idealagent.evaluation.items import EvalItem, Metric

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "EvalItem",
    "LoadResult",
    "Metric",
    "benchmark_names",
    "get_benchmark",
    "load_benchmark",
    "subsample",
]

logger = logging.getLogger(__name__)

Loader = Callable[[Path, str], "tuple[list[EvalItem], list[str]]"]
# Runs on the picked items only, after subsampling: work too costly for the whole split (hf
# writes the images of the picked rows). Returns the items to use.
Materializer = Callable[[Path, str, "list[EvalItem]"], "list[EvalItem]"]
# A benchmark's own figures from its results rows, beside the generic ones (HR-Bench's cycles).
Summary = Callable[["list[dict]"], dict]


@dataclass
class LoadResult:
    """What ``load_benchmark`` picked, and what it had to leave out."""

    items: list[EvalItem]  # deterministic order (file order), after seeded subsampling
    skipped: list[str]  # one "file:where: reason" per malformed record
    total: int  # well-formed records before subsampling


@dataclass(frozen=True)
class Benchmark:
    """A benchmark: where its files come from and how to read one split of them."""

    name: str
    description: str
    splits: tuple[str, ...]  # the scorable splits; the first is the default
    metric: Metric  # the items' metric (jsonl items choose their own)
    source: str  # where to download the data
    loader: Loader = field(repr=False, compare=False, default=formats.load_jsonl)
    needs_data: bool = True  # False: the data ships in an installed package (easy-VQA)
    any_split: bool = False  # True: any split name is a file name (generic jsonl: {split}.jsonl)
    # Splits whose answers are not public, with what to do instead.
    unscored_splits: tuple[str, ...] = ()
    materializer: Materializer | None = field(repr=False, compare=False, default=None)
    data_is_path: bool = True  # False: --data may also name something remote (a Hub dataset id)
    summary: Summary | None = field(repr=False, compare=False, default=None)  # its official score, if special

    @property
    def default_split(self) -> str:
        """The split used when none is given."""
        return self.splits[0]

    def load(self, data_dir: Path, split: str) -> tuple[list[EvalItem], list[str]]:
        """Every well-formed item of ``split`` in file order, and one line per skipped record."""
        return self.loader(data_dir, split)

    def materialize(self, data_dir: Path, split: str, items: list[EvalItem]) -> list[EvalItem]:
        """Prepare the picked items for running (a no-op for most benchmarks)."""
        return self.materializer(data_dir, split, items) if self.materializer else items


def _benchmarks() -> dict[str, Benchmark]:
    coco = "COCO images: https://cocodataset.org/#download"
    entries = [
        Benchmark(
            "vqav2",
            "VQAv2 open-ended questions on COCO 2014 images, VQA accuracy over 10 answers",
            ("val", "train"),
            "vqa",
            f"https://visualqa.org/download.html; {coco}",
            formats.load_vqav2,
            unscored_splits=("test", "test-dev"),
        ),
        Benchmark(
            "okvqa",
            "OK-VQA: questions needing outside knowledge, VQA accuracy, COCO 2014 images",
            ("val", "train"),
            "vqa",
            f"https://okvqa.allenai.org/download.html; {coco}",
            formats.load_okvqa,
        ),
        Benchmark(
            "aokvqa-mc",
            "A-OKVQA multiple choice (4 choices), COCO 2017 images",
            ("val", "train"),
            "choice",
            f"https://github.com/allenai/aokvqa#downloading-the-dataset; {coco}",
            formats.load_aokvqa_mc,
            unscored_splits=("test",),
        ),
        Benchmark(
            "aokvqa-da",
            "A-OKVQA direct answer, VQA accuracy over 10 answers, COCO 2017 images",
            ("val", "train"),
            "vqa",
            f"https://github.com/allenai/aokvqa#downloading-the-dataset; {coco}",
            formats.load_aokvqa_da,
            unscored_splits=("test",),
        ),
        Benchmark(
            "gqa",
            "GQA balanced questions (compositional), exact match",
            ("testdev", "val", "train"),
            "exact",
            "https://cs.stanford.edu/people/dorarad/gqa/download.html",
            formats.load_gqa,
            unscored_splits=("test", "challenge", "submission"),
        ),
        Benchmark(
            "vcr",
            "VCR Q->A: commonsense question, 4 answer choices (IdealGPT's first benchmark)",
            ("val", "train"),
            "choice",
            "https://visualcommonsense.com/download/",
            vcr.load_vcr,
            unscored_splits=("test",),
        ),
        Benchmark(
            "snli-ve",
            "SNLI-VE visual entailment: image premise, text hypothesis (IdealGPT's second)",
            ("dev", "test", "train"),
            "choice",
            "https://github.com/necla-ml/SNLI-VE; Flickr30k images: "
            "https://shannon.cs.illinois.edu/DenotationGraph/",
            formats.load_snli_ve,
        ),
        Benchmark(
            "scienceqa",
            "ScienceQA, the problems with an image: multiple choice, hint as context",
            ("test", "val", "train", "minival", "minitest"),
            "choice",
            "https://scienceqa.github.io/#download",
            formats.load_scienceqa,
        ),
        Benchmark(
            "vstar",
            "V* Bench: small details in high-resolution pictures, options shuffled (seeded), letter match",
            ("test",),
            "choice",
            "https://huggingface.co/datasets/craigwu/vstar_bench (the folder with direct_attributes/ "
            "and relative_position/)",
            highres.load_vstar,
        ),
        Benchmark(
            "hr-bench",
            "HR-Bench 4K/8K: 4-option questions on 4K and 8K pictures, accuracy averaged over cycles",
            ("4k", "8k"),
            "choice",
            "https://huggingface.co/datasets/DreamMMLab/HR-Bench (hr_bench_4k.tsv, hr_bench_8k.tsv)",
            highres.load_hrbench,
            materializer=highres.materialize_hrbench,
            summary=highres.hrbench_summary,
        ),
        Benchmark(
            "easy-vqa",
            "easy-VQA: synthetic shapes and colours, shipped in the easy-vqa package (offline)",
            ("test", "train"),
            "exact",
            "the easy-vqa package (pip install easy-vqa)",
            formats.load_easy_vqa,
            needs_data=False,
        ),
        Benchmark(
            "jsonl",
            "Your own data: one JSON object per line (image, question, answer(s), choices?)",
            ("test",),
            "exact",
            "your own file; see eval/README.md",
            formats.load_jsonl,
            any_split=True,
        ),
        Benchmark(
            "hf",
            "A Hugging Face dataset: Hub id[:config] (cached or downloaded), save_to_disk folder or parquet",
            ("validation",),
            "exact",
            "a Hub dataset id, or a folder from save_to_disk or with parquet files; see eval/README.md",
            hub.load_hub,
            any_split=True,
            materializer=hub.materialize_hub,
            data_is_path=False,
        ),
    ]
    return {b.name: b for b in entries}


BENCHMARKS: dict[str, Benchmark] = _benchmarks()


def benchmark_names() -> list[str]:
    """The known benchmark names, in the order the docs list them."""
    return list(BENCHMARKS)


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called ``name``; an unknown name lists the known ones."""
    try:
        return BENCHMARKS[name.strip().lower()]
    except KeyError:
        raise InputError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}") from None


def subsample(count: int, limit: int | None, seed: int) -> list[int]:
    """Indices of ``limit`` of ``count`` records, in file order.

    The shuffle depends only on (count, seed), and the first ``limit`` of it are taken, so the
    picks for a bigger limit contain those for a smaller one.
    """
    if limit is None or limit >= count:
        return list(range(count))
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return sorted(order[:limit])


def _check_split(benchmark: Benchmark, split: str) -> None:
    if benchmark.any_split or split in benchmark.splits:
        return
    if split in benchmark.unscored_splits:
        raise InputError(
            f"{benchmark.name} {split} has no public answers, so it cannot be scored here; "
            f"use --split {benchmark.default_split} (or submit to the official server)"
        )
    raise InputError(f"{benchmark.name} has no split {split!r}; choose one of: {', '.join(benchmark.splits)}")


def _check_data(benchmark: Benchmark, data_dir: Path | str | None) -> Path | None:
    if not benchmark.needs_data:
        return Path(data_dir) if data_dir is not None else None
    if data_dir is None:
        raise InputError(
            f"{benchmark.name} needs --data: the folder you downloaded it to ({benchmark.source})"
        )
    path = Path(data_dir).expanduser()
    if not benchmark.data_is_path:
        return Path(data_dir)  # the loader tells a folder from an id, and says what is missing
    if not path.exists():
        raise InputError(
            f"data directory {path} does not exist; download {benchmark.name} from {benchmark.source}"
        )
    if not path.is_dir() and benchmark.name != "jsonl":
        raise InputError(f"{path} is a file; --data for {benchmark.name} is the folder holding its files")
    return path


def load_benchmark(
    name: str,
    data_dir: Path | str | None,
    split: str | None = None,
    *,
    limit: int | None = None,
    seed: int = 0,
) -> LoadResult:
    """Load ``split`` of benchmark ``name`` from ``data_dir``; keep a seeded ``limit`` of it.

    Missing files, unknown names or splits raise InputError; malformed records are skipped and
    listed; a split with no usable record at all is an InputError too.
    """
    benchmark = get_benchmark(name)
    split = split or benchmark.default_split
    _check_split(benchmark, split)
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    path = _check_data(benchmark, data_dir)
    items, skipped = benchmark.load(path, split)  # type: ignore[arg-type]  # easy-vqa takes None
    if skipped:
        logger.info(
            "%s %s: skipped %d malformed record(s); first: %s",
            benchmark.name,
            split,
            len(skipped),
            skipped[0],
        )
    if not items:
        reason = f"; first problem: {skipped[0]}" if skipped else ""
        raise InputError(f"{benchmark.name} {split} has no usable records ({len(skipped)} skipped){reason}")
    picked = [items[i] for i in subsample(len(items), limit, seed)]
    picked = benchmark.materialize(path, split, picked)  # type: ignore[arg-type]  # None: easy-vqa
    return LoadResult(items=picked, skipped=skipped, total=len(items))
