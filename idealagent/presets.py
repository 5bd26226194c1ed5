"""Named presets: name → (chat model, answerer, settings). The only place model ids live
(other packages add presets of their own through entry points: see idealagent/plugins.py).

A preset names its models by role: ``vlm`` (the vision-language model that answers, and for
single-model presets also asks and judges) and ``llm`` (a separate text model for the
questioner and reasoner). Both the API and the CLI can swap either for another hub id or a
local folder, and override the loop settings::

    load_preset("qwen2.5-vl-7b", vlm="/models/my-finetune", max_rounds=2)
    idealagent ask cat.jpg "What is it?" --preset qwen2.5-vl-7b --vlm /models/my-finetune
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from idealagent.errors import InputError
from idealagent.settings import AgentSettings

if TYPE_CHECKING:
    from idealagent.agent import IdealAgent
    from idealagent.response_cache import ResponseCache

log = logging.getLogger(__name__)

MODEL_ROLES = ("vlm", "llm")


@dataclass(frozen=True)
class Preset:
    """A named configuration of models and loop settings."""

    name: str
    description: str
    # Loads the models (may be slow) and returns the model arguments of IdealAgent: llm and
    # answerer, optionally questioner_llm and reasoner_llm. Called with the preset's models,
    # after the user's overrides, as keyword arguments (``vlm=...``, ``llm=...``).
    build: Callable[..., dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)  # AgentSettings fields it sets
    models: dict[str, str] = field(default_factory=dict)  # role → hub id or folder
    # Roles the user may set: by default those in ``models``. (The openai preset reads its
    # model names from the environment, so it has none of its own but takes both.)
    roles: tuple[str, ...] | None = None
    extra: str = "local"  # the pip extra that installs what ``build`` imports
    # For a preset whose model names live elsewhere (the openai preset: the environment): given
    # the user's overrides as keyword arguments, the names ``build`` will use. They are recorded
    # in the agent's settings, so a results file's fingerprint tells the served models apart.
    resolve_models: Callable[..., dict[str, str]] | None = None

    @property
    def model_roles(self) -> tuple[str, ...]:
        """The roles whose model the user may replace."""
        return tuple(self.models) if self.roles is None else self.roles


def _build_tiny() -> dict[str, Any]:
    from idealagent.answerers.perception import PerceptionAnswerer
    from idealagent.llms.smollm2 import load_smollm2

    # One copy of the weights; each role gets its own token budget (model_copy is shallow).
    # The penalty on self-repetition stops the 135M model from looping on a phrase.
    llm = load_smollm2().model_copy(update={"repetition_penalty": 1.3})
    return {
        "llm": llm,
        "answerer": PerceptionAnswerer(llm.model_copy(update={"max_new_tokens": 16})),
        "questioner_llm": llm.model_copy(update={"max_new_tokens": 80}),
        "reasoner_llm": llm.model_copy(update={"max_new_tokens": 120}),
    }


def _build_one_vlm(vlm: str) -> dict[str, Any]:
    """One VLM checkpoint for every role: a single copy of the weights on the GPU."""
    answerer = _load_vlm(vlm)
    chat = answerer.chat_model()
    return _gpu_roles(chat, answerer)


def _build_split(vlm: str, llm: str) -> dict[str, Any]:
    """A VLM answers; a separate instruct LLM asks and judges."""
    from idealagent.llms.local import LocalChatModel

    answerer = _load_vlm(vlm)
    chat = LocalChatModel.from_pretrained(llm, max_batch_size=32)
    _warn_without_gpu(llm)
    return _gpu_roles(chat, answerer)


def _gpu_roles(chat: Any, answerer: Any) -> dict[str, Any]:
    """The GPU presets' models: ``chat`` asks and judges, each role with its own token budget."""
    return {
        "llm": chat,
        "answerer": answerer,
        "questioner_llm": chat.model_copy(update={"max_new_tokens": 160}),
        "reasoner_llm": chat.model_copy(update={"max_new_tokens": 320}),
    }


