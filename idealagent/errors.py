"""The error hierarchy. The loop and the CLI decide what to do by type.

- ``InputError``: the user's arguments are wrong (CLI exit code 2); a ``SettingError`` names
  the loop setting it refuses.
- ``ImageError``: an image cannot be found, fetched or decoded (exit code 1; in a batch, that
  sample fails and the others go on).
- ``ModelLoadError``: weights or an optional package are missing (exit code 1).
- ``ModelOutputError``: an LLM's reply could not be turned into the expected record; the roles
  retry and then record a fallback, so this rarely escapes.
- ``InfrastructureError``: a model call failed for reasons that are not the sample's (retries
  exhausted on an overloaded server, out of memory even at batch size 1). Never a result: the
  agent tries the sample again later, and the eval runner leaves it to the rerun.
- ``ServiceDownError``: a model service cannot be used at all (connection refused, key refused,
  unknown model, or many requests failing in a row); the whole run stops.

Every message is one line that tells the user what to do next.
"""

from __future__ import annotations

from typing import Any


class IdealAgentError(Exception):
    """Base class for errors that are the user's or the environment's, not our bugs.

    Deliberately not a ValueError: pydantic would wrap it and bury the one-line message.
    """

    exit_code = 1


class InputError(IdealAgentError):
    """An argument is invalid: empty question, too few choices, threshold out of range..."""

    exit_code = 2


class SettingError(InputError):
    """A loop setting's value is refused: ``setting`` names it, ``problem`` says why, so the
    CLI can name the flag the user typed instead."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting, self.problem = setting, problem


class ImageError(IdealAgentError):
    """An image is missing, unreachable, unreadable or not an image."""


class ModelLoadError(IdealAgentError):
    """Model weights, a tokenizer or an optional dependency is not available."""


class ModelOutputError(IdealAgentError):
    """An LLM reply could not be parsed into the record its role expects."""

    retryable = True  # whether asking again, with the error fed back, may give a usable reply

    def __init__(self, message: str, raw: str = "") -> None:
        super().__init__(message)
        self.raw = raw


class InfrastructureError(IdealAgentError):
    """A model call failed for reasons outside the sample: not a result, to be tried again."""


class ServiceDownError(InfrastructureError):
    """A model service is unreachable, refuses the key or does not serve the model: stop the run."""


# What the clients' own exception classes (openai's, httpx's, LangChain's Model*Error) mean.
_DOWN_NAMES = frozenset({"AuthenticationError", "PermissionDeniedError", "NotFoundError", "ConnectError",
                         "ModelAuthenticationError", "ModelPermissionDeniedError", "ModelNotFoundError"})
_TIMEOUT_NAMES = frozenset({"APITimeoutError", "ModelTimeoutError", "TimeoutException"})
_CONNECTION_NAMES = frozenset({"APIConnectionError", "ModelConnectionError"})
_CLIENT_MODULES = ("openai", "httpx", "httpcore", "langchain_core")


def failure_kind(exc: BaseException) -> str:
    """How the loop treats an exception from a model call: ``"down"`` (stop the run),
    ``"infrastructure"`` (retry the sample later; never a result) or ``"sample"`` (the
    sample's own failure, recorded as its result).

    Our backends raise our own types; a user's chat model (a plain ``ChatOpenAI``) raises its
    client's, read by class and status code (after that client's own retries), and
    out-of-memory errors are known by name.
    """
    if isinstance(exc, ServiceDownError | ModelLoadError):
        return "down"
    if isinstance(exc, InfrastructureError | MemoryError | TimeoutError | ConnectionError):
        return "infrastructure"
    if isinstance(exc, IdealAgentError):
        return "sample"
    classes = type(exc).__mro__
    if any(c.__module__.split(".")[0] in _CLIENT_MODULES for c in classes):
        names = {c.__name__ for c in classes}
        status = getattr(exc, "status_code", None)
        if names & _TIMEOUT_NAMES:
            return "infrastructure"
        if names & (_DOWN_NAMES | _CONNECTION_NAMES) or status in (401, 403, 404):
            return "down"
        if isinstance(status, int) and (status in (408, 409, 429) or status >= 500) or "RateLimitError" in names:
            return "infrastructure"
        return "sample"  # 400, 413, 422, a parser's complaint: about this request only
    if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower():
        return "infrastructure"  # torch.cuda.OutOfMemoryError, or a RuntimeError saying so
    return "sample"


def one_line(value: Any, limit: int = 300) -> str:
    """``value`` as one line of at most ``limit`` characters, for error messages and logs."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
