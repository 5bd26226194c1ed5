"""Shared fixtures. Slow tests that load real weights are marked ``real_weights``."""

from __future__ import annotations

import json

import pytest
from PIL import Image


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


@pytest.fixture(scope="session")
def tiny_replies(tmp_path_factory):
    """The response cache the ``tiny_replies`` tests share: empty when the session starts, so
    they read only replies the real tiny preset generated in this session, for the same request
    (its rendered prompt, image pixels and limits) in another of them."""
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