def _build_openai(vlm: str | None = None, llm: str | None = None) -> dict[str, Any]:
    """Endpoints and model names from IDEALAGENT_{LLM,VLM}_* environment variables."""
    return build_openai_preset(**{k: v for k, v in {"vlm_model": vlm, "llm_model": llm}.items() if v})


def build_openai_preset(*, llm_model: str | None = None, vlm_model: str | None = None) -> dict[str, Any]:
    """The ``openai`` preset's models: the LLM asks and judges, the VLM answers. A model name
    given here replaces the one in ``IDEALAGENT_{LLM,VLM}_MODEL`` (the CLI's --llm/--vlm).
    Where one VLM serves every role (the same server and model), the questioner and reasoner
    may be shown the picture and ``SERVED_VLM_IMAGES - 1`` views (sight.py)."""
    from idealagent.answerers.openai import OpenAIAnswerer
    from idealagent.endpoints import LLM_PREFIX, VLM_PREFIX
    from idealagent.llms.openai import chat_model_from_env

    llm = chat_model_from_env(LLM_PREFIX, **({"model": llm_model} if llm_model else {}))
    answerer = OpenAIAnswerer.from_env(VLM_PREFIX, **({"model": vlm_model} if vlm_model else {}))
    if (str(llm.openai_api_base).rstrip("/"), llm.model_name) == (answerer.base_url.rstrip("/"), answerer.model):
        llm = llm.model_copy(update={"images_per_request": SERVED_VLM_IMAGES})
    return {"llm": llm, "answerer": answerer}


def _openai_models(vlm: str | None = None, llm: str | None = None) -> dict[str, str]:
    """The served model names the openai preset's build will use: each override, else
    IDEALAGENT_{VLM,LLM}_MODEL with the twin's fallback (as ``endpoint_from_env`` resolves them)."""
    from idealagent.endpoints import LLM_PREFIX, VLM_PREFIX, endpoint_from_env

    return {"vlm": endpoint_from_env(VLM_PREFIX, model=vlm, max_tokens=32).model,
            "llm": endpoint_from_env(LLM_PREFIX, model=llm).model}


def _load_vlm(name: str) -> Any:
    from idealagent.answerers.transformers import TransformersAnswerer

    answerer = TransformersAnswerer.from_pretrained(name, max_batch_size=32, max_new_tokens=16)
    _warn_without_gpu(name)
    return answerer


def _warn_without_gpu(name: str) -> None:
    """A GPU preset runs on a CPU too (float32), but a user should know why it crawls."""
    import torch

    if not torch.cuda.is_available():
        log.warning("no CUDA GPU: %s will run in float32 on the CPU, which is very slow", name)


# Images one request to a served VLM that also asks and judges carries at most: the picture and two
# views. A server that takes fewer images a prompt (vLLM's --limit-mm-per-prompt) needs
# --roles-see off.
SERVED_VLM_IMAGES = 3

# Loop settings for models that can follow the prompts: IdealGPT's four rounds, batches sized
# for a GPU.
GPU_SETTINGS = {"max_rounds": 4, "max_sub_questions": 3, "confidence_threshold": 0.7, "batch_size": 32,
                "attempts": 3}

