"""Presets and answerer backends from other installed packages, found through entry points
(the way simonw/llm finds its plugins). Nothing here imports a model library.

Two entry-point groups:

- ``idealagent.presets``: each entry point is a ``Preset``, or a callable returning one Preset
  or several. ``presets.PRESETS`` reads them once, lazily, on its first use; a preset whose
  name a built-in already has is refused with a warning.
- ``idealagent.answerers``: each entry point is a factory (a class or a function) whose keyword
  arguments configure an answerer; ``load_answerer(name, **kwargs)`` calls it. Built-in
  backends have names here too, so a preset's ``build`` can pick a backend by name.

A plugin that fails to load is one warning line and is left out; it never stops the others.
See docs/backends.md for a worked example.
"""

from __future__ import annotations

import functools
import logging
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from idealagent.errors import IdealAgentError, InputError, ModelLoadError, one_line

log = logging.getLogger(__name__)

PRESET_GROUP = "idealagent.presets"
ANSWERER_GROUP = "idealagent.answerers"
# The answerer backends that ship with idealagent, as entry points of their own (loaded only
# when asked for, so naming one imports nothing).
BUILTIN_ANSWERERS = {
    "transformers": "idealagent.answerers.transformers:TransformersAnswerer.from_pretrained",
    "openai": "idealagent.answerers.openai:OpenAIAnswerer.from_env",
    "perception": "idealagent.answerers.perception:PerceptionAnswerer",
}


def load_plugins(group: str) -> list[tuple[str, Any]]:
    """(name, loaded object) of every installed entry point of ``group``, in entry-point order.
    One that does not load is skipped with a warning line (see ``skip``)."""
    loaded = []
    for point in entry_points(group=group):
        try:
            loaded.append((point.name, point.load()))
        except Exception as exc:  # a plugin's bug must not stop idealagent, nor the other plugins
            skip(group, point.name, exc)
    return loaded


def skip(group: str, name: str, exc: Exception) -> None:
    """The one warning line for a plugin that is left out."""
    log.warning("skipping the %s plugin %r: %s: %s", group, name, type(exc).__name__, one_line(exc))


def answerer_names() -> list[str]:
    """The names ``load_answerer`` takes: the built-in backends and the installed plugins'."""
    return sorted(_answerer_points())


def load_answerer(name: str, **kwargs: Any) -> Any:
    """The answerer backend called ``name``, made by its factory with ``kwargs``.

    For example ``load_answerer("transformers", path_or_id="Qwen/Qwen2.5-VL-3B-Instruct")`` or
    ``load_answerer("openai", model="qwen2.5-vl")``. An unknown name is an InputError listing
    the known ones; a plugin that does not load is a ModelLoadError.
    """
    points = _answerer_points()
    if name not in points:
        raise InputError(f"unknown answerer backend {name!r}; choose one of: {', '.join(sorted(points))}")
    try:
        factory = points[name].load()
    except IdealAgentError:  # already one line: a built-in backend whose extra is not installed
        raise
    except Exception as exc:
        raise ModelLoadError(f"the answerer backend {name!r} ({points[name].value}) does not load: "
                             f"{one_line(exc)}") from exc
    return factory(**kwargs)


@functools.cache  # read once: a warning about a plugin is given once
def _answerer_points() -> dict[str, EntryPoint]:
    points = {name: EntryPoint(name, value, ANSWERER_GROUP) for name, value in BUILTIN_ANSWERERS.items()}
    for point in entry_points(group=ANSWERER_GROUP):
        if point.name in points:
            log.warning("ignoring the %s plugin %r (%s): the name is taken", ANSWERER_GROUP, point.name,
                        point.value)
        else:
            points[point.name] = point
    return points
