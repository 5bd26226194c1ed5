"""Images in a local chat model's conversations, for a VLM's processor (the seeing roles of
idealagent/sight.py).

A message may carry LangChain image blocks (``{"type": "image", "base64": ..., "mime_type":
...}``, or OpenAI's ``image_url`` with a ``data:`` URL). ``template_turn`` gives the chat
template an image part where each block is, and ``Pictures`` decodes each distinct block once
per call, in the order the template's image tokens come, for the processor. A conversation
without images renders exactly as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from idealagent.images import decode_base64_image

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage
    from PIL.Image import Image


def block_data(block: Any) -> str | None:
    """The base64 data (or ``data:`` URL) of an image block; None for any other block."""
    if not isinstance(block, dict):
        return None
    if block.get("type") == "image":
        if block.get("base64"):
            return str(block["base64"])
        url = str(block.get("url") or "")
        return url if url.startswith("data:") else None
    if block.get("type") == "image_url":
        url = block.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        return url if isinstance(url, str) and url.startswith("data:") else None
    return None


def image_data(conversation: Sequence[BaseMessage]) -> list[str]:
    """The data of every image block in ``conversation``, in order."""
    return [data for message in conversation if isinstance(message.content, list)
            for data in map(block_data, message.content) if data is not None]


def digests(conversation: Sequence[BaseMessage]) -> list[str]:
    """A hash of each image in ``conversation``, for a response-cache key."""
    return [hashlib.sha256(data.encode("ascii")).hexdigest() for data in image_data(conversation)]


def template_turn(message: BaseMessage, role: str, content_parts: bool) -> dict[str, Any]:
    """One chat-template turn: the text as a string (or one text part with ``content_parts``);
    a message with images as parts in its blocks' order, an image part for each image."""
    blocks = message.content if isinstance(message.content, list) else []
    if not any(block_data(block) is not None for block in blocks):
        return {"role": role, "content": [{"type": "text", "text": message.text}] if content_parts else message.text}
    parts = []
    for block in blocks:
        if block_data(block) is not None:
            parts.append({"type": "image"})
        elif isinstance(block, str) or (isinstance(block, dict) and block.get("type") == "text"):
            parts.append({"type": "text", "text": block if isinstance(block, str) else block.get("text", "")})
    return {"role": role, "content": parts}


class Pictures:
    """The images of one call's conversations, each distinct one decoded once (so the
    processor's ``OncePerImage`` preprocesses it once too)."""

    def __init__(self) -> None:
        self._decoded: dict[str, Image] = {}

    def of(self, conversation: Sequence[BaseMessage]) -> list[Image]:
        """The decoded images of ``conversation``, in the order its template puts them."""
        images = []
        for data in image_data(conversation):
            if data not in self._decoded:
                self._decoded[data] = decode_base64_image(data)
            images.append(self._decoded[data])
        return images
