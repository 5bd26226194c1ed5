"""High-resolution benchmarks with small objects, where looking closer pays: V* Bench and HR-Bench.

- V* Bench (penghao-wu/vstar): folders ``direct_attributes/`` and ``relative_position/`` of
  ``sa_*.jpg`` pictures, each with a same-named ``.json`` holding ``question``, ``options``
  (the FIRST is the right one), ``target_object`` and ``bbox`` (x, y, w, h). The options are
  shuffled with a seed per item (the official order would give the answer away to the loop's
  LLMs). Scored both ways, by ``--scoring``: ``letter`` (the default; the options go into the
  question and the reply is matched to one) or ``likelihood``, the official protocol: the bare
  question, each option scored as the answerer's reply, the one with the highest log-probability
  per token chosen (for the baseline, the direct answer and the closer look's answer; needs an
  answerer that declares ``Capabilities.likelihood``). The report says which.
- HR-Bench 4K/8K (DreamMMLab/HR-Bench): ``hr_bench_4k.tsv`` / ``hr_bench_8k.tsv`` (or the
  ``.parquet`` files) with columns index, question, answer (a letter), A, B, C, D, category
  (single, cross), cycle_category and image (base64). The same question comes back in each
  cycle with its options rotated; the official score (VLMEvalKit's ``report_acc_hrbench``) is
  the accuracy within each cycle_category (overall and per category), averaged over the
  cycles: ``hrbench_summary``. Only the picked rows' images are written out (to the cache).
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import logging
import random
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from idealagent.errors import InputError, one_line
from idealagent.evaluation.items import BadRecord, EvalItem, ItemCollector, field, read_json, string_list
from idealagent.evaluation.rows import agent_scores, baseline_scores

__all__ = ["hrbench_summary", "load_hrbench", "load_vstar", "materialize_hrbench"]

logger = logging.getLogger(__name__)

Loaded = tuple[list[EvalItem], list[str]]
VSTAR_TYPES = ("direct_attributes", "relative_position")
VSTAR_SHUFFLE_SEED = 0  # the options' order is a function of this and the item's id only
HRBENCH_LETTERS = ("A", "B", "C", "D")
HRBENCH_IMAGE_DIR = "hr-bench-images"  # under the idealagent cache root


# --- V* Bench -----------------------------------------------------------------------------------


def vstar_order(item_id: str, count: int, seed: int = VSTAR_SHUFFLE_SEED) -> list[int]:
    """The shuffled order of an item's ``count`` options: a function of its id and ``seed`` only."""
    order = list(range(count))
    random.Random(f"{seed}:{item_id}").shuffle(order)
    return order


def load_vstar(data_dir: Path, split: str) -> Loaded:
    """V* Bench from the official folder (``split`` is ``test``, its only split); question_type is
    the subfolder (direct_attributes or relative_position)."""
    folders = [data_dir / name for name in VSTAR_TYPES if (data_dir / name).is_dir()]
    if not folders:
        raise InputError(f"{data_dir} holds neither {' nor '.join(VSTAR_TYPES)}: expected the V* Bench folder "
                         "(see eval/README.md for the layout)")
    collector = ItemCollector()

    def build(path: Path, test_type: str) -> EvalItem:
        record = read_json(path)
        options = string_list(record, "options")
        item_id = f"{test_type}/{path.stem}"
        order = vstar_order(item_id, len(options))
        choices = [options[i] for i in order]
        image = next((p for p in sorted(path.parent.glob(f"{path.stem}.*")) if p.suffix.lower() != ".json"),
                     path.with_suffix(".jpg"))
        return EvalItem(id=item_id, image=str(image), question=field(record, "question"), kind="multiple_choice",
                        choices=choices, answers=[options[0]], gold_index=order.index(0), metric="choice",
                        question_type=test_type)

    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            collector.add(f"{folder.name}/{path.name}", lambda p=path, t=folder.name: build(p, t))
    return collector.result()


# --- HR-Bench -----------------------------------------------------------------------------------


def _hrbench_file(data_dir: Path, split: str) -> Path:
    """``hr_bench_<split>.tsv`` or ``.parquet`` in ``data_dir`` (or ``data_dir`` itself, a file)."""
    if data_dir.is_file():
        return data_dir
    for suffix in (".tsv", ".parquet"):
        path = data_dir / f"hr_bench_{split}{suffix}"
        if path.is_file():
            return path
    raise InputError(f"{data_dir / f'hr_bench_{split}.tsv'} not found (nor .parquet): expected HR-Bench's "
                     "file there (see eval/README.md for the layout)")


def _rows(path: Path, with_image: bool) -> Iterator[dict[str, Any]]:
    """The file's rows as dicts, streamed; the image column only when ``with_image``."""
    if path.suffix == ".parquet":
        yield from _parquet_rows(path, with_image)
        return
    csv.field_size_limit(sys.maxsize)  # a base64 8K picture is tens of megabytes in one field
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                if not with_image:
                    row.pop("image", None)
                yield row
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text; is it HR-Bench's TSV?") from None
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror}") from None


def _parquet_rows(path: Path, with_image: bool) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("reading HR-Bench's parquet needs pyarrow: pip install 'idealagent[hub]', "
                         "or use the .tsv file") from None
    table = pq.ParquetFile(path)
    columns = [name for name in table.schema_arrow.names if with_image or name != "image"]
    for batch in table.iter_batches(batch_size=16, columns=columns):
        yield from batch.to_pylist()


