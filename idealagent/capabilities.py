"""What a model backend says it can do, and the checks the agent makes with it when it is made.

A backend declares a ``capabilities`` attribute (a ``Capabilities``); a model that declares
none, such as a user's own LangChain chat model or answerer, is read from what it has (a
``temperature`` field, a ``max_concurrency``). The agent checks its settings against them in
its constructor, so a setting that cannot work fails before any model call, never mid-run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from idealagent.errors import InputError

if TYPE_CHECKING:
    from idealagent.looking.boxes import BoxConvention
    from idealagent.settings import AgentSettings

Structured = Literal["json_schema", "grammar", "probe", "none"]


@dataclass(frozen=True)
class Capabilities:
    """What one model backend can do."""

    # Token log-probabilities of its replies: True, False, or None when it asks and the server
    # may refuse (an endpoint); the confidence signals that need them are absent without them.
    logprobs: bool | None = None
    temperature: bool = False  # it can sample at a temperature set per copy (needed by --votes)
    concurrency: int | None = None  # requests it may have in flight (a server); None: a local model
    images_per_request: int = 1  # images one request may carry (an answerer's question; a chat model's messages)
    # A chat model whose messages may carry images (a VLM): with ``roles_see`` auto, the
    # questioner and reasoner it serves are shown the picture (sight.py). A text LLM: False.
    images: bool = False
    # How it gives a validated JSON reply: a server's json_schema, our local grammar, a server
    # whose form is found by its first request ("probe"), or none (the tolerant text parsers).
    structured: Structured = "none"
    # How an answerer writes a box it is asked for (looking/boxes.py: pixels, norm1000, norm1);
    # None: it does not name boxes, so a search never asks it to.
    boxes: BoxConvention | None = None
    # It scores given options as replies (an answerer's ``option_logprobs``: each option's token
    # log-probabilities given the image and question), so it can choose among them by likelihood.
    likelihood: bool = False
    # It says whether a named thing is in an image, and where (an answerer's ``detect``, giving a
    # ``Detection`` per image): a search scores views with it (look mode ``detect``).
    detects: bool = False


def capabilities_of(model: Any) -> Capabilities:
    """The model's declared capabilities, or those read from what it has."""
    declared = getattr(model, "capabilities", None)
    if isinstance(declared, Capabilities):
        return declared
    return read_capabilities(model)


def read_capabilities(model: Any) -> Capabilities:
    """What a model that declares nothing is taken to do, from what it has: a ``temperature``
    field, a ``max_concurrency``, ``with_structured_output``; never images (a text model)."""
    fields = getattr(type(model), "model_fields", {})
    concurrency = getattr(model, "max_concurrency", None)
    return Capabilities(
        temperature="temperature" in fields,
        concurrency=concurrency if isinstance(concurrency, int) and concurrency >= 1 else None,
        structured="json_schema" if hasattr(model, "with_structured_output") else "none",
    )


def check_models(settings: AgentSettings, *, answerer: Any, questioner: Any, reasoner: Any) -> None:
    """Refuse settings these models cannot honour, with one line that says what to change."""
    if settings.option_scoring == "likelihood" and not capabilities_of(answerer).likelihood:
        raise InputError(f"--scoring likelihood needs an answerer that scores given options (option_logprobs); "
                         f"{type(answerer).__name__} cannot (use --scoring letter)")
    if settings.look_mode == "detect" and settings.zoom != "off" and not capabilities_of(answerer).detects:
        raise InputError(f"--look-mode detect needs an answerer with its own detector (detect); "
                         f"{type(answerer).__name__} has none (use --look-mode auto)")
    if settings.votes and not capabilities_of(reasoner).temperature:
        raise InputError(f"--votes {settings.votes} needs a reasoner model that can sample at a temperature; "
                         f"{type(reasoner).__name__} cannot (use --votes 0)")
    if settings.roles_see == "on":
        for role, model in (("questioner", questioner), ("reasoner", reasoner)):
            if not capabilities_of(model).images:
                raise InputError(f"--roles-see on needs questioner and reasoner models that take images; the "
                                 f"{role}'s {type(model).__name__} does not (use --roles-see auto or off)")
