"""Shared fixtures. Slow tests that load real weights are marked ``real_weights``."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

LONG_ENV = "IDEALAGENT_LONG_TESTS"


def pytest_collection_modifyitems(config, items) -> None:
    """Skip the ``long`` checks unless ``IDEALAGENT_LONG_TESTS=1`` (``make test LONG=1``; CI sets
    it): each newcomer's ``make test`` stays within a few minutes on two cores, and CI still runs
    everything. The summary names every one skipped."""
    if os.environ.get(LONG_ENV) == "1":
        return
    skip = pytest.mark.skip(reason=f"a long check: CI runs it; here, make test LONG=1 or {LONG_ENV}=1")
    for item in items:
        if item.get_closest_marker("long"):
            item.add_marker(skip)


@pytest.fixture
def red_image() -> Image.Image:
    return Image.new("RGB", (32, 32), "red")


@pytest.fixture(scope="session")
def vlm_dir(tmp_path_factory):
    """A tiny random VLM's folder per architecture (tests/tiny_vlms.py), built once per session
    on first use."""
    from tests.tiny_vlms import BUILDERS

    built: dict[str, object] = {}

    def get(arch: str):
        if arch not in built:
            built[arch] = BUILDERS[arch](tmp_path_factory.mktemp(arch))
        return built[arch]

    return get


@pytest.fixture(scope="session")
def qwen(vlm_dir):
    """A tiny random Qwen2-VL loaded as the answerer (its ``chat_model()`` plays the other roles)."""
    pytest.importorskip("transformers")
    from idealagent.answerers.transformers import TransformersAnswerer

    return TransformersAnswerer.from_pretrained(vlm_dir("qwen2_vl"), max_new_tokens=6)


def sub_questions(*questions: str) -> str:
    """A questioner reply."""
    return json.dumps({"sub_questions": list(questions)})


def verdict(answer: str, confidence: float, analysis: str = "because") -> str:
    """A reasoner reply."""
    return json.dumps({"analysis": analysis, "answer": answer, "confidence": confidence})


@pytest.fixture(scope="session", autouse=True)
def _model_cache(tmp_path_factory):
    """The session's own model cache (``IDEALAGENT_CACHE``; subprocesses and notebook kernels
    inherit it), empty when the session starts: the tests never read what an earlier version
    of the code left in the user's cache, and never write there."""
    folder = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IDEALAGENT_CACHE", str(folder))
        yield folder


@dataclass
class Conversion:
    """SmolLM2 converted into the session's model cache, and what that printed."""

    folder: Path
    log: str
    staging_left: list[str]  # staging folders the conversion left beside it (none, when it went well)


@pytest.fixture(scope="session")
def smollm2_converted(_model_cache) -> Conversion:
    """The first use of the tiny preset in the session: SmolLM2's GGUF converted, once, through
    the same ``ensure_converted`` a user's first run takes (tests/test_local_llm.py checks it).
    Every test of the real tiny preset then loads that folder."""
    from idealagent.llms import smollm2

    folder = _model_cache / smollm2.CACHE_NAME
    handler = _Records()
    logger = logging.getLogger(smollm2.__name__)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        smollm2.ensure_converted(folder)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    staging = sorted(p.name for p in _model_cache.iterdir() if p.name.startswith(f".{folder.name}-"))
    return Conversion(folder, "\n".join(handler.lines), staging)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="session")
def tiny_replies(tmp_path_factory, smollm2_converted):
    """The response cache the ``tiny_replies`` tests share: empty when the session starts, so
    they read only replies the real tiny preset generated in this session, for the same request
    (its rendered prompt, image pixels and limits) in another of them. SmolLM2 is converted
    before the first of them runs (``smollm2_converted``)."""
    return tmp_path_factory.mktemp("tiny-replies")


@pytest.fixture(autouse=True)
def _response_cache(request, tmp_path_factory, monkeypatch) -> None:
    """Each test gets an empty response cache of its own (subprocesses inherit it), so a test
    never reads replies another test or an earlier run stored. The ``tiny_replies`` tests (the
    real tiny preset end to end) share one instead: SmolLM2 on two cores is most of the suite's
    time, and the same request is generated once, by whichever of them sends it first."""
    if request.node.get_closest_marker("tiny_replies"):
        folder = request.getfixturevalue("tiny_replies")
    else:
        folder = tmp_path_factory.mktemp("responses")
    monkeypatch.setenv("IDEALAGENT_RESPONSE_CACHE", str(folder))
