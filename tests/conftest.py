"""Shared fixtures. Slow tests that load real weights are marked ``real_weights``."""

from __future__ import annotations

import json

import pytest
from PIL import Image


@pytest.fixture
def red_image() -> Image.Image:
    return Image.new("RGB", (32, 32), "red")


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
