"""Talking to an OpenAI-compatible endpoint (vLLM, SGLang, TGI, or OpenAI itself): what both
endpoint backends share, needing only the ``openai`` client (not langchain-openai).

- ``RetryPolicy``: retries with exponential backoff and jitter (tenacity) on 408/409/429, 5xx,
  timeouts and dropped connections, waiting at least as long as a ``Retry-After`` header asks;
  other errors (400, 401, 404) fail at once. The openai client's own retries are off so that
  there is one retry policy, and a concurrency slot is not held while waiting. A 5xx that names
  the response_format is a refusal of the form (idealagent/structured.py) and is not retried.
- one-line errors (``endpoint_error``, ``not_json_error``): an endpoint that answers with a
  non-JSON body raises ``ModelOutputError``; an unreachable or unauthorised one
  ``ServiceDownError``, and one still overloaded after every try ``InfrastructureError``
  (neither is ever a result).
- ``Endpoint``: where a role's model is served and how to talk to it, the options both
  backends' constructors take, declared and checked once; ``endpoint_from_env`` reads one from
  the environment.

The chat model is ``idealagent.llms.openai.EndpointChatModel``; the answerer
``idealagent.answerers.openai.OpenAIAnswerer``; the preset ``openai`` in idealagent/presets.py.

Environment (read by ``endpoint_from_env``, and so by ``chat_model_from_env`` and the answerer's
``from_env``), for a prefix P of ``IDEALAGENT_LLM`` (questioner, reasoner) or ``IDEALAGENT_VLM``
(answerer):

- ``P_BASE_URL``: the server's OpenAI API root, e.g. ``http://gpu-box:8000/v1`` (required)
- ``P_MODEL``: the served model name (required)
- ``P_API_KEY``: optional; else ``EMPTY`` (what local servers expect). ``OPENAI_API_KEY`` is
  used only for OpenAI's own API (``https://api.openai.com``): a key for OpenAI is never sent
  to another server, nor over plain http
- ``P_MAX_CONCURRENCY`` (16), ``P_TIMEOUT`` seconds (60), ``P_ATTEMPTS`` tries per request (5),
  ``P_RETRY_WAIT`` seconds before the first retry (0.5; it doubles each retry),
  ``P_MAX_TOKENS`` (512 for the LLM, 32 for the VLM)
- ``P_LOGPROBS``: ``0`` never asks the server for token log-probabilities (the answers'
  probabilities are then unknown); by default they are asked for, and a server that refuses
  them with a 400 is not asked again

Whatever one prefix leaves unset comes from the other, so a single VLM server can serve every
role with one set of variables; except that ``MAX_TOKENS`` belongs to its role, and a key (and
``LOGPROBS``) is borrowed only together with the base URL it belongs to.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from tenacity import AsyncRetrying, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from idealagent.errors import (
    IdealAgentError,
    InfrastructureError,
    InputError,
    ModelLoadError,
    ModelOutputError,
    ServiceDownError,
    one_line,
)
from idealagent.structured import rejects_form

try:
    import openai
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ModelLoadError(
        "OpenAI-compatible endpoints need the openai client: pip install 'idealagent[openai]'"
    ) from exc

log = logging.getLogger(__name__)

T = TypeVar("T")
LLM_PREFIX, VLM_PREFIX = "IDEALAGENT_LLM", "IDEALAGENT_VLM"
LOCAL_API_KEY = "EMPTY"  # vLLM/SGLang/TGI accept any key unless started with one
OPENAI_API_HOST = "api.openai.com"  # the one host OPENAI_API_KEY is sent to (over https)
# Status codes worth another try: request timeout, conflict, rate limit; 5xx are added below.
TRANSIENT_STATUS = {408, 409, 429}

# -- retries ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently one request is retried. Tests shrink the waits."""

    attempts: int = 5  # tries per request, the first included
    initial_wait: float = 0.5  # seconds before the first retry; doubles each time, plus jitter
    max_wait: float = 20.0  # cap on one wait

    def _options(self, describe: str) -> dict[str, Any]:
        def before_sleep(state: Any) -> None:  # one line a retry with --verbose; the outcome is what counts
            log.info("%s: %s (retry %d of %d)", describe, one_line(state.outcome.exception()),
                        state.attempt_number, self.attempts - 1)

        backoff = wait_exponential_jitter(multiplier=self.initial_wait, max=self.max_wait, jitter=self.initial_wait)

        def wait(state: Any) -> float:
            # Retry-After is a lower bound, not permission to come straight back: a server that
            # sends "Retry-After: 0" with every 429 would otherwise burn every try in a moment.
            asked = retry_after(state.outcome.exception())
            return max(min(asked, self.max_wait), backoff(state)) if asked is not None else backoff(state)

        return {
            "stop": stop_after_attempt(self.attempts),
            "wait": wait,
            "retry": retry_if_exception(is_transient),
            "reraise": True,
            "before_sleep": before_sleep,
        }

    def call(self, request: Callable[[], T], describe: str) -> T:
        """Run ``request``, retrying transient failures; the last failure becomes a one-line error."""
        try:
            return Retrying(**self._options(describe))(request)
        except openai.APIError as exc:
            raise endpoint_error(exc, describe, self.attempts) from exc

    async def acall(self, request: Callable[[], Any], describe: str) -> Any:
        """The async twin of ``call``: ``request`` returns an awaitable."""
        try:
            async for attempt in AsyncRetrying(**self._options(describe)):
                with attempt:
                    return await request()
        except openai.APIError as exc:
            raise endpoint_error(exc, describe, self.attempts) from exc
        raise AssertionError("unreachable: tenacity either returns or raises")