BUILTIN_PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in [
        Preset(
            name="tiny",
            description=(
                "Embedded CPU default: SmolLM2-135M-Instruct (questioner, reasoner and answerer) over "
                "an EfficientNet-Lite0 ImageNet classifier and colour and shape analysis. Runs offline "
                "anywhere; far too small to be accurate."
            ),
            build=_build_tiny,
            # Two tries per reply: constrained decoding makes replies parseable, and a greedy
            # 135M model that repeated itself once mostly repeats itself again. Its searches use
            # its answerer's own detector (the shape finder and the classifier, no LLM call): the
            # 135M model says "no" to every "Is there...?" (p(yes) 0.34-0.52 on 32 views of the
            # generated zoom set, objects in view or not). Five looks (the four quarters, then the
            # main question on a view around the surest finding) keep a searched sample within
            # about 12 answerer calls with its rounds' sub-questions.
            # Its calibration ships in the package (idealagent/calibrations/tiny.json), fitted on
            # easy-VQA's and the generated zoom set's train splits: docs/benchmarks.md.
            settings={"max_rounds": 2, "max_sub_questions": 2, "confidence_threshold": 0.7, "attempts": 2,
                      "look_mode": "detect", "look_budget": 5, "calibration": "tiny"},
            extra="tiny",
        ),
        Preset(
            name="qwen2.5-vl-3b",
            description=(
                "One GPU, one model: Qwen2.5-VL-3B-Instruct asks, answers and judges (one copy of "
                "the weights, about 8 GB in bf16)."
            ),
            build=_build_one_vlm,
            settings=GPU_SETTINGS,
            models={"vlm": "Qwen/Qwen2.5-VL-3B-Instruct"},
        ),
        Preset(
            name="qwen2.5-vl-7b",
            description=(
                "One GPU, one model: Qwen2.5-VL-7B-Instruct asks, answers and judges (about 17 GB "
                "in bf16)."
            ),
            build=_build_one_vlm,
            settings=GPU_SETTINGS,
            models={"vlm": "Qwen/Qwen2.5-VL-7B-Instruct"},
        ),
        Preset(
            name="qwen2.5-vl-3b+qwen2.5-7b",
            description=(
                "Split roles: Qwen2.5-VL-3B-Instruct answers, Qwen2.5-7B-Instruct asks and judges "
                "(about 23 GB in bf16; fits one 40 GB GPU)."
            ),
            build=_build_split,
            settings=GPU_SETTINGS,
            models={"vlm": "Qwen/Qwen2.5-VL-3B-Instruct", "llm": "Qwen/Qwen2.5-7B-Instruct"},
        ),
        Preset(
            name="openai",
            description=(
                "OpenAI-compatible servers (vLLM, SGLang, TGI, OpenAI): IDEALAGENT_LLM_BASE_URL and "
                "IDEALAGENT_LLM_MODEL for the questioner and reasoner, IDEALAGENT_VLM_BASE_URL and "
                "IDEALAGENT_VLM_MODEL for the answerer (default: the LLM's); see docs/scaling.md."
            ),
            build=_build_openai,
            settings={**GPU_SETTINGS, "batch_size": 64},
            roles=MODEL_ROLES,
            extra="openai",
            resolve_models=_openai_models,
        ),
    ]
}


class PresetRegistry(MutableMapping[str, Preset]):
    """The presets by name: the built-in ones, those installed packages register through the
    ``idealagent.presets`` entry-point group (read once, on first use; see idealagent/plugins.py),
    and any set here by code (``PRESETS[name] = preset``, as tests do)."""

    def __init__(self, builtin: dict[str, Preset]) -> None:
        self._presets = dict(builtin)
        self._builtin = frozenset(builtin)
        self._plugins_read = False
        self._lock = threading.Lock()

    def _read_plugins(self) -> None:
        with self._lock:
            if self._plugins_read:
                return
            self._plugins_read = True
            for preset in _plugin_presets():
                if preset.name in self._builtin:
                    log.warning("refusing the plugin preset %r: a built-in preset has that name", preset.name)
                elif preset.name in self._presets:
                    log.warning("ignoring a second plugin preset called %r", preset.name)
                else:
                    self._presets[preset.name] = preset

    def __getitem__(self, name: str) -> Preset:
        self._read_plugins()
        return self._presets[name]

    def __setitem__(self, name: str, preset: Preset) -> None:
        self._read_plugins()  # so that a plugin read later cannot replace it
        self._presets[name] = preset

    def __delitem__(self, name: str) -> None:
        self._read_plugins()
        del self._presets[name]

    def __iter__(self) -> Iterator[str]:
        self._read_plugins()
        return iter(list(self._presets))

    def __len__(self) -> int:
        self._read_plugins()
        return len(self._presets)


PRESETS = PresetRegistry(BUILTIN_PRESETS)


