"""Loading a local transformers model quietly, and saying in one line why one cannot be loaded
(shared by ``LocalChatModel`` and ``TransformersAnswerer``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from idealagent.errors import ModelLoadError, one_line

# Loading options that mean the same to the tokenizer and to the model.
SHARED_LOAD_KWARGS = ("local_files_only", "trust_remote_code", "gguf_file", "revision", "cache_dir")


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide transformers' progress bars and warnings while weights load, then restore them:
    the library never prints, and a "Loading weights" bar in a notebook or a log is noise."""
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def require_chat_template(tokenizer: Any, name: str) -> None:
    """Raise ``ModelLoadError`` unless the tokenizer can render conversations."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelLoadError(f"the tokenizer of {name or 'this model'} has no chat template: "
                             "use an instruction-tuned (chat) model")


def load_failure_message(name: str, error: Exception) -> str:
    """One line saying why ``name`` could not be loaded, and what to do about it."""
    if Path(name).expanduser().exists():
        return f"cannot load a model from {name}: {one_line(error) or type(error).__name__}"
    if os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1:
        return (f"model folder {name} not found: pass a folder holding a saved model, "
                "or a Hugging Face id pre-downloaded with `hf download ID`")
    return (f"model {name} is not in the local Hugging Face cache: run "
            f"`hf download {name}` first, or pass a local folder")
