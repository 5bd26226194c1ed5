"""A package's public names, each imported from its module on first use (PEP 562).

``idealagent`` and ``idealagent.looking`` export names whose modules pull in LangChain or the
prompts; importing them lazily keeps ``idealagent --help`` and the CLI's argument errors fast.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(package: str, homes: Mapping[str, str],
                 names: Iterable[str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``: ``homes`` maps each lazy name to the
    module that defines it; ``names`` are the package's ``__all__``. A name is imported once and
    then kept in the package's namespace, so later look-ups do not come back here."""
    names = tuple(names)

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(homes[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *names})

    return __getattr__, __dir__
