"""The agent as an lmms-eval model: ``lmms-eval --model idealagent --model_args preset=...``.

lmms-eval finds ``IdealAgentLMM`` through its ``lmms_eval.models`` entry-point group, which
pyproject.toml fills with ``manifest``. ``--model_args`` takes ``preset`` (default ``tiny``),
``vlm`` and ``llm`` (replace the preset's models), ``traces`` (a JSON Lines file for the
traces) and any AgentSettings field (``max_rounds=3,confidence_threshold=0.8``), checked
before any weights load. lmms-eval's ``--batch_size N`` sets the samples in flight when N > 1;
its default of 1 leaves the preset's.

Every ``generate_until`` request of a run goes through the agent as one pipelined batch
(``IdealAgent.iter_batch``); lmms_requests.py says how a prompt becomes a Sample and the answer
a reply. Only docs with one image and a text answer can run: log-likelihood requests, multi-round
generation and docs with video, audio, several images or none stop the run, with one error
naming what is unsupported, before any model call.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from lmms_eval.api.instance import GenerationResult, TokenCounts
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest
from tqdm import tqdm

from idealagent.errors import InfrastructureError, InputError
from idealagent.integrations.lmms_requests import Request, reply, to_request
from idealagent.presets import load_preset
from idealagent.trace import Sample, Trace

log = logging.getLogger(__name__)

MODEL_ID = "idealagent"


def manifest() -> ModelManifest:
    """lmms-eval's registration of the model (the ``lmms_eval.models`` entry point)."""
    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.IdealAgentLMM")


class IdealAgentLMM(lmms):
    """The IdealGPT-style loop of a preset, answering lmms-eval's single-image questions."""

    is_simple = True

    def __init__(self, preset: str = "tiny", vlm: str | None = None, llm: str | None = None,
                 traces: str | None = None, batch_size: int | str | None = None,
                 max_batch_size: int | None = None, device: str | None = None, **settings: Any) -> None:
        super().__init__()
        flight = _samples_in_flight(batch_size)
        if flight is not None:
            settings["batch_size"] = flight
        # The presets place their own models, so lmms-eval's device and max_batch_size say nothing.
        del max_batch_size, device
        self.traces = Path(traces) if traces else None
        if self.traces is None:
            log.warning("idealagent: traces are not kept; add traces=PATH.jsonl to --model_args")
        self.agent = load_preset(preset, vlm=vlm, llm=llm, **settings)
        self._traces_started = False

    def generate_until(self, requests: list[Any]) -> list[GenerationResult]:
        """Run every request through the agent in one pipelined batch; replies in request order."""
        staged = self._stage(requests)  # every check before any model call

        def samples() -> Iterator[Sample]:
            # Images are read as the pool takes samples in, so a large task is never all in memory.
            for sample_id, (request, instance) in staged.items():
                _context, _gen_kwargs, doc_to_visual, doc_id, task, split = instance.args
                yield request.with_image(_visuals(doc_to_visual, self.task_dict[task][split][doc_id])[0])

        replies: dict[str, GenerationResult] = {}
        infrastructure = 0
        with self._trace_file() as out, tqdm(total=len(requests), desc="idealagent",
                                             disable=self.rank != 0) as progress:
            for trace in self.agent.iter_batch(samples()):
                request, instance = staged[trace.sample.id]
                text = reply(request, trace)
                replies[trace.sample.id] = GenerationResult(text, _token_counts(trace))
                infrastructure += trace.stop_reason == "infrastructure"
                if out is not None:
                    row = {"task": instance.task_name, "doc_id": instance.doc_id, "reply": text,
                           "trace": trace.model_dump(mode="json")}
                    out.write(json.dumps(row) + "\n")
                    out.flush()
                progress.update(1)
        if infrastructure:
            # Not an answer to score: a failed service is never recorded as a wrong reply.
            raise InfrastructureError(f"{infrastructure} of {len(requests)} samples failed on a model service "
                                      "after every retry; nothing was scored (rerun when it is back)")
        return [replies[sample_id] for sample_id in staged]

    def _stage(self, instances: list[Any]) -> dict[str, tuple[Request, Any]]:
        """Each instance's Request by a unique sample id (``task/doc_id``, then ``#2``... for
        lmms-eval's repeats), in order; a doc the agent cannot run stops the run here."""
        staged: dict[str, tuple[Request, Any]] = {}
        for instance in instances:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = instance.args
            problem = _visual_problem(_visuals(doc_to_visual, self.task_dict[task][split][doc_id]))
            if problem:
                raise NotImplementedError(f"idealagent cannot run task {task!r}: doc {doc_id} has {problem}; "
                                          "only docs with one image and a text answer are supported")
            sample_id, repeat = f"{task}/{doc_id}", 1
            while sample_id in staged:
                repeat += 1
                sample_id = f"{task}/{doc_id}#{repeat}"
            try:
                staged[sample_id] = (to_request(context, gen_kwargs, sample_id), instance)
            except InputError as exc:
                raise InputError(f"task {task!r}, doc {doc_id}: {exc}") from None
        return staged

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        """Unsupported: the agent generates answers; it scores no given continuation."""
        raise NotImplementedError(_unsupported(requests, "log-likelihood requests (output_type: multiple_choice "
                                                         "or loglikelihood); use a generate_until task"))

    def generate_until_multi_round(self, requests: list[Any]) -> list[str]:
        """Unsupported: each question is one sample of the loop, which runs its own rounds."""
        raise NotImplementedError(_unsupported(requests, "multi-round generation (generate_until_multi_round)"))

    def _trace_file(self) -> Any:
        """The traces file, truncated at the run's first call and appended to after; or a null
        context when no file was asked for."""
        if self.traces is None:
            return nullcontext(None)
        self.traces.parent.mkdir(parents=True, exist_ok=True)
        mode = "a" if self._traces_started else "w"
        self._traces_started = True
        return self.traces.open(mode, encoding="utf-8")