def _image_folder(path: Path) -> Path:
    """Where a file's images are written: keyed by its name and size, so a new download gets new ones."""
    from idealagent.llms.smollm2 import cache_root

    key = hashlib.sha256(f"{path.resolve()}:{path.stat().st_size}".encode()).hexdigest()[:12]
    return cache_root() / HRBENCH_IMAGE_DIR / f"{path.stem}-{key}"


def load_hrbench(data_dir: Path, split: str) -> Loaded:
    """HR-Bench ``split`` (4k or 8k), without decoding any image; question_type is
    "<category>/<cycle_category>" (what ``hrbench_summary`` groups by)."""
    path = _hrbench_file(data_dir, split)
    images = _image_folder(path)
    collector = ItemCollector()

    def build(row: dict[str, Any]) -> EvalItem:
        index = _text(row.get("index"))
        if not index:
            raise BadRecord("missing field 'index'")
        choices = [_text(row.get(letter)) for letter in HRBENCH_LETTERS]
        answer = _text(row.get("answer")).upper()
        if answer not in HRBENCH_LETTERS:
            raise BadRecord(f"answer {answer!r} is not one of {', '.join(HRBENCH_LETTERS)}")
        category = _text(row.get("category")) or "unknown"
        cycle = _text(row.get("cycle_category"))
        if not cycle:
            raise BadRecord("missing field 'cycle_category'")
        gold = HRBENCH_LETTERS.index(answer)
        return EvalItem(id=index, image=str(images / f"{index}.jpg"), question=_text(row.get("question")),
                        kind="multiple_choice", choices=choices, answers=[choices[gold]], gold_index=gold,
                        metric="choice", question_type=f"{category}/{cycle}")

    for number, row in enumerate(_rows(path, with_image=False), start=2):
        collector.add(f"{path.name}:{number}", lambda r=row: build(r))
    return collector.result()


def materialize_hrbench(data_dir: Path, split: str, items: list[EvalItem]) -> list[EvalItem]:
    """Write the picked items' images that are not there yet, as the bytes the file holds (JPEG);
    a row whose image cannot be decoded is logged and left missing, so its sample fails.

    As in VLMEvalKit's TSVs, a row's image may be the index of another row that holds it."""
    wanted: dict[str, list[Path]] = defaultdict(list)  # the row that holds an image -> where it goes
    for item in items:
        if not Path(item.image).exists():
            wanted[Path(item.image).stem].append(Path(item.image))
    if not wanted:
        return items
    path = _hrbench_file(data_dir, split)
    for _ in range(2):  # a second pass for references to rows that came earlier in the file
        for row in _rows(path, with_image=True):
            index, image = _text(row.get("index")), row.get("image")
            targets = wanted.pop(index, None)
            if targets is None:
                continue
            reference = _text(image) if isinstance(image, (str, int)) else ""
            if len(reference) <= 64 and reference.isdigit() and reference != index:  # another row's picture
                wanted[reference].extend(targets)
                continue
            for target in targets:
                _write_image(path, index, image, target)
            if not wanted:
                return items
    for index in wanted:
        logger.warning("%s: no image for row %s; its samples will fail", path.name, index)
    return items


def _text(value: Any) -> str:
    """A cell as text ("" for a missing one); parquet gives ints where the TSV gives strings."""
    return "" if value is None else str(value).strip()


def _image_bytes(value: Any) -> bytes:
    """The encoded picture in a cell: base64 text (the TSV), raw bytes, or a ``{"bytes"}`` struct."""
    if isinstance(value, dict):
        value = value.get("bytes")
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
        return raw if raw.startswith((b"\xff\xd8\xff", b"\x89PNG")) else base64.b64decode(raw, validate=False)
    return base64.b64decode(str(value or ""), validate=False)


def _write_image(path: Path, index: str, image: Any, target: Path) -> None:
    try:
        data = _image_bytes(image)
        if not data:
            raise ValueError("the row has no image")
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        with open(handle, "wb") as out:
            out.write(data)
        Path(temp).replace(target)  # atomic: a half-written picture never looks finished
    except (OSError, ValueError, binascii.Error) as err:
        logger.warning("%s row %s: cannot write its image (%s); that sample will fail", path.name, index,
                       one_line(err))


def hrbench_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """HR-Bench's official figures: accuracy within each cycle_category, overall ("all") and per
    category, then their average over the cycles; for the baseline too where rows have one."""
    def per_cycle(scores: list[float]) -> dict[str, dict[str, float]]:
        groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for row, value in zip(rows, scores):
            category, _, cycle = str(row.get("question_type") or "").rpartition("/")
            groups[cycle]["all"].append(value)
            groups[cycle][category or "unknown"].append(value)
        return {cycle: {name: sum(v) / len(v) for name, v in sorted(kinds.items())}
                for cycle, kinds in sorted(groups.items())}

    def averaged(cycles: dict[str, dict[str, float]]) -> dict[str, float]:
        names = sorted({name for figures in cycles.values() for name in figures})
        return {name: sum(f[name] for f in cycles.values() if name in f) / sum(name in f for f in cycles.values())
                for name in names}

    agent = per_cycle(agent_scores(rows)[0])
    summary: dict[str, Any] = {"metric": "accuracy per cycle_category, averaged over cycles",
                               "cycles": agent, "average": averaged(agent)}
    if any(isinstance(row.get("baseline"), dict) for row in rows):
        baseline = per_cycle(baseline_scores(rows)[0])
        summary["baseline_cycles"], summary["baseline_average"] = baseline, averaged(baseline)
    return summary
