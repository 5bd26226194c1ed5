"""Hugging Face ``datasets`` as a benchmark: a Hub id (from the local HF cache, or downloaded), a
``save_to_disk`` folder, or parquet files.

Columns are mapped by name (``QUESTION_COLUMNS`` ...), and each row becomes a record of the
generic jsonl shape, so ``formats.generic_item`` infers kind and metric exactly as for the
user's own jsonl. Images are not decoded while loading: only the non-image columns are read
for every row, and after ``load_benchmark`` has picked its seeded subset, ``materialize_hub``
writes just the picked rows' images as PNG files into the idealagent cache (reused later).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from idealagent.errors import InputError, ModelLoadError, one_line
from idealagent.evaluation.formats import generic_item
from idealagent.evaluation.items import BadRecord, EvalItem, ItemCollector
from idealagent.trace import ENTAILMENT_LABELS, YES_NO

__all__ = ["load_hub", "materialize_hub", "open_split"]

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'idealagent[hub]'"
IMAGE_DIR = "hf-images"  # under the idealagent cache root
# The first column present of each tuple is used; eval/README.md lists the same names.
QUESTION_COLUMNS = ("question", "query", "hypothesis", "sentence2")
GOLD_COLUMNS = ("answers", "answer", "label", "multiple_choice_answer")
CHOICE_COLUMNS = ("choices", "options")
ID_COLUMNS = ("question_id", "id", "qid")
TYPE_COLUMNS = ("question_type", "answer_type", "category")
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")

Loaded = tuple[list[EvalItem], list[str]]


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise ModelLoadError(f"reading Hugging Face datasets needs the datasets package: {INSTALL_HINT}") from None
    return datasets


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", ".", "~", "\\")) or text.endswith(".parquet") or "\\" in text


def open_split(data: Path | str, split: str) -> tuple[Any, str]:
    """The ``datasets.Dataset`` of ``split`` that ``data`` names, and a file-safe, content-keyed
    name for it (the folder its images are cached under)."""
    datasets = _datasets()
    text = str(data)
    local = Path(text).expanduser()
    if local.exists():
        dataset = _open_local(datasets, local, split)
        label, key = local.name, str(local.resolve())
    elif _looks_like_path(text):
        raise InputError(f"{local} does not exist; --data for hf is a local dataset folder or a Hub dataset id")
    else:
        dataset = _open_hub(datasets, text, split)
        label, key = text.replace("/", "--").replace(":", "--"), text
    # The fingerprint changes with the content, so an edited dataset never reuses stale images.
    digest = hashlib.sha1(f"{key}\0{getattr(dataset, '_fingerprint', '')}".encode()).hexdigest()[:10]
    safe = re.sub(r"[^\w.-]+", "-", label).strip("-") or "dataset"
    return dataset, f"{safe}-{digest}"


def _open_local(datasets: Any, path: Path, split: str) -> Any:
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        loaded = datasets.load_from_disk(str(path))  # written by save_to_disk
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise InputError(f"{path} has no split {split!r}; choose one of: {', '.join(loaded)}")
            return loaded[split]
        return loaded  # a single Dataset: it is the split, whatever its name
    if path.is_file() and path.suffix != ".parquet":
        raise InputError(f"{path} is not a parquet file; --data for hf is a dataset folder, parquet file or Hub id")
    if path.is_dir() and not any(path.rglob("*.parquet")):
        raise InputError(f"{path} holds neither a save_to_disk dataset nor parquet files")
    try:
        if path.is_file():
            return datasets.load_dataset("parquet", data_files={split: str(path)}, split=split)
        # A folder as the Hub lays it out ({split}-00000-of-00001.parquet, data/...): the
        # packaged loader finds each split's files by name.
        return datasets.load_dataset(str(path), split=split)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        raise InputError(f"cannot read {split!r} from {path}: {one_line(err)}") from None


def _open_hub(datasets: Any, text: str, split: str) -> Any:
    repo, _, config = text.partition(":")
    if not _HUB_ID.match(repo):
        raise InputError(f"{text!r} is neither an existing folder nor a Hub dataset id (owner/name[:config])")
    try:
        return datasets.load_dataset(repo, config or None, split=split)
    except (ConnectionError, FileNotFoundError) as err:  # offline and not cached, or no such dataset
        raise InputError(
            f"cannot load Hub dataset {repo!r} ({one_line(err)}): it is not in the local Hugging Face cache "
            f"and the Hub did not provide it; check the id, or run `hf download --repo-type dataset {repo} "
            f"--local-dir DIR` where there is a network and pass --data DIR"
        ) from None
    except (ValueError, RuntimeError) as err:  # unknown split or config, a script dataset
        raise InputError(f"cannot load {split!r} of Hub dataset {text!r}: {one_line(err)}") from None


def _first(names: tuple[str, ...], columns: list[str]) -> str | None:
    return next((name for name in names if name in columns), None)


def _image_column(datasets: Any, features: Any) -> tuple[str | None, bool]:
    """The image column and whether it holds image data (else paths or URLs as text)."""
    for name, feature in features.items():
        if isinstance(feature, datasets.Image):
            return name, True
    return ("image", False) if "image" in features else (None, False)


class _RowMapper:
    """Turns one row of the non-image columns into a record of the generic jsonl shape."""

    def __init__(self, datasets: Any, features: Any, where: str) -> None:
        columns = list(features)
        self.question = _first(QUESTION_COLUMNS, columns)
        self.gold = _first(GOLD_COLUMNS, columns)
        self.choices = _first(CHOICE_COLUMNS, columns)
        self.id = _first(ID_COLUMNS, columns)
        self.type = _first(TYPE_COLUMNS, columns)
        missing = [what for what, column in (("question", self.question), ("gold answer", self.gold))
                   if column is None]
        if missing:
            raise InputError(
                f"{where}: no {' or '.join(missing)} column found among {', '.join(columns)}; "
                "see eval/README.md for the column names hf reads"
            )
        feature = features[self.gold] if self.gold == "label" else None
        self.label_names: list[str] | None = (
            list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
        )
        # A ClassLabel of the entailment or yes/no labels is that task kind (SNLI-VE on the Hub).
        names = {n.lower() for n in self.label_names or ()}
        self.label_kind = ("entailment" if names == set(ENTAILMENT_LABELS)
                           else "yes_no" if names == set(YES_NO) else None)

    def columns(self) -> list[str]:
        """The columns a record needs."""
        return [c for c in (self.question, self.gold, self.choices, self.id, self.type) if c is not None]

    def record(self, row: dict[str, Any]) -> dict[str, Any]:
        """The generic record of ``row``; ``BadRecord`` when its gold cannot be read."""
        record: dict[str, Any] = {"question": row[self.question]}  # type: ignore[index]
        choices = row.get(self.choices) if self.choices else None
        if choices is not None:
            record["choices"] = choices
        if self.id and row.get(self.id) is not None:
            record["id"] = row[self.id]
        if self.type and row.get(self.type) is not None:
            record["question_type"] = str(row[self.type])
        gold = row[self.gold]  # type: ignore[index]
        if self.gold == "answers" or (self.gold == "answer" and isinstance(gold, list)):
            # VQAv2 on the Hub: [{"answer": ..., "answer_confidence": ..., "answer_id": ...}, ...]
            if isinstance(gold, list) and gold and all(isinstance(a, dict) for a in gold):
                gold = [a.get("answer") for a in gold]
            record["answers"] = gold
        elif self.gold == "label" and self.label_names is not None and choices is None:
            if not isinstance(gold, int) or not 0 <= gold < len(self.label_names):
                raise BadRecord(f"label {gold!r} is not a class (-1 means no gold label)")
            record["answer"] = self.label_names[gold]
            if self.label_kind:
                record["kind"] = self.label_kind
        else:
            record["answer"] = gold
        return record


def load_hub(data: Path, split: str) -> Loaded:
    """Every usable row of ``split`` in row order, images not yet written; one
    ``NAME:split:row N: reason`` per skipped row."""
    datasets = _datasets()
    dataset, safe_name = open_split(data, split)
    name = str(data)
    image_column, has_pixels = _image_column(datasets, dataset.features)
    if image_column is None:
        raise InputError(
            f"{name} {split}: no image column found among {', '.join(dataset.features)}; "
            "hf reads the first Image column, or a column named 'image'"
        )
    mapper = _RowMapper(datasets, dataset.features, f"{name} {split}")
    wanted = mapper.columns() + ([] if has_pixels else [image_column])
    rows = dataset.select_columns(list(dict.fromkeys(wanted))).to_list()  # no image is decoded
    image_dir = _cache_root() / IMAGE_DIR / safe_name / split
    local = Path(name).expanduser()
    collector = ItemCollector()

    def build(number: int, row: dict[str, Any]) -> EvalItem:
        if has_pixels:
            image = str(image_dir / f"{number}.png")  # written by materialize_hub if picked
        else:
            image = row.get(image_column)
            if not isinstance(image, str) or not image:
                raise BadRecord(f"column {image_column!r} holds no image path")
            if local.is_dir() and not re.match(r"^https?://", image) and not Path(image).is_absolute():
                image = str(local / image)
        return generic_item(mapper.record(row), str(number), image)

    for number, row in enumerate(rows):
        collector.add(f"{name}:{split}:row {number}", lambda n=number, r=row: build(n, r))
    return collector.result()


def _cache_root() -> Path:
    from idealagent.paths import cache_root

    return cache_root()


def materialize_hub(data: Path, split: str, items: list[EvalItem]) -> list[EvalItem]:
    """Write the picked items' images (``<row>.png`` in the cache) that are not there yet.

    An image that cannot be decoded or written is logged and left missing, so its sample fails
    when it runs, as a missing image file does for the other benchmarks.
    """
    image_root = _cache_root() / IMAGE_DIR
    todo = {int(Path(item.image).stem): Path(item.image) for item in items
            if Path(item.image).is_relative_to(image_root) and not Path(item.image).exists()}
    if not todo:
        return items
    datasets = _datasets()
    dataset, _ = open_split(data, split)
    column, _ = _image_column(datasets, dataset.features)
    rows = sorted(todo)
    raw = dataset.select_columns([column]).cast_column(column, datasets.Image(decode=False)).select(rows)
    for row, value in zip(rows, raw[column], strict=True):
        try:
            _write_png(value, todo[row])
        except (OSError, ValueError, TypeError) as err:
            logger.warning("%s %s row %d: cannot write its image (%s); that sample will fail", data, split, row,
                           one_line(err))
    logger.info("wrote %d image(s) of %s %s under %s", len(rows), data, split, image_root)
    return items


def _write_png(value: Any, target: Path) -> None:
    """Decode one undecoded Image value ({"bytes", "path"}) and save it as PNG, atomically."""
    import io

    from PIL import Image

    if not isinstance(value, dict) or not (value.get("bytes") or value.get("path")):
        raise ValueError("the row has no image")
    source = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
    with Image.open(source) as image:
        image.load()
        if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"):
            image = image.convert("RGB")  # CMYK, YCbCr, F...: PNG cannot hold them
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=target.parent, suffix=".png.tmp")
        os.close(handle)
        try:
            image.save(temp, format="PNG")
            os.replace(temp, target)  # a killed run never leaves a half-written PNG behind
        finally:
            if os.path.exists(temp):
                os.remove(temp)
