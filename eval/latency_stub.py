"""An OpenAI-compatible stub whose latency varies like a busy vLLM: log-normal around a median,
with a share of unconfident verdicts so that samples need different numbers of rounds.

It serves every role on one port (POST /v1/chat/completions) and keeps the figures a
throughput benchmark needs (GET /stats): requests, their summed time, the wall time from the
first request to the last reply, and the most in flight at once. Summed request time over wall
time is the mean number of requests in flight. Every draw comes from a hash of the request and
the seed, so a rerun sees the same latencies and verdicts whatever order requests arrive in.

    python eval/latency_stub.py --port 8011 --median 0.2 --sigma 0.8 --unconfident 0.4

Used by eval/bench_pipeline.py; stdlib only, so it runs anywhere.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LatencyStub:
    """The server and its counters; ``serve_forever`` or use as a context manager (a thread)."""

    def __init__(self, *, median: float = 0.2, sigma: float = 0.8, unconfident: float = 0.4, seed: int = 0,
                 port: int = 0, max_latency: float = 10.0) -> None:
        self.median, self.sigma, self.unconfident, self.seed = median, sigma, unconfident, seed
        self.max_latency = max_latency
        self.lock = threading.Lock()
        self.reset()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.server.daemon_threads = True
        self.server.request_queue_size = 256
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def reset(self) -> None:
        """Zero the counters (between two measured runs)."""
        with self.lock:
            self.requests, self.busy_s, self.in_flight, self.most_in_flight = 0, 0.0, 0, 0
            self.first: float | None = None
            self.last: float | None = None
            self.by_role: dict[str, int] = {}
            self.busy_by_role: dict[str, float] = {}

    def stats(self) -> dict[str, Any]:
        """The counters, and the mean requests in flight over the wall time."""
        with self.lock:
            wall = (self.last - self.first) if self.first is not None and self.last is not None else 0.0
            return {"requests": self.requests, "busy_s": round(self.busy_s, 3), "wall_s": round(wall, 3),
                    "mean_in_flight": round(self.busy_s / wall, 2) if wall else 0.0,
                    "most_in_flight": self.most_in_flight, "by_role": dict(self.by_role),
                    "busy_s_by_role": {role: round(busy, 3) for role, busy in self.busy_by_role.items()}}

    def __enter__(self) -> LatencyStub:
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- one request ---------------------------------------------------------------------------

    def reply(self, body: dict[str, Any]) -> tuple[str, float, str]:
        """(role, latency in seconds, reply text) for a request, drawn from its hash."""
        digest = hashlib.sha256(f"{self.seed}:{json.dumps(body, sort_keys=True)}".encode()).digest()
        draw = random.Random(digest)
        latency = min(self.median * math.exp(self.sigma * draw.gauss(0.0, 1.0)), self.max_latency)
        text = _text(body)
        system = _system(body)
        if _has_image(body) and not system:  # a questioner or reasoner that sees has a system prompt
            return "vlm", latency, "A small red shape." if "Describe" in text else "red"
        if "sub_questions" in system:
            # One or two sub-questions, so that about half of all requests go to each server.
            round_number = text.count("Answer:") + 1
            questions = [f"What colour is part {round_number}a?", f"What shape is part {round_number}b?"]
            return "questioner", latency, json.dumps({"sub_questions": questions[: draw.choice((1, 2))]})
        confident = draw.random() >= self.unconfident
        answer = _first_choice(body) or "red"
        return "reasoner", latency, json.dumps({"analysis": "The answers say so.", "answer": answer,
                                                 "confidence": 0.9 if confident else 0.3})


def _text(body: dict[str, Any]) -> str:
    message = body.get("messages", [{}])[-1]
    content = message.get("content")
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content or "")


def _system(body: dict[str, Any]) -> str:
    return " ".join(str(m.get("content")) for m in body.get("messages", []) if m.get("role") == "system")


def _has_image(body: dict[str, Any]) -> bool:
    return any(isinstance(m.get("content"), list) and any(p.get("type") == "image_url" for p in m["content"])
               for m in body.get("messages", []))


def _first_choice(body: dict[str, Any]) -> str | None:
    """The first allowed answer when the verdict's schema is an enum (choice questions)."""
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    enum = ((schema.get("properties") or {}).get("answer") or {}).get("enum")
    return enum[0] if enum else None


def _handler(stub: LatencyStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; without TCP_NODELAY, Nagle's algorithm holds the
        # body until the client's delayed ACK, about 40 ms a request. Real servers set it too.
        disable_nagle_algorithm = True

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/stats"):
                self._send(200, stub.stats())
            else:
                self._send(404, {"error": {"message": "GET /stats only"}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self.path.rstrip("/").endswith("/stats/reset"):
                stub.reset()
                self._send(200, {"reset": True})
                return
            started = time.perf_counter()
            role, latency, text = stub.reply(body)
            with stub.lock:
                stub.requests += 1
                stub.in_flight += 1
                stub.most_in_flight = max(stub.most_in_flight, stub.in_flight)
                stub.by_role[role] = stub.by_role.get(role, 0) + 1
                stub.first = started if stub.first is None else min(stub.first, started)
            time.sleep(latency)
            words = len(text.split())
            self._send(200, {"id": "stub", "object": "chat.completion", "created": int(time.time()),
                             "model": body.get("model", "stub"),
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": text}}],
                             "usage": {"prompt_tokens": 100, "completion_tokens": words,
                                       "total_tokens": 100 + words}})
            ended = time.perf_counter()
            with stub.lock:
                stub.in_flight -= 1
                stub.busy_s += ended - started
                stub.busy_by_role[role] = stub.busy_by_role.get(role, 0.0) + ended - started
                stub.last = ended if stub.last is None else max(stub.last, ended)

        def _send(self, code: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--median", type=float, default=0.2, help="median latency, seconds")
    parser.add_argument("--sigma", type=float, default=0.8, help="log-normal sigma of the latency")
    parser.add_argument("--unconfident", type=float, default=0.4, help="share of verdicts at confidence 0.3")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    stub = LatencyStub(median=args.median, sigma=args.sigma, unconfident=args.unconfident, seed=args.seed,
                       port=args.port)
    print(f"serving {stub.base_url} (GET /v1/stats)", flush=True)
    stub.server.serve_forever()


if __name__ == "__main__":
    main()
