"""Presets and answerer backends from other packages, through the ``idealagent.presets`` and
``idealagent.answerers`` entry-point groups: a plugin package is put on the path of a fresh
interpreter (as an installed distribution: a ``.dist-info`` folder with ``entry_points.txt``),
and what ``idealagent presets`` lists and ``load_preset`` builds come from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from idealagent.errors import InputError
from idealagent.plugins import answerer_names, load_answerer
from idealagent.presets import BUILTIN_PRESETS, PRESETS, preset_names

ROOT = Path(__file__).resolve().parent.parent

PLUGIN = '''
"""A plugin package: two presets, an answerer backend, and some mistakes."""
import json

from idealagent.plugins import load_answerer
from idealagent.presets import Preset
from idealagent.testing import ScriptedChatModel


class ColourAnswerer:
    def __init__(self, colour="red"):
        self.colour = colour

    def answer(self, requests):
        return [self.colour for _ in requests]

    def caption(self, images):
        return [f"a {self.colour} picture" for _ in images]


def build(vlm="colour-vlm"):
    replies = [json.dumps({"sub_questions": ["What colour is it?"]}),
               json.dumps({"analysis": "it says so", "answer": "blue", "confidence": 0.9})]
    return {"llm": ScriptedChatModel(replies=replies), "answerer": load_answerer("colour", colour="blue")}


COLOUR = Preset(name="colour", description="A scripted preset from a plugin.", build=build,
                settings={"max_rounds": 1}, models={"vlm": "colour-vlm"}, extra="colour")


def more():
    return [Preset(name="colour-two", description="The second.", build=build),
            Preset(name="tiny", description="A plugin trying to replace a built-in.", build=build)]


def not_a_preset():
    return 42
'''

ENTRY_POINTS = '''
[idealagent.presets]
colour = colour_plugin:COLOUR
more = colour_plugin:more
missing = colour_plugin_missing:COLOUR
wrong = colour_plugin:not_a_preset

[idealagent.answerers]
colour = colour_plugin:ColourAnswerer
openai = colour_plugin:ColourAnswerer
'''

SCRIPT = '''
import json, logging
from PIL import Image
from idealagent.plugins import answerer_names
from idealagent.presets import get_preset, load_preset, preset_names

logging.basicConfig(level=logging.WARNING, format="WARNING %(message)s")
agent = load_preset("colour")
trace = agent.run(Image.new("RGB", (8, 8), "blue"), "What colour is it?")
print(json.dumps({"names": preset_names(), "tiny": get_preset("tiny").description,
                  "answer": trace.answer, "caption": trace.caption, "origin": agent.origin,
                  "max_rounds": agent.settings.max_rounds, "answerers": answerer_names()}))
'''


@pytest.fixture(scope="module")
def with_plugin(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess:
    site = tmp_path_factory.mktemp("site")
    (site / "colour_plugin.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    info = site / "colour_plugin-0.1.dist-info"
    info.mkdir()
    metadata = "Metadata-Version: 2.1\nName: colour-plugin\nVersion: 0.1\n"
    (info / "METADATA").write_text(metadata, encoding="utf-8")
    (info / "entry_points.txt").write_text(ENTRY_POINTS, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(site)])}
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                          timeout=300)


def test_a_plugin_preset_is_listed_and_loads(with_plugin: subprocess.CompletedProcess) -> None:
    assert with_plugin.returncode == 0, with_plugin.stderr
    out = json.loads(with_plugin.stdout.strip().splitlines()[-1])
    assert {"colour", "colour-two", *BUILTIN_PRESETS} == set(out["names"])
    assert out["answer"] == "blue" and out["caption"] == "a blue picture"  # its own models and backend
    assert out["origin"] == {"preset": "colour", "models": {"vlm": "colour-vlm"}}
    assert out["max_rounds"] == 1  # the plugin preset's settings
    assert out["tiny"] == BUILTIN_PRESETS["tiny"].description  # a plugin cannot replace a built-in
    assert {"colour", "openai", "transformers", "perception"} == set(out["answerers"])


def test_broken_plugins_are_one_warning_line_each_and_skipped(
        with_plugin: subprocess.CompletedProcess) -> None:
    warnings = [line for line in with_plugin.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 4, with_plugin.stderr
    assert any("'missing'" in w and "ModuleNotFoundError" in w for w in warnings)
    assert any("'wrong'" in w and "it gives a int, not a Preset" in w for w in warnings)
    assert any("refusing the plugin preset 'tiny'" in w for w in warnings)
    assert any("'openai'" in w and "the name is taken" in w for w in warnings)
    assert "Traceback" not in with_plugin.stderr


def test_without_plugins_the_registry_is_the_built_ins_and_takes_entries_set_in_code(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(preset_names()) >= set(BUILTIN_PRESETS)
    monkeypatch.setitem(PRESETS, "scripted", BUILTIN_PRESETS["tiny"])
    assert "scripted" in preset_names() and PRESETS["scripted"] is BUILTIN_PRESETS["tiny"]
    monkeypatch.undo()
    assert "scripted" not in PRESETS


def test_load_answerer_names_the_backends_it_knows() -> None:
    assert {"openai", "perception", "transformers"} <= set(answerer_names())
    with pytest.raises(InputError, match="unknown answerer backend 'nope'; choose one of: .*transformers"):
        load_answerer("nope")
    env = {"IDEALAGENT_VLM_BASE_URL": "http://127.0.0.1:9/v1", "IDEALAGENT_VLM_MODEL": "served-vlm"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        answerer = load_answerer("openai", max_concurrency=2)
    assert type(answerer).__name__ == "OpenAIAnswerer" and answerer.model == "served-vlm"
    assert answerer.max_concurrency == 2
