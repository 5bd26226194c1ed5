"""Scripted fakes for tests: a chat model and an answerer that replay queued replies and record
every call, so tests assert behaviour (what was asked, how often) rather than just running.

Exported for users' own tests too. Nothing here touches a real model.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr

from idealagent.capabilities import Capabilities, read_capabilities

Reply = str | Exception | Callable[[list[BaseMessage]], str]

# The loop as IdealGPT ran it: no direct answer, and the reasoner's stated confidence decides.
# Tests of the loop's mechanics use it so their scripted replies mean what they meant.
IDEALGPT_LOOP: dict[str, object] = {"direct_answer": False, "calibration": "stated"}


class ScriptedChatModel(BaseChatModel):
    """Replies with the next queued reply; records each conversation and each batch.

    A reply is a string, an exception to raise, or a function of the conversation. ``batch``
    runs in order on one thread (so the queue order is the call order) and counts as one call.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    replies: list[Any] = Field(default_factory=list)
    temperature: float = 0.0  # not used: there so that the agent's --votes can sample from it
    # Images a conversation may carry: 0 plays a text LLM (blind roles); above 0 a VLM, so the
    # roles it serves are shown the picture (roles_see auto) and the reasoner that many - 1 views.
    images: int = 0
    _queue: deque[Reply] = PrivateAttr()
    calls: list[list[BaseMessage]] = Field(default_factory=list)  # every conversation seen
    batches: list[int] = Field(default_factory=list)  # the size of every batch call

    def model_post_init(self, context: Any) -> None:
        self._queue = deque(self.replies)

    @property
    def capabilities(self) -> Capabilities:
        """What a chat model with these fields is read as (a subclass's ``max_concurrency``
        included), and whether it takes images."""
        return dataclasses.replace(read_capabilities(self), images=self.images > 0,
                                   images_per_request=max(self.images, 1))

    def queue(self, *replies: Reply) -> None:
        """Append more replies."""
        self._queue.extend(replies)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls.append(list(messages))
        if not self._queue:
            raise AssertionError(f"ScriptedChatModel ran out of replies after {len(self.calls) - 1} calls")
        reply = self._queue.popleft()
        if isinstance(reply, Exception):
            raise reply
        text = reply(messages) if callable(reply) else reply
        words = sum(len(m.text.split()) for m in messages)  # an image block is not words
        usage = {"input_tokens": words, "output_tokens": len(text.split()), "total_tokens": words + len(text.split())}
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text, usage_metadata=usage))])

    def batch(self, inputs: list[Any], config: Any = None, *, return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        """Invoke each input in order (one thread), recording the batch size."""
        self.batches.append(len(inputs))
        results: list[Any] = []
        for item in inputs:
            try:
                results.append(self.invoke(item, **kwargs))
            except Exception as exc:
                if not return_exceptions or isinstance(exc, AssertionError):
                    raise
                results.append(exc)
        return results


class ScriptedAnswerer:
    """An Answerer whose answers come from a function of the question (or a fixed string)."""

    def __init__(self, answer: str | Callable[[str], str] = "unknown", caption: str = "a test image") -> None:
        self._answer = answer
        self._caption = caption
        self.requests: list[list[str]] = []  # the questions of every answer() call
        self.captioned: list[int] = []  # the batch size of every caption() call

    def answer(self, requests: Sequence[tuple[Any, str]]) -> list[str]:
        """Answer each question with the scripted function."""
        questions = [question for _, question in requests]
        self.requests.append(questions)
        return [self._answer(q) if callable(self._answer) else self._answer for q in questions]

    def caption(self, images: Sequence[Any]) -> list[str]:
        """The fixed caption for every image."""
        self.captioned.append(len(images))
        return [self._caption for _ in images]


def flat(batches: Iterable[list[str]]) -> list[str]:
    """All questions an answerer saw, flattened."""
    return [q for batch in batches for q in batch]
