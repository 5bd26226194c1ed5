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


@pytest.fixture(autouse=True)
def _response_cache(tmp_path_factory, monkeypatch) -> None:
    """Each test gets an empty response cache of its own (subprocesses inherit it), so a test
    never reads replies another test or an earlier run stored."""
    monkeypatch.setenv("IDEALAGENT_RESPONSE_CACHE", str(tmp_path_factory.mktemp("responses")))
