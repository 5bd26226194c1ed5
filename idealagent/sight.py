"""Roles that see: the questioner and the reasoner shown the picture (the ``roles_see`` setting).

IdealGPT's questioner and reasoner were blind only because ChatGPT was. When a role's model
takes images (``Capabilities.images``: the local VLM chat model of the one-model presets, a
served VLM), the role is shown the picture beside its prompt, and the reasoner also the best
views the search looked at (``looked_at``), as many as the model's ``images_per_request``
leaves room for. Each image is cut and sized as the search cuts views (``Picture.view``, to the
model's own view size, within ``ROLE_MAX_PIXELS``) and goes into the role's last user turn as a
LangChain image block, before its text, in the order the prompt names them (its ``sight``
variable). A blind role's prompt is the one it always was, byte for byte. What each role was
shown is recorded in ``Trace.shown``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.messages import BaseMessage, HumanMessage

from idealagent.capabilities import capabilities_of
from idealagent.images import encode_image
from idealagent.looking.boxes import Box
from idealagent.looking.closer import view_size_of
from idealagent.looking.views import Picture, ViewSize
from idealagent.trace import Look, Search, Shown

if TYPE_CHECKING:
    from idealagent.agent import IdealAgent
    from idealagent.machine import Job
    from idealagent.roles import Outcome
    from idealagent.settings import RolesSeeMode

Role = Literal["questioner", "reasoner"]
ROLES: tuple[Role, ...] = ("questioner", "reasoner")
# Most pixels of an image shown to a role: Qwen2.5-VL's suggested max_pixels (1280 * 28 * 28),
# about 1,280 image tokens, so a batch of prompts with a picture and views each fits in memory.
ROLE_MAX_PIXELS = 1280 * 28 * 28


@dataclass(frozen=True)
class Sight:
    """The images one role's request carries: LangChain image blocks, and their trace records."""

    blocks: tuple[dict[str, Any], ...]
    shown: tuple[Shown, ...]

    def prompt_vars(self) -> dict[str, Any]:
        """The prompt's ``sight`` variable: the views' places in words (the picture comes first)."""
        return {"sight": {"views": [shown.where for shown in self.shown[1:]]}}

    def attach(self, conversation: list[BaseMessage]) -> list[BaseMessage]:
        """``conversation`` with the images put before the text of its last user turn."""
        last = max(i for i, message in enumerate(conversation) if isinstance(message, HumanMessage))
        turn = conversation[last]
        content = [*self.blocks, {"type": "text", "text": turn.text}]
        return [*conversation[:last], HumanMessage(content=content), *conversation[last + 1 :]]


def attach_all(conversations: list[list[BaseMessage]],
               sights: Sequence[Sight | None] | None) -> list[list[BaseMessage]]:
    """Each conversation with its sight's images in its last user turn (none for a blind role)."""
    if sights is None:
        return conversations
    return [sight.attach(c) if sight is not None else c for c, sight in zip(conversations, sights)]


def sight_vars(sights: Sequence[Sight | None] | None, i: int) -> dict[str, Any]:
    """The ``sight`` prompt variable of request ``i`` where it sees (a blind prompt has none)."""
    sight = sights[i] if sights is not None else None
    return sight.prompt_vars() if sight is not None else {}


def record_shown(outcomes: list[Outcome], sights: Sequence[Sight | None] | None) -> list[Outcome]:
    """The role's outcomes, each with what its model was shown (the trace takes it from there)."""
    for outcome, sight in zip(outcomes, sights or []):
        outcome.shown = list(sight.shown) if sight is not None else []
    return outcomes


def sees(setting: RolesSeeMode, model: Any) -> bool:
    """Whether a role served by ``model`` sees, under the ``roles_see`` setting (auto: where the
    model says it takes images; ``on`` with one that cannot is refused earlier, check_models)."""
    return setting == "on" or (setting == "auto" and capabilities_of(model).images)


def sights_for(agent: IdealAgent, role: Role, jobs: list[Job]) -> list[Sight] | None:
    """What ``role`` is shown for each job, made once per sample (the search is over by the
    time a role runs, so the views do not change); None when the role is blind."""
    if not agent.roles_seeing[role]:
        return None
    model = agent.questioner.caller.llm if role == "questioner" else agent.reasoner.caller.llm
    for job in jobs:
        if role not in job.sights:
            job.sights[role] = sight_of(job, model, views=role == "reasoner")
    return [job.sights[role] for job in jobs]


def sight_of(job: Job, model: Any, *, views: bool) -> Sight:
    """The picture of ``job``, and with ``views`` the best views its search looked at, sized
    for ``model``."""
    assert job.image is not None  # a sample whose image did not load never reaches a role
    trace = job.trace
    picture = Picture(trace.sample.image if trace.sample.image is not None else job.image, job.image)
    want = role_view_size(model)
    room = capabilities_of(model).images_per_request - 1
    boxes = [(Box.whole(picture.size), "")]
    if views and room > 0:
        boxes += [(Box(*look.box), look.where) for look in looked_at(trace.search, room)]
    blocks, shown = [], []
    for box, where in boxes:
        image = picture.view(box, want)
        media, _, data = encode_image(image).partition(";base64,")
        blocks.append({"type": "image", "base64": data, "mime_type": media.removeprefix("data:")})
        shown.append(Shown(box=list(box), where=where, size=list(image.size)))
    picture.release()
    return Sight(tuple(blocks), tuple(shown))


def role_view_size(model: Any) -> ViewSize:
    """The size ``model`` takes an image in (as the search sizes an answerer's views), within
    ``ROLE_MAX_PIXELS``."""
    want = view_size_of(model)
    return dataclasses.replace(want, max_pixels=min(want.max_pixels or ROLE_MAX_PIXELS, ROLE_MAX_PIXELS),
                               min_pixels=min(want.min_pixels or 0, ROLE_MAX_PIXELS) or None)


def looked_at(search: Search | None, count: int) -> list[Look]:
    """Up to ``count`` of the views the search found worth a look, best first: the one the
    main question was asked of, then those most likely to hold the target, then described ones;
    never the whole picture (the role is shown that anyway), and each place once."""
    if search is None or count <= 0:
        return []
    whole = list(Box.whole((search.size[0], search.size[1])))

    def rank(look: Look) -> tuple[int, float]:
        if look.kind == "answer":
            return 0, -(look.probability or 0.0)
        return (1, -(look.p_yes or 0.0)) if look.kind == "exists" else (2, 0.0)

    chosen: list[Look] = []
    for look in sorted(search.evidence(), key=rank):  # sorted is stable: ties keep the search's order
        if look.box != whole and all(look.box != other.box for other in chosen):
            chosen.append(look)
    return chosen[:count]
