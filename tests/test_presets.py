"""Presets: names, model overrides, and the errors a user sees before or while models load."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from idealagent import Sample
from idealagent.capabilities import capabilities_of
from idealagent.cli import app
from idealagent.errors import InputError, ModelLoadError
from idealagent.examples import example_image
from idealagent.looking.boxes import box_convention_of
from idealagent.looking.closer import choose_mode
from idealagent.presets import PRESETS, get_preset, load_preset, preset_models, preset_names

CAT = str(example_image("cat"))
GPU_PRESETS = ["qwen2.5-vl-3b", "qwen2.5-vl-7b", "qwen2.5-vl-3b+qwen2.5-7b"]


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """A Hugging Face cache with nothing in it, and no way to reach the hub."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_the_issue_presets_exist():
    assert {"tiny", "openai", *GPU_PRESETS} <= set(preset_names())
    for name in GPU_PRESETS:
        assert get_preset(name).models["vlm"].startswith("Qwen/Qwen2.5-VL-")
    assert get_preset("qwen2.5-vl-3b+qwen2.5-7b").models["llm"] == "Qwen/Qwen2.5-7B-Instruct"


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(InputError, match="unknown preset 'huge'.*qwen2.5-vl-3b.*tiny"):
        load_preset("huge")


def test_model_overrides_replace_only_roles_the_preset_has():
    assert preset_models("qwen2.5-vl-3b", vlm="/models/mine") == {"vlm": "/models/mine"}
    split = preset_models("qwen2.5-vl-3b+qwen2.5-7b", llm="/models/llm")
    assert split == {"vlm": "Qwen/Qwen2.5-VL-3B-Instruct", "llm": "/models/llm"}
    with pytest.raises(InputError, match="tiny preset .* takes no model overrides"):
        preset_models("tiny", vlm="x")
    with pytest.raises(InputError, match="no llm model .* takes only --vlm"):
        preset_models("qwen2.5-vl-7b", llm="x")


@pytest.mark.parametrize("name", GPU_PRESETS)
def test_missing_weights_name_the_model_and_how_to_get_it(name, empty_hub_cache):
    with pytest.raises(ModelLoadError) as caught:
        load_preset(name)
    message = str(caught.value)
    assert get_preset(name).models["vlm"] in message
    assert "hf download" in message and "\n" not in message


def test_cli_missing_weights_is_one_line_exit_1(empty_hub_cache):
    result = CliRunner().invoke(app, ["ask", CAT, "What is it?", "--preset", "qwen2.5-vl-3b"])
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "Qwen/Qwen2.5-VL-3B-Instruct" in line


def test_cli_missing_local_folder_is_named(tmp_path):
    folder = tmp_path / "no-such-model"
    result = CliRunner().invoke(app, ["ask", CAT, "What is it?", "--preset", "qwen2.5-vl-3b", "--vlm", str(folder)])
    assert result.exit_code == 1
    assert str(folder) in result.stderr and "Traceback" not in result.stderr


def test_cli_refuses_an_override_the_preset_cannot_take():
    result = CliRunner().invoke(app, ["ask", CAT, "What is it?", "--preset", "tiny", "--vlm", "x"])
    assert result.exit_code == 2
    assert "takes no model overrides" in result.stderr


def test_presets_command_shows_models():
    result = CliRunner().invoke(app, ["presets"])
    assert result.exit_code == 0
    for name in PRESETS:
        assert name in result.stdout
    assert "vlm: Qwen/Qwen2.5-VL-7B-Instruct" in result.stdout


def test_gpu_preset_runs_end_to_end_on_a_local_folder(tmp_path):
    """The qwen2.5-vl-3b preset's real build path, pointed at a tiny random Qwen2.5-VL."""
    from tests.tiny_vlms import make_tiny_qwen2_vl

    folder = make_tiny_qwen2_vl(tmp_path / "qwen2.5-vl", version="2.5")
    agent = load_preset("qwen2.5-vl-3b", vlm=str(folder), max_rounds=1, batch_size=2)
    assert agent.questioner.caller.llm.model is agent.answerer.model  # one copy of the weights
    assert agent.reasoner.caller.llm.model is agent.answerer.model
    assert agent.origin == {"preset": "qwen2.5-vl-3b", "models": {"vlm": str(folder)}}
    [trace] = agent.run_batch([Sample(image=CAT, question="Is there a cat?", kind="yes_no")])
    assert trace.sub_questions and trace.answer in ("yes", "no")
    assert trace.usage.llm_output_tokens > 0 and trace.settings["models"] == {"vlm": str(folder)}
    # Qwen2.5-VL names boxes in pixels of its input; it scores given options.
    assert capabilities_of(agent.answerer).boxes == "pixels" and capabilities_of(agent.answerer).likelihood


@pytest.mark.parametrize(("model", "boxes"), [
    ("Qwen/Qwen2.5-VL-7B-Instruct", "pixels"), ("qwen2_5_vl", "pixels"), ("Qwen/Qwen2-VL-2B-Instruct", "norm1000"),
    ("qwen2_vl", "norm1000"), ("llava-hf/llava-1.5-7b-hf", None), ("Qwen/Qwen2.5-7B-Instruct", None)])
def test_the_openai_preset_declares_boxes_by_the_served_model(model, boxes, monkeypatch):
    assert box_convention_of(model) == boxes
    monkeypatch.setenv("IDEALAGENT_LLM_BASE_URL", "http://llm:8000/v1")
    monkeypatch.setenv("IDEALAGENT_LLM_MODEL", "Qwen/Qwen2.5-7B-Instruct")
    monkeypatch.setenv("IDEALAGENT_VLM_BASE_URL", "http://vlm:8000/v1")
    agent = load_preset("openai", vlm=model)
    declared = capabilities_of(agent.answerer)
    assert declared.boxes == boxes and declared.likelihood is False  # a chat API scores no given reply
    if boxes is not None:  # zoom's search then asks it for boxes (it asks for logprobs, which may be refused)
        assert choose_mode(agent.answerer, "auto") == ("boxes", boxes)


def test_the_tiny_preset_ships_a_calibration_fitted_on_train_data_only():
    from idealagent.calibration import resolve, shipped
    from idealagent.settings import AgentSettings

    assert "tiny" in shipped()
    calibration = resolve("tiny")
    assert calibration.method == "logistic" and {"direct", "verdict"} <= set(calibration.fits)
    assert calibration.name.startswith("logistic (shipped: ")
    fitted_on = calibration.fitted_on
    assert fitted_on["preset"] == "tiny" and all("train" in source for source in fitted_on["sources"])
    tiny = get_preset("tiny").settings
    assert AgentSettings.of(**tiny).calibration == calibration  # the preset's default
    assert AgentSettings.of(**{**tiny, "calibration": "default"}).calibration.method == "default"  # still overridable
