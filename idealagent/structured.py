"""Which form of structured output a chat model's server takes, found out once per model.

OpenAI-compatible servers differ. vLLM and SGLang take ``response_format`` of type
``json_schema`` and decode under the schema; llama.cpp's server and llama-cpp-python take
``{"type": "json_object", "schema": ...}`` and refuse ``json_schema`` (HTTP 400, or a 500 from
llama-cpp-python); some take neither. With ``structured="auto"`` the first request to a model
is the probe: it goes alone, in each form in turn, until the server takes one, and every later
request to that model (the questioner's and the reasoner's alike) uses that form. A form the
server refused is not sent again. Replies in every form come back as ``{"raw": message,
"parsed": dict | None}``, as ``with_structured_output(..., include_raw=True)`` gives them.

Only OpenAI-API clients (langchain-openai's ``ChatOpenAI`` and our ``EndpointChatModel``) are
probed: ``response_format`` is their parameter, and a local model constrains its own decoding.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage

from idealagent import parsing
from idealagent.errors import one_line

log = logging.getLogger(__name__)

Form = Literal["json_schema", "json_object", "text"]
FORMS: tuple[Form, ...] = ("json_schema", "json_object", "text")  # the order the probe tries them
_FORMAT_WORDS = re.compile(r"response_format|json_schema|json_object|schema|grammar", re.IGNORECASE)


def rejects_form(status: int | None, message: str) -> bool:
    """Whether an HTTP error status and message say the server does not take the
    ``response_format`` it was sent: 400 or 422, or a 5xx that names the format (llama-cpp-python
    answers ``json_schema`` with a 500 saying "response_format.type: Input should be ...")."""
    if status in (400, 422):
        return True
    return status is not None and status >= 500 and bool(_FORMAT_WORDS.search(message or ""))


def form_rejected(exc: BaseException) -> bool:
    """Whether a failed call (or the error it was wrapped in) is a server refusing the form."""
    for error in _chain(exc):
        status = getattr(error, "status_code", None)
        if isinstance(status, int):
            return rejects_form(status, f"{getattr(error, 'body', '')} {error}")
    return False


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def needs_probe(llm: BaseChatModel) -> bool:
    """Whether ``llm`` talks to an OpenAI-compatible server whose forms must be found out."""
    # An instance of BaseChatOpenAI means its module was imported: never import it just to ask
    # (langchain-openai takes about a second to import, a local model's whole warm run).
    module = sys.modules.get("langchain_openai.chat_models.base")
    return module is not None and isinstance(llm, module.BaseChatOpenAI)


class FormProbe:
    """The form one model's server takes (None until known); shared by every caller of the model."""

    def __init__(self) -> None:
        self.form: Form | None = None
        self.lock = threading.Lock()  # one probe at a time; other callers wait for its result


_probes: dict[int, tuple[weakref.ref, FormProbe]] = {}
_probes_lock = threading.Lock()


def probe_for(llm: BaseChatModel) -> FormProbe:
    """The one FormProbe of ``llm`` (kept as long as ``llm`` lives)."""
    with _probes_lock:
        entry = _probes.get(id(llm))
        if entry is None or entry[0]() is not llm:
            key = id(llm)
            entry = (weakref.ref(llm, lambda _: _forget(key)), FormProbe())
            _probes[key] = entry
        return entry[1]


def _forget(key: int) -> None:
    with _probes_lock:
        entry = _probes.get(key)
        if entry is not None and entry[0]() is None:
            del _probes[key]


class AdaptiveStructured:
    """Batched calls with one JSON schema, in whichever form the model's server takes."""

    def __init__(self, llm: BaseChatModel, schema: dict[str, Any], probe: FormProbe, role: str) -> None:
        self.llm = llm
        self.schema = schema
        self.probe = probe
        self.role = role
        self._runnables: dict[Form, Any] = {}

    def batch(self, inputs: Sequence[list[BaseMessage]], *, return_exceptions: bool = True) -> list[Any]:
        """One reply per conversation: ``{"raw", "parsed"}``, or the exception of a failed call."""
        inputs = list(inputs)
        if self.probe.form is None and inputs:
            with self.probe.lock:  # held for the probe only, not for the rest of the batch
                probed = self._find_form(inputs[0]) if self.probe.form is None else None
            if probed is not None:
                first, form = probed
                return [first, *self._send(form, inputs[1:])]
        return self._send(self.probe.form or FORMS[0], inputs)

    def _find_form(self, conversation: list[BaseMessage]) -> tuple[Any, Form]:
        """Send one conversation in each form until the server takes one; (its reply, the form)."""
        for form in FORMS:
            [reply] = self._send(form, [conversation])
            if isinstance(reply, Exception) and form != "text" and form_rejected(reply):
                log.warning("%s: the server refuses response_format %s (%s); trying the next form",
                            self.role, form, one_line(reply, 200))
                continue
            if not isinstance(reply, Exception):
                log.info("%s: structured output as %s", self.role, form)
                self.probe.form = form
            # A failure of another kind (server down, a broken reply) says nothing about the form:
            # the form stays unknown and the next call probes again.
            return reply, form
        raise AssertionError("unreachable: the text form is never skipped")

    def _send(self, form: Form, inputs: list[list[BaseMessage]]) -> list[Any]:
        if not inputs:
            return []
        replies = self._runnable(form).batch(inputs, return_exceptions=True)
        return [reply if isinstance(reply, Exception) else _as_structured(reply) for reply in replies]

    def _runnable(self, form: Form) -> Any:
        # The model bound to a response_format, its reply parsed here: what with_structured_output
        # sends, without its parallel runnable, which starts threads for every request.
        if form not in self._runnables:
            if form == "json_schema":
                body = {key: value for key, value in self.schema.items() if key != "title"}
                runnable = self.llm.bind(response_format={"type": "json_schema", "json_schema": {
                    "name": self.schema.get("title", "Reply"), "strict": False, "schema": body}})
            elif form == "json_object":
                runnable = self.llm.bind(response_format={"type": "json_object", "schema": self.schema})
            else:
                runnable = self.llm
            self._runnables[form] = runnable
        return self._runnables[form]


def _as_structured(message: Any) -> dict[str, Any]:
    """A text reply in the shape structured output gives: the message and the JSON it holds."""
    text = parsing.message_text(message)
    return {"raw": message if isinstance(message, AIMessage) else AIMessage(text),
            "parsed": parsing.extract_json(text)}
