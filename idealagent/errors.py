"""The error hierarchy. The loop and the CLI decide what to do by type.

- ``InputError``: the user's arguments are wrong (CLI exit code 2).
- ``ImageError``: an image cannot be found, fetched or decoded (exit code 1; in a batch, that
  sample fails and the others go on).
- ``ModelLoadError``: weights or an optional package are missing (exit code 1).
- ``ModelOutputError``: an LLM's reply could not be turned into the expected record; the roles
  retry and then record a fallback, so this rarely escapes.

Every message is one line that tells the user what to do next.
"""

from __future__ import annotations


class IdealAgentError(Exception):
    """Base class for errors that are the user's or the environment's, not our bugs.

    Deliberately not a ValueError: pydantic would wrap it and bury the one-line message.
    """

    exit_code = 1


class InputError(IdealAgentError):
    """An argument is invalid: empty question, too few choices, threshold out of range..."""

    exit_code = 2


class ImageError(IdealAgentError):
    """An image is missing, unreachable, unreadable or not an image."""


class ModelLoadError(IdealAgentError):
    """Model weights, a tokenizer or an optional dependency is not available."""


class ModelOutputError(IdealAgentError):
    """An LLM reply could not be parsed into the record its role expects."""

    def __init__(self, message: str, raw: str = "") -> None:
        super().__init__(message)
        self.raw = raw