def untyped_messages(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` for the openai client's ``chat.completions`` methods, with the messages sent
    as they are (through ``extra_body``, which the client merges into the body last) rather
    than walked by the client's typed transform.

    Our messages are plain JSON already, so the transform changes nothing in them, but it
    walks every message against each of the message types, with typing introspection at each
    level: about a third of the client process's CPU against a busy server (eval/bench_pipeline.py),
    and done while the request holds a concurrency slot, so the slot's server sat idle. The
    body sent is the same.
    """
    if "messages" not in options:
        return options
    extra = dict(options.get("extra_body") or {})
    extra["messages"] = options["messages"]
    return {**options, "messages": [], "extra_body": extra}


def retry_after(exc: BaseException | None) -> float | None:
    """Seconds an error response asks the client to wait (``Retry-After`` in seconds or as an
    HTTP date, or OpenAI's ``retry-after-ms``), or None if it does not say."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    try:
        if millis is not None:
            return max(float(millis) / 1000, 0.0)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(float(value), 0.0)
        except ValueError:
            from datetime import datetime, timezone
            from email.utils import parsedate_to_datetime

            return max((parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds(), 0.0)
    except (TypeError, ValueError):
        return None  # a header we cannot read: fall back to our own backoff


def is_transient(exc: BaseException) -> bool:
    """Whether another try may succeed: overload, server error, timeout, dropped connection;
    not a 5xx that refuses the ``response_format`` (llama-cpp-python's answer to json_schema)."""
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500 and rejects_form(exc.status_code, _server_message(exc)):
            return False
        return exc.status_code in TRANSIENT_STATUS or exc.status_code >= 500
    return isinstance(exc, openai.APIConnectionError)  # includes APITimeoutError


def endpoint_error(exc: openai.APIError, describe: str, attempts: int) -> IdealAgentError:
    """A one-line error that says what went wrong with the endpoint and what to check.

    A service that cannot be used (no connection, key refused, unknown model) is a
    ``ServiceDownError``; retries exhausted on a transient fault an ``InfrastructureError``;
    both mean "not a result". Any other refusal is about this request: ``ModelOutputError``.
    """
    tries = f" after {attempts} tries" if is_transient(exc) and attempts > 1 else ""
    if isinstance(exc, openai.APITimeoutError):
        return InfrastructureError(f"{describe}: timed out{tries}; raise the timeout or add server capacity")
    if isinstance(exc, openai.APIConnectionError):
        return ServiceDownError(f"{describe}: cannot connect{tries}; check that the server is up and the base URL")
    status = getattr(exc, "status_code", None)
    detail = one_line(_server_message(exc))
    if status in (401, 403):
        return ServiceDownError(f"{describe}: HTTP {status}, the API key was refused ({detail}); check the key")
    if status == 404:
        return ServiceDownError(
            f"{describe}: HTTP 404 ({detail}); check the model name and that the base URL ends in /v1"
        )
    if is_transient(exc):
        return InfrastructureError(f"{describe}: HTTP {status}{tries} ({detail}); the server is overloaded or failing")
    return ModelOutputError(f"{describe}: the request was rejected with HTTP {status}: {detail}",
                            raw=str(getattr(exc, "body", "") or "")[:2000])


def not_json_error(exc: Exception, describe: str) -> ModelOutputError | None:
    """The one-line error for a 200 reply whose body is not JSON, if that is what ``exc`` is.

    The openai client hands a non-JSON body on as a string (and its parse helpers then fail
    on it in various ways); a JSON content type over a broken body raises JSONDecodeError.
    """
    response = getattr(exc, "response", None)  # langchain-openai attaches the HTTP response
    content_type = str(getattr(response, "headers", {}).get("content-type", ""))
    if isinstance(exc, json.JSONDecodeError) or (response is not None and "json" not in content_type):
        body = getattr(response, "text", "") if response is not None else ""
        return ModelOutputError(f"{describe}: the reply is not JSON: {one_line(body or exc, 120)}",
                                raw=str(body)[:2000])
    return None


def _server_message(exc: openai.APIError) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        return str(message or body)
    return str(body or exc.message)



class LogprobsSwitch:
    """Whether requests to one server ask for token log-probabilities: as configured, until the
    server refuses them (a 400 that names them); then never again, said once at INFO (the
    answers' probabilities are then unknown). Thread-safe."""

    def __init__(self, on: bool = True) -> None:
        self.on = on
        self._lock = threading.Lock()

    def refused(self, exc: Exception, describe: str) -> bool:
        """Whether ``exc`` (a 400) is the server refusing ``logprobs``; if so, turn them off."""
        if "logprobs" not in f"{getattr(exc, 'message', exc)} {getattr(exc, 'body', '')}".lower():
            return False
        with self._lock:
            first, self.on = self.on, False
        if first:
            log.info("%s refuses logprobs (%s); asking without them from now on", describe, one_line(exc, 160))
        return True


# -- configuration from the environment -------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """Where a role's model is served and how to talk to it: the options both endpoint backends
    take (``OpenAIAnswerer`` and ``make_chat_model`` pass these keywords on), checked when made."""

    base_url: str  # the server's OpenAI API root, e.g. http://gpu-box:8000/v1
    model: str  # the served model's name
    api_key: str = field(default=LOCAL_API_KEY, repr=False)  # never in a repr, a log or a trace
    max_concurrency: int = 16  # most requests in flight at once
    timeout: float = 60.0  # seconds one request may take
    attempts: int = RetryPolicy.attempts  # tries per request; only transient failures are retried
    max_tokens: int = 512  # per reply
    retry_initial_wait: float = RetryPolicy.initial_wait  # seconds before the first retry; it doubles
    retry_max_wait: float = RetryPolicy.max_wait  # cap on one wait between tries
    logprobs: bool = True  # ask for token log-probabilities

    def __post_init__(self) -> None:
        object.__setattr__(self, "api_key", self.api_key or LOCAL_API_KEY)  # "" or None: a local server's
        if not self.model or not self.model.strip():
            raise InputError("no model name given for the endpoint; pass the name the server serves")
        if not self.base_url.startswith(("http://", "https://")):
            raise InputError(f"base URL {self.base_url!r} must start with http:// or https:// "
                             "(e.g. http://host:8000/v1)")
        if self.max_concurrency < 1 or self.attempts < 1 or self.max_tokens < 1:
            raise InputError("max_concurrency, attempts and max_tokens must be at least 1")
        if self.timeout <= 0:
            raise InputError(f"timeout must be positive, got {self.timeout}")
        if self.retry_initial_wait < 0 or self.retry_max_wait < 0:
            raise InputError("retry_initial_wait and retry_max_wait must not be negative")

    @property
    def retry(self) -> RetryPolicy:
        """The retry settings as one value."""
        return RetryPolicy(self.attempts, self.retry_initial_wait, self.retry_max_wait)


ENDPOINT_OPTIONS = frozenset(spec.name for spec in fields(Endpoint))


def endpoint_options(options: dict[str, Any]) -> dict[str, Any]:
    """Take ``Endpoint``'s keywords out of ``options`` (what is left is the backend's own)."""
    return {name: options.pop(name) for name in ENDPOINT_OPTIONS & set(options)}


def endpoint_from_env(prefix: str = LLM_PREFIX, *, model: str | None = None, max_tokens: int = Endpoint.max_tokens,
                      environ: Mapping[str, str] | None = None) -> Endpoint:
    """The endpoint described by ``<prefix>_*`` variables (see the module docstring); ``model``
    replaces the served model's name."""
    env = os.environ if environ is None else environ
    other = VLM_PREFIX if prefix == LLM_PREFIX else LLM_PREFIX

    def get(name: str, fallback: bool = True) -> str:
        value = env.get(f"{prefix}_{name}", "").strip()
        return value or (env.get(f"{other}_{name}", "").strip() if fallback else "")

    base_url, model = get("BASE_URL"), model or get("MODEL")
    missing = [f"{prefix}_{name}" for name, value in (("BASE_URL", base_url), ("MODEL", model)) if not value]
    if missing:
        raise InputError(f"set {' and '.join(missing)} (or the {other}_* twin) to use an OpenAI-compatible server")
    borrowed_url = base_url == env.get(f"{other}_BASE_URL", "").strip()
    openai_key = env.get("OPENAI_API_KEY", "").strip() if is_openai_api(base_url) else ""
    api_key = get("API_KEY", fallback=borrowed_url) or openai_key or LOCAL_API_KEY

    def number(name: str, kind: type, default: float, fallback: bool = True) -> Any:
        raw = get(name, fallback)
        try:
            return kind(raw) if raw else kind(default)
        except ValueError:
            raise InputError(f"{prefix}_{name} or {other}_{name} = {raw!r} is not a {kind.__name__}; "
                             "fix or unset it") from None

    def switch(name: str) -> bool:
        raw = get(name, fallback=borrowed_url).lower()  # a server's switch, as its key
        if raw in ("", "1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise InputError(f"{prefix}_{name} = {raw!r} is not 0 or 1; fix or unset it")

    retry_wait = number("RETRY_WAIT", float, Endpoint.retry_initial_wait)
    if retry_wait < 0:
        raise InputError(f"{prefix}_RETRY_WAIT must not be negative, got {retry_wait}")
    return Endpoint(
        base_url=base_url, model=model, api_key=api_key,
        max_concurrency=number("MAX_CONCURRENCY", int, Endpoint.max_concurrency),
        timeout=number("TIMEOUT", float, Endpoint.timeout), attempts=number("ATTEMPTS", int, Endpoint.attempts),
        max_tokens=number("MAX_TOKENS", int, max_tokens, fallback=False), retry_initial_wait=retry_wait,
        logprobs=switch("LOGPROBS"),
    )


def is_openai_api(base_url: str) -> bool:
    """Whether ``base_url`` is OpenAI's own API over https: the only place OPENAI_API_KEY goes."""
    try:
        parts = urllib.parse.urlsplit(base_url.strip())
        return parts.scheme.lower() == "https" and parts.hostname == OPENAI_API_HOST and not parts.username
    except ValueError:  # an unparsable URL (a bad port) is nobody's
        return False


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` in it masked, for messages, logs and reprs."""
    try:
        parts = urllib.parse.urlsplit(url)
        if "@" not in parts.netloc:
            return url
        return urllib.parse.urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))
    except ValueError:
        return "<unparsable URL>"
