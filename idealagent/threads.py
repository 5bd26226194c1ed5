"""A thread pool whose threads never hold up the interpreter's exit.

``concurrent.futures.ThreadPoolExecutor`` joins its threads at exit, so after Ctrl-C a process
waits for every blocking request in flight (a slow server's reply can take minutes). A call
sent here that nobody waits for any more simply dies with the process.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class DaemonPool:
    """Runs submitted calls on up to ``workers`` daemon threads, started as needed."""

    def __init__(self, workers: int, name: str) -> None:
        self.workers = workers
        self.name = name
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, call: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``call(*args)`` on a pool thread, in the caller's context (its context variables,
        such as a request's priority: limits.py); its Future holds the result or the exception."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the {self.name} pool is shut down")
            self._work.put((future, contextvars.copy_context().run, (call, *args)))
            if self._work.qsize() > self._idle and len(self._threads) < self.workers:
                thread = threading.Thread(target=self._serve, name=f"{self.name}-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
        return future

    def shutdown(self) -> None:
        """Drop the calls that have not started; running ones end on their own. No wait."""
        with self._lock:
            self._closed = True
            while True:
                try:
                    item = self._work.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
            for _ in self._threads:
                self._work.put(None)

    def _serve(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            item = self._work.get()
            with self._lock:
                self._idle -= 1
            if item is None:
                return
            future, call, args = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call(*args))
                except BaseException as exc:  # handed to whoever waits for the Future
                    future.set_exception(exc)