def _plugin_presets() -> list[Preset]:
    """The Presets of the installed ``idealagent.presets`` entry points: each a Preset, or a
    callable returning one or several. A plugin that gives anything else is skipped."""
    from idealagent.plugins import PRESET_GROUP, load_plugins, skip

    found: list[Preset] = []
    for name, value in load_plugins(PRESET_GROUP):
        try:
            if not isinstance(value, Preset) and callable(value):
                value = value()
            presets = list(value) if isinstance(value, Iterable) else [value]
            wrong = [p for p in presets if not isinstance(p, Preset)]
            if wrong:
                raise TypeError(f"it gives a {type(wrong[0]).__name__}, not a Preset")
        except Exception as exc:  # a plugin's bug must not stop idealagent, nor the other plugins
            skip(PRESET_GROUP, name, exc)
            continue
        found.extend(presets)
    return found


def preset_names() -> list[str]:
    """The names of every preset, built-in and from plugins."""
    return sorted(PRESETS)


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name is an InputError that lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}; choose one of: {', '.join(preset_names())}") from None


def preset_models(name: str, vlm: str | None = None, llm: str | None = None) -> dict[str, str]:
    """The preset's models after the user's overrides; an override it can't take is an InputError.

    For the openai preset these are the served model names from the environment, so a missing
    IDEALAGENT_* variable is an InputError here already.
    """
    preset = get_preset(name)
    given = {role: value for role, value in {"vlm": vlm, "llm": llm}.items() if value}
    for role in given:
        if role not in preset.model_roles:
            takes = (f"takes only --{' / --'.join(preset.model_roles)}" if preset.model_roles
                     else "takes no model overrides")
            raise InputError(f"the {name} preset has no {role} model to replace (it {takes})")
    if preset.resolve_models is not None:
        return preset.resolve_models(**given)
    return {**preset.models, **given}


def load_preset(name: str = "tiny", *, vlm: str | None = None, llm: str | None = None,
                **overrides: Any) -> IdealAgent:
    """Build the agent for a preset.

    ``vlm`` and ``llm`` replace the preset's models (a hub id in the local cache, or a folder);
    other keyword arguments override its loop settings. With the ``cache`` setting (on by
    default) the models read and write the response cache (``agent.response_cache``).
    """
    from idealagent.agent import IdealAgent

    preset = get_preset(name)
    models = preset_models(name, vlm, llm)
    settings = preset_settings(name, **overrides)  # checked before any weights load
    built = preset.build(**models)
    cache = None
    if settings.cache:
        from idealagent.response_cache import ResponseCache

        cache = ResponseCache.default()
        built = with_response_cache(built, cache)
    agent = IdealAgent(**built, settings=settings)
    agent.origin = {"preset": name, **({"models": models} if models else {})}
    agent.response_cache = cache  # its hits and misses, for the end of a run
    return agent


def preset_settings(name: str, **overrides: Any) -> AgentSettings:
    """The loop settings of a preset's agent: the defaults, the preset's, then ``overrides``
    (None leaves a setting as the preset has it); a bad one is an InputError."""
    return AgentSettings.of(**{**get_preset(name).settings, **{k: v for k, v in overrides.items() if v is not None}})


def with_response_cache(models: dict[str, Any], cache: ResponseCache) -> dict[str, Any]:
    """A preset's models (``llm``, ``answerer``, ...) reading and writing ``cache``: chat
    models that have a ``response_cache`` field get it, answerers that say what identifies
    them (``cache_identity``) are wrapped. Others are left as they are: their replies may
    not be deterministic."""
    from idealagent.answerers.cached import CachedAnswerer

    copies: dict[int, Any] = {}  # a model passed in two roles stays one model
    wrapped: dict[str, Any] = {}
    for role, model in models.items():
        if id(model) in copies:
            wrapped[role] = copies[id(model)]
        elif "response_cache" in getattr(type(model), "model_fields", {}):
            wrapped[role] = copies[id(model)] = model.model_copy(update={"response_cache": cache})
        elif callable(getattr(model, "cache_identity", None)):
            wrapped[role] = copies[id(model)] = CachedAnswerer(model, cache)
        else:
            wrapped[role] = model
    return wrapped