def _samples_in_flight(batch_size: int | str | None) -> int | None:
    """lmms-eval's --batch_size as the agent's samples in flight: N > 1 sets it; its default of
    1 and ``auto`` leave the preset's."""
    if batch_size is None or str(batch_size).startswith("auto"):
        return None
    try:
        value = int(batch_size)
    except ValueError:
        raise InputError(f"--batch_size must be a whole number or auto, got {batch_size!r}") from None
    return value if value > 1 else None


def _visuals(doc_to_visual: Any, doc: Any) -> list[Any]:
    visuals = doc_to_visual(doc) if doc_to_visual is not None else None
    if visuals is None:
        return []
    return list(visuals) if isinstance(visuals, list | tuple) else [visuals]


def _visual_problem(visuals: list[Any]) -> str | None:
    """Why the agent cannot take a doc's visuals, or None for exactly one image."""
    if len(visuals) != 1:
        return f"{len(visuals)} visuals (the agent takes exactly one image per question)"
    visual = visuals[0]
    if isinstance(visual, dict):
        return "an audio clip"
    if isinstance(visual, str):
        return None if visual.lower().endswith(_IMAGE_FILES) else f"a video or other non-image file ({visual})"
    return None if hasattr(visual, "convert") else f"a {type(visual).__name__} (not an image)"


_IMAGE_FILES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def _unsupported(requests: list[Any], what: str) -> str:
    tasks = sorted({getattr(request, "task_name", None) or "?" for request in requests})
    return f"idealagent does not support {what}: task(s) {', '.join(tasks)}"


def _token_counts(trace: Trace) -> TokenCounts:
    """The sample's tokens over all its model calls, for lmms-eval's usage summary."""
    usage = trace.usage
    return TokenCounts(input_tokens=usage.llm_input_tokens + usage.answerer_input_tokens,
                       output_tokens=usage.llm_output_tokens + usage.answerer_output_tokens)
