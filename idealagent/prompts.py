"""Prompt files: ``prompts/<role>.yaml``, loaded by name and rendered strictly.

A file has a ``system`` and a ``user`` template (Jinja2) and, per task kind, the instructions
and few-shot exemplars for that kind. An exemplar is the variables of one user turn plus the
reply we want, so exemplars go through the very template the real question uses. A missing
variable is an error, never a silent blank, and unknown fields in a file are refused.
"""

from __future__ import annotations

import json
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from idealagent.errors import IdealAgentError

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined, keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True
)


class PromptError(IdealAgentError):
    """A prompt file is missing, malformed, or was rendered without a variable it needs."""


class Exemplar(BaseModel):
    """One worked example: the user-template variables and the reply to imitate."""

    model_config = ConfigDict(extra="forbid")

    vars: dict[str, Any]
    reply: dict[str, Any] | str


class KindVariant(BaseModel):
    """What changes with the task kind: an instruction line and the exemplars."""

    model_config = ConfigDict(extra="forbid")

    instructions: str = ""
    exemplars: list[Exemplar] = []


class PromptSpec(BaseModel):
    """A validated prompt file."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    system: str = ""
    user: str
    kinds: dict[str, KindVariant] = {}

    def variant(self, kind: str) -> KindVariant:
        """The variant for ``kind``; what it leaves out comes from the ``default`` variant."""
        default = self.kinds.get("default", KindVariant())
        own = self.kinds.get(kind, KindVariant())
        return KindVariant(
            instructions=own.instructions or default.instructions,
            exemplars=own.exemplars or default.exemplars,
        )

    def render(self, kind: str = "default", /, **variables: Any) -> list[BaseMessage]:
        """Chat messages: system, exemplar turns, then the user turn for ``variables``."""
        # Imported here: the modules that only read prompt files' text (looking/questions.py,
        # and through it the CLI's help and argument checks) need no LangChain.
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

        variant = self.variant(kind)
        messages: list[BaseMessage] = []
        if self.system:
            messages.append(SystemMessage(_render(self.system, instructions=variant.instructions, **variables)))
        for example in variant.exemplars:
            messages.append(HumanMessage(_render(self.user, **example.vars)))
            reply = example.reply
            messages.append(AIMessage(reply if isinstance(reply, str) else json.dumps(reply)))
        messages.append(HumanMessage(_render(self.user, **variables)))
        return messages


def render_text(template: str, **variables: Any) -> str:
    """One template of a prompt file (an instruction line, say) rendered strictly, as ``render`` does."""
    return _render(template, **variables)


@lru_cache(maxsize=512)
def _compiled(template: str) -> jinja2.Template:
    """A template compiled once: compiling costs milliseconds, and every request renders several."""
    return _ENV.from_string(template)


def _render(template: str, **variables: Any) -> str:
    try:
        return _compiled(template).render(**variables).strip()
    except jinja2.UndefinedError as exc:
        raise PromptError(f"prompt variable missing: {exc.message}") from exc
    except jinja2.TemplateSyntaxError as exc:
        raise PromptError(f"prompt template syntax error: {exc.message} (line {exc.lineno})") from exc


def default_prompts_dir() -> Path:
    """Where the shipped prompts are: inside the installed wheel, else the source checkout."""
    packaged = Path(str(resources.files("idealagent"))) / "prompts"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "prompts"


def available(directory: Path | None = None) -> list[str]:
    """Names of the prompt files in ``directory``."""
    return sorted(p.stem for p in (directory or default_prompts_dir()).glob("*.yaml"))


def load_prompt(name: str, directory: str | Path | None = None) -> PromptSpec:
    """Load and validate ``<directory>/<name>.yaml`` (the shipped prompts by default)."""
    return _load(name, Path(directory) if directory else default_prompts_dir())


@cache
def _load(name: str, directory: Path) -> PromptSpec:
    path = directory / f"{name}.yaml"
    if not path.is_file():
        raise PromptError(f"no prompt named {name!r} in {directory}; have: {', '.join(available(directory))}")
    try:
        spec = PromptSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (yaml.YAMLError, ValidationError) as exc:
        first = str(exc).strip().splitlines()
        raise PromptError(f"{path}: invalid prompt file: {' '.join(first[:3])}") from exc
    return spec
