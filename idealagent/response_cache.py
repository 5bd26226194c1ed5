"""A disk cache of deterministic model replies, so that rerunning an evaluation (after
``idealagent calibrate``, or with another ``--threshold``) repeats no greedy model call.

What is cached: replies decoded greedily (local models) or at temperature 0 (servers), each
under a key that hashes the model's identity (class, weights or endpoint, dtype), the rendered
request (the prompt text or message list; an image by its pixels, never its path) and the
generation settings (token limits, structured-output schema, stop strings, logprobs on/off).
Never cached: sampled calls (temperature above 0: the ``--votes`` replies) and failures. A hit
returns what the model returned, token counts and log-probabilities included, so the loop
carries on as if the model had answered.

Storage: one JSON file per key under ``<cache>/responses/ab/cd/<key>.json`` (``$IDEALAGENT_
RESPONSE_CACHE`` moves the folder). A file is written whole to a temp file beside it and
renamed into place, so processes writing at once (accelerate ranks) and a kill -9 leave only
whole entries; a file that is missing, torn or unreadable is a miss, never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from idealagent.paths import cache_root

if TYPE_CHECKING:
    from langchain_core.messages import AIMessage
    from PIL.Image import Image

log = logging.getLogger(__name__)

# Part of every key: a change in what an entry holds (or in how keys are made) bumps it, so
# old entries are simply never found again.
FORMAT = 1
FOLDER_ENV = "IDEALAGENT_RESPONSE_CACHE"
# Files in a local model folder whose change means other weights (or another tokenizer).
WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".json", ".model", ".txt", ".jinja")


class CacheCounts(BaseModel):
    """How many cacheable requests a run found on disk (hits) and sent to a model (misses)."""

    hits: int = 0
    misses: int = 0
    stored: int = 0  # replies written this run (misses that came back as something to keep)

    def line(self) -> str:
        """One line for the end of a run."""
        total = self.hits + self.misses
        share = f" ({self.hits / total:.0%} hits)" if total else ""
        return f"response cache: {self.hits} hits, {self.misses} misses{share}"


class ResponseCache:
    """Model replies on disk, one file per request key, shared by every model of an agent."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._counts = CacheCounts()
        self._lock = threading.Lock()  # endpoint models call from worker threads
        self._write_failed = False

    @classmethod
    def default(cls) -> ResponseCache:
        """The cache in ``$IDEALAGENT_RESPONSE_CACHE``, else ``<cache root>/responses``."""
        return cls(os.environ.get(FOLDER_ENV) or cache_root() / "responses")

    @property
    def counts(self) -> CacheCounts:
        """Hits and misses so far (a copy)."""
        with self._lock:
            return self._counts.model_copy()

    def path(self, key: str) -> Path:
        """Where the entry of ``key`` lives: two levels of fan-out keep folders small."""
        return self.folder / key[:2] / key[2:4] / f"{key}.json"

    def lookup(self, key: str) -> Any | None:
        """The value stored under ``key``, or None (missing, torn, another format)."""
        try:
            entry = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("key") != key or "value" not in entry:
            return None
        return entry["value"]

    def store(self, key: str, value: Any) -> None:
        """Write ``value`` under ``key`` atomically; a failure to write is logged, never raised
        (a run must not stop because its cache could not be written)."""
        target = self.path(key)
        try:
            text = json.dumps({"key": key, "value": value}, ensure_ascii=False)
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=target.parent)
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as file:
                    file.write(text)
                os.replace(temp, target)  # atomic: readers see the old file, or the whole new one
                with self._lock:
                    self._counts.stored += 1
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
        except (OSError, TypeError, ValueError) as exc:
            if not self._write_failed:
                self._write_failed = True
                log.warning("cannot write to the response cache %s (%s); going on without storing",
                            self.folder, exc)

    def fetch(self, key: str, decode: Callable[[Any], Any]) -> Any | None:
        """The decoded reply stored under ``key``, counted as a hit; None (a miss) if there is
        none or it cannot be decoded."""
        found = self._decoded(key, decode)
        with self._lock:
            if found is None:
                self._counts.misses += 1
            else:
                self._counts.hits += 1
        return found

    def through(self, keys: Sequence[str | None], call: Callable[[list[int]], Sequence[Any]], *,
                encode: Callable[[Any], Any], decode: Callable[[Any], Any]) -> list[Any]:
        """Each request's reply: hits from disk, and the misses from one ``call`` with their
        indices (so one batch keeps its batching). A key of None is a request that must not be
        cached (a sampled one). A reply that is an exception is returned, never stored."""
        replies: list[Any] = [None] * len(keys)
        missing: list[int] = []
        for i, key in enumerate(keys):
            found = self.fetch(key, decode) if key is not None else None
            if found is None:
                missing.append(i)
            else:
                replies[i] = found
        if not missing:
            return replies
        fresh = list(call(missing))
        if len(fresh) != len(missing):
            raise RuntimeError(f"{len(fresh)} replies for {len(missing)} requests")
        for i, reply in zip(missing, fresh):
            replies[i] = reply
            key = keys[i]
            if key is not None and not isinstance(reply, BaseException):
                self.store(key, encode(reply))
        return replies

    def _decoded(self, key: str, decode: Callable[[Any], Any]) -> Any | None:
        value = self.lookup(key)
        if value is None:
            return None
        try:
            return decode(value)
        except (KeyError, TypeError, ValueError):  # an entry of another shape: ask the model
            return None


def request_key(identity: Any, request: Any) -> str:
    """The hash of a model's identity and one rendered request (dict order kept: a JSON
    schema's property order changes what constrained decoding emits)."""
    text = json.dumps({"format": FORMAT, "model": identity, "request": request},
                      ensure_ascii=False, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def image_digest(image: Image) -> str:
    """The hash of an image's pixels (mode, size and bytes): the same path with other pixels
    is another image, and the same pixels from another path the same one."""
    digest = hashlib.sha256(f"{image.mode} {image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def weights_identity(name: str, model: Any = None) -> dict[str, Any] | None:
    """What says which weights ``name`` is: for a local folder each weight, config and
    tokenizer file's name, size and modification time; for a hub id its commit. None for a
    model without a name (built in memory): nothing tells its weights apart, so no caching."""
    if not name:
        return None
    folder = Path(name).expanduser()
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
        return {"folder": str(folder.resolve()),
                "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]}
    config = getattr(model, "config", None)
    return {"id": name, "revision": getattr(config, "_commit_hash", None)}


def file_identity(path: str | Path) -> list[Any]:
    """A single weights file's path, size and modification time."""
    stat = Path(path).stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def message_record(message: AIMessage) -> dict[str, Any]:
    """What a cached chat reply keeps: its text, metadata (log-probabilities) and token usage."""
    return {"content": message.content, "response_metadata": message.response_metadata,
            "usage_metadata": message.usage_metadata, "additional_kwargs": message.additional_kwargs}


def message_from_record(record: dict[str, Any]) -> AIMessage:
    """The chat reply a ``message_record`` was made from."""
    from langchain_core.messages import AIMessage

    return AIMessage(**record)
