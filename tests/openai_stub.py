"""A stub OpenAI-compatible server for tests: POST /v1/chat/completions on 127.0.0.1.

It records every request body, counts how many requests are in flight at once, and replies
according to a script: queued behaviours first (one per request, in arrival order), then
``reply(body)``, a function of the request that returns a text or a behaviour. Replies carry
real ``usage`` fields (whitespace-separated words stand in for tokens).

    with StubServer() as stub:
        stub.queue(Status(429), Status(503))   # the next two requests fail, then...
        stub.reply = lambda body: "red"        # ...every request gets "red"

``refuse`` makes it a server without some forms of structured output: a request whose
``response_format`` type is a key gets that behaviour instead (before the script), e.g.
``StubServer(refuse={"json_schema": LLAMA_CPP_PYTHON_REFUSAL})``. The key ``"logprobs"``
refuses requests that ask for log-probabilities: ``refuse={"logprobs": LOGPROBS_REFUSAL}``.

A request with ``logprobs: true`` gets ``choices[i].logprobs`` in OpenAI's shape: the reply
cut into words (each with the whitespace before it), ``STUB_LOGPROB`` each; ``logprobs=False``
makes a server that never sends them.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from typing_extensions import Self


@dataclass(frozen=True)
class Status:
    """Answer with this HTTP error status and an OpenAI-style error body."""

    code: int
    message: str = "stub error"
    retry_after: str | None = None  # the Retry-After header to send with it, if any


@dataclass(frozen=True)
class Slow:
    """Wait ``seconds`` (longer than the client's timeout, usually), then reply ``text``."""

    seconds: float
    text: str = "late"


@dataclass(frozen=True)
class NotJSON:
    """A 200 whose body is not JSON, under this content type."""

    content_type: str = "text/html"
    body: str = "<html><body>502 Bad Gateway</body></html>"


@dataclass(frozen=True)
class Completion:
    """A 200 completion with these choices (``[]`` for none) instead of one text choice."""

    choices: list[dict[str, Any]]


NO_CHOICES = Completion(choices=[])
EMPTY_CONTENT = Completion(choices=[{"index": 0, "message": {"role": "assistant", "content": ""},
                                     "finish_reason": "stop"}])
Behaviour = str | Status | Slow | NotJSON | Completion
# What llama-cpp-python's server answers to response_format {"type": "json_schema", ...}.
LLAMA_CPP_PYTHON_REFUSAL = Status(500, "response_format.type: Input should be 'text' or 'json_object'")
# A server without log-probabilities, refusing the request that asks for them.
LOGPROBS_REFUSAL = Status(400, "logprobs is not supported by this model")
STUB_LOGPROB = -0.1  # every token's log-probability, when asked for


def token_logprobs(text: str) -> dict[str, Any]:
    """OpenAI's ``logprobs`` object for ``text``: its words as tokens (joined, they are the
    text), each with ``STUB_LOGPROB``."""
    tokens = re.findall(r"\s*\S+|\s+", text)
    return {"content": [{"token": t, "logprob": STUB_LOGPROB, "bytes": list(t.encode()), "top_logprobs": []}
                        for t in tokens], "refusal": None}


def format_of(body: dict[str, Any]) -> str | None:
    """The request's response_format type ("json_schema", "json_object", ...), or None."""
    response_format = body.get("response_format")
    return response_format.get("type") if isinstance(response_format, dict) else None


def text_of(body: dict[str, Any]) -> str:
    """All text in a request's messages (text parts of multimodal content included)."""
    parts = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            parts += [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        elif content:
            parts.append(str(content))
    return "\n".join(parts)


def count_tokens(text: str) -> int:
    return len(text.split())


class StubServer:
    """The server; use as a context manager (it serves on a thread while inside)."""

    def __init__(self, reply: Callable[[dict[str, Any]], Behaviour] | None = None, latency: float = 0.0,
                 port: int = 0, refuse: dict[str, Behaviour] | None = None, logprobs: bool = True) -> None:
        self.reply: Callable[[dict[str, Any]], Behaviour] = reply or (lambda body: "ok")
        self.latency = latency  # seconds every request takes, so that concurrency shows
        self.refuse = dict(refuse or {})  # response_format type, or "logprobs" -> the behaviour refusing it
        self.logprobs = logprobs  # send logprobs when a request asks for them
        self.requests: list[dict[str, Any]] = []  # every request body, in arrival order
        self.in_flight = 0
        self.max_in_flight = 0
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))  # 0: any free port
        self._server.daemon_threads = True  # a client that timed out must not block shutdown
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def queue(self, *behaviours: Behaviour) -> None:
        """The next requests get these behaviours, one each, before ``reply`` is used again."""
        with self._lock:
            self._script.extend(behaviours)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _begin(self, body: dict[str, Any]) -> Behaviour:
        with self._lock:
            self.requests.append(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            refusal = self.refuse.get(format_of(body) or "")
            if refusal is None and body.get("logprobs"):
                refusal = self.refuse.get("logprobs")
            if refusal is not None:
                return refusal
            scripted = self._script.popleft() if self._script else None
        return scripted if scripted is not None else self.reply(body)

    def _end(self) -> None:
        with self._lock:
            self.in_flight -= 1


def _handler(stub: StubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; without TCP_NODELAY, Nagle's algorithm holds the
        # body until the client's delayed ACK, about 40 ms a request. Real servers set it too.
        disable_nagle_algorithm = True  # keep-alive, as real servers do

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, "application/json", json.dumps({"error": {"message": f"no route {self.path}"}}))
                return
            try:
                behaviour = stub._begin(body)
                time.sleep(stub.latency)
                if isinstance(behaviour, Slow):
                    time.sleep(behaviour.seconds)
                    behaviour = behaviour.text
            finally:
                stub._end()  # before replying: the client may send its next request at once
            self._respond(body, behaviour)

        def _respond(self, body: dict[str, Any], behaviour: Behaviour) -> None:
            if isinstance(behaviour, Status):
                error = {"error": {"message": behaviour.message, "type": "stub", "code": behaviour.code}}
                headers = {"Retry-After": behaviour.retry_after} if behaviour.retry_after is not None else {}
                self._send(behaviour.code, "application/json", json.dumps(error), headers)
            elif isinstance(behaviour, NotJSON):
                self._send(200, behaviour.content_type, behaviour.body)
            else:
                choices = behaviour.choices if isinstance(behaviour, Completion) else [
                    {"index": 0, "message": {"role": "assistant", "content": behaviour}, "finish_reason": "stop"}
                ]
                if body.get("logprobs") and stub.logprobs:
                    choices = [{"logprobs": token_logprobs(c["message"]["content"] or ""), **c} for c in choices]
                prompt = count_tokens(text_of(body))
                completion = sum(count_tokens(c["message"]["content"] or "") for c in choices)
                reply = {
                    "id": f"chatcmpl-{len(stub.requests)}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", "stub"), "choices": choices,
                    "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                              "total_tokens": prompt + completion},
                }
                self._send(200, "application/json", json.dumps(reply))

        def _send(self, code: int, content_type: str, text: str, headers: dict[str, str] | None = None) -> None:
            data = text.encode()
            try:
                self.send_response(code)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)

    return Handler
