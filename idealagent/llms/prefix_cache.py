"""Shared-prefix KV caching for batched generation.

Every conversation a role sends starts with the same system prompt and few-shot exemplars; only
the last user turn differs. The states of that shared prefix are computed once (batch 1),
copied per row, and kept across calls, so prefill, which dominates on a CPU, is paid for the
varying suffixes only. Rows are padded *after* the prefix; generate derives positions from the
attention mask's running sum, so the pads in the middle shift nothing.
"""

from __future__ import annotations

import inspect
import os
import threading
from collections import OrderedDict
from typing import Any

# A shared prefix shorter than this is cheaper to prefill per row than to prefill on its own.
MIN_SHARED_PREFIX = 32
# Prefixes kept across calls: one or two per role (questioner, reasoner, ...) and task kind.
PREFIX_CACHE_ENTRIES = 6


class SharedPrefixes:
    """The per-layer key/value states (batch 1) of a few prompt prefixes, least recently used
    first; kept per model instance, never mutated, so any call may reuse them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[tuple[int, ...], tuple] = OrderedDict()
        self.lock = threading.Lock()  # abatch runs batches in worker threads

    def lookup(self, tokens: list[int], minimum: int) -> tuple[tuple[int, ...], int, tuple | None]:
        """The stored prefix sharing most leading tokens with ``tokens`` (among equals the
        shortest, so a prefix matched whole wins), how many it shares, and their states;
        ``((), 0, None)`` if none shares ``minimum`` tokens."""
        tokens = tuple(tokens)
        with self.lock:
            matches = [(len(os.path.commonprefix([key, tokens])), -len(key), key) for key in self.entries]
            matched, _, key = max(matches, default=(0, 0, ()))
            if matched < max(minimum, 1):
                return (), 0, None
            self.entries.move_to_end(key)
            states = self.entries[key]
        if matched < len(key):
            # Causal attention: a prefix's states do not depend on what follows it.
            states = tuple((k[:, :, :matched].clone(), v[:, :, :matched].clone()) for k, v in states)
        return key, matched, states

    def put(self, tokens: list[int], states: tuple) -> None:
        """Store ``states`` for ``tokens``, dropping the least recently used entry if full."""
        with self.lock:
            self.entries[tuple(tokens)] = states
            self.entries.move_to_end(tuple(tokens))
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)


def pad_after_prefix(rows: list[list[int]], shared: int, pad_id: int) -> tuple[Any, Any]:
    """``(input_ids, attention_mask)``, each (rows, longest row): every row is left-padded after
    its first ``shared`` tokens, so with ``shared=0`` this is plain left padding. generate takes
    positions from the mask's running sum, so the pads in the middle shift nothing."""
    import torch

    width = max(map(len, rows))
    ids = [row[:shared] + [pad_id] * (width - len(row)) + row[shared:] for row in rows]
    mask = [[1] * shared + [0] * (width - len(row)) + [1] * (len(row) - shared) for row in rows]
    return torch.tensor(ids), torch.tensor(mask)


def shared_prefix(model: Any, store: SharedPrefixes, rows: list[list[int]]) -> tuple[int, Any]:
    """How many leading tokens the rows share, and a cache of their states for every row.

    ``(0, None)`` means the plain path. A stored prefix is reused as far as it matches; a
    longer prefix shared by this chunk's rows is prefilled on top of it, at batch 1.
    """
    if cache_keyword(model) is None:
        return 0, None
    common = os.path.commonprefix(rows)[: min(map(len, rows)) - 1]  # each row keeps a token
    key, matched, states = store.lookup(common, MIN_SHARED_PREFIX)
    if matched < len(key):  # what two calls share is the role's prompt: keep that part
        store.put(common[:matched], states)
    # Prefill what this chunk's rows share beyond that, unless it is one row's own tail
    # (a lone prompt is stored only when nothing matched: the first call of its role).
    if len(common) - matched >= MIN_SHARED_PREFIX and (len(rows) > 1 or states is None):
        states = prefill(model, common[matched:], states)
        matched = len(common)
        store.put(common, states)
    if states is None:
        return 0, None
    return matched, dynamic_cache(model, states, rows=len(rows))


def prefill(model: Any, tokens: list[int], past: tuple | None) -> tuple:
    """Per-layer ``(keys, values)`` of ``tokens`` after ``past``, at batch 1."""
    import torch

    cache = dynamic_cache(model, past, rows=1)
    options = {cache_keyword(model): cache, "use_cache": True}
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        options["logits_to_keep"] = 1  # only the states matter; skip (tokens, vocab) logits
    with torch.inference_mode():  # positions continue from the cache's length
        model(input_ids=torch.tensor([tokens], device=model.device), **options)
    return tuple((layer.keys, layer.values) for layer in cache.layers)


def dynamic_cache(model: Any, states: tuple | None, *, rows: int) -> Any:
    """A fresh ``DynamicCache`` holding ``states`` once per row; ``states`` stay untouched."""
    from transformers import DynamicCache

    if states is None:
        return DynamicCache(config=model.config)
    # repeat copies: generate appends to the cache, and stored states must never change.
    copies = [(k.repeat(rows, 1, 1, 1), v.repeat(rows, 1, 1, 1)) for k, v in states]
    return DynamicCache(copies, config=model.config)


def cache_keyword(model: Any) -> str | None:
    """The keyword that hands ``forward`` a KV cache, or None if a shared prefix cannot be
    cached: only full-attention ``DynamicLayer`` states can be cut and copied per row."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    supports = getattr(model, "_supports_default_dynamic_cache", lambda: False)
    if (model.config.is_encoder_decoder or not supports()
            or model.generation_config.cache_implementation is not None):
        return None
    layers = DynamicCache(config=model.config).layers
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return None
    parameters = inspect.signature(model.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)
