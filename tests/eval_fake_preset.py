"""A deterministic preset for evaluation tests, also usable from a subprocess::

    python -c "from tests.eval_fake_preset import register; register(); from idealagent.cli import main; main()" \
        eval ... --preset fake-eval

The questioner asks one sub-question; the reasoner answers "A" when there are choices, else
"red" for an even item number in the question and "blue" for an odd one, at confidence 0.9.
``FAKE_EVAL_DELAY`` (seconds per reasoner reply) slows it down for the kill-and-resume test;
``FAKE_EVAL_ASK_DELAY`` and ``FAKE_EVAL_ANSWER_DELAY`` slow the questioner and the answerer.

``python -m tests.eval_fake_preset eval ...`` is the ``idealagent`` command with the preset
added, for launchers that take a module (``accelerate launch -m``).
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import idealagent.presets
from idealagent.presets import Preset
from idealagent.testing import ScriptedAnswerer, ScriptedChatModel

NAME = "fake-eval"


def fake_answer(user_turn: str) -> str:
    """The reasoner's answer for a conversation's last user turn."""
    if "Choices:" in user_turn:
        return "A"
    question = re.search(r"Main question: (.*)", user_turn).group(1)
    number = int(re.search(r"\d+", question).group())
    return "red" if number % 2 == 0 else "blue"


def _delay(variable: str) -> None:
    """Sleep as long as ``variable`` says. With ``FAKE_EVAL_STARTED`` (a path) set, only the
    first slow call sleeps, and it first creates that file, so a test knows the model is at
    work (and can interrupt it) and what follows the interruption runs at full speed."""
    seconds = float(os.environ.get(variable, "0"))
    marker = os.environ.get("FAKE_EVAL_STARTED")
    if seconds and marker:
        try:
            open(marker, "x").close()
        except FileExistsError:
            return
    time.sleep(seconds)


def reply(messages: list[Any]) -> str:
    system, user = str(messages[0].content), str(messages[-1].content)
    if "sub-questions whose answers" in system:  # the questioner
        _delay("FAKE_EVAL_ASK_DELAY")
        return json.dumps({"sub_questions": ["What colour is the main thing?"]})
    _delay("FAKE_EVAL_DELAY")
    return json.dumps({"analysis": "The fake looked.", "answer": fake_answer(user), "confidence": 0.9})


def answer(question: str) -> str:
    _delay("FAKE_EVAL_ANSWER_DELAY")
    return "red"


def build(**_: Any) -> dict[str, Any]:
    """Fresh models: a chat model that never runs out of replies, and an answerer saying "red"."""
    return {"llm": ScriptedChatModel(replies=[reply] * 100_000), "answerer": ScriptedAnswerer(answer)}


PRESET = Preset(NAME, "Deterministic fake models for evaluation tests.", build,
                # The stated confidence decides, so each scripted verdict stops the loop at once.
                {"max_rounds": 2, "batch_size": 4, "attempts": 1, "calibration": "stated"})


def register() -> None:
    """Add the preset to PRESETS (in-process tests use monkeypatch.setitem instead)."""
    idealagent.presets.PRESETS[NAME] = PRESET


if __name__ == "__main__":
    from idealagent.cli import main

    register()
    main()
