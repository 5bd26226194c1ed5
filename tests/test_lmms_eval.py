"""The agent inside lmms-eval: lmms-eval's own evaluator finds the model through the
``lmms_eval.models`` entry point pyproject.toml declares, runs two local tasks
(tests/lmms_tasks/idealagent_smoke) on a scripted preset, and scores the replies with its own
scorers; those scores must equal what idealagent's scoring gives the traces it wrote."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import idealagent.presets
from idealagent.errors import InputError
from idealagent.evaluation.scoring import choice_accuracy, vqa_score
from idealagent.presets import Preset
from idealagent.testing import ScriptedAnswerer, ScriptedChatModel

ROOT = Path(__file__).resolve().parent.parent
TASKS = ROOT / "tests" / "lmms_tasks"
PRESET = "lmms-fake"

# The scripted reasoner's answer to each main question (its first line).
FAKE_ANSWERS = {
    "What colour is the square?": "red",
    "What colour is the circle?": "blue",
    "How many shapes are there?": "Two",
    "Is the square yellow?": "no",
    "Is there a circle? Please answer yes or no.": "yes",
    "Which shape is red?": "B",
    "What colour is the background?": "black",
    "Which shape is blue?": "A",
}
VQA_DOCS = [  # question, the ten human answers
    ("What colour is the square?", ["red"] * 10),
    ("What colour is the circle?", ["green"] * 8 + ["blue"] * 2),  # partial credit: 0.6
    ("How many shapes are there?", ["2"] * 10),  # "Two" is 2 once digits are normalised
    ("Is the square yellow?", ["yes"] * 10),
    ("Is there a circle? Please answer yes or no.", ["yes"] * 10),
]
MC_DOCS = [  # question, choices, gold index
    ("Which shape is red?", ["circle", "square", "triangle"], 1),
    ("What colour is the background?", ["white", "black"], 0),
    ("Which shape is blue?", ["circle", "square"], 0),
]


def _reply(messages: list[Any]) -> str:
    system, user = str(messages[0].content), str(messages[-1].content)
    if "sub-questions whose answers" in system:  # the questioner
        return json.dumps({"sub_questions": ["What shapes are in the picture?"]})
    question = re.search(r"Main question: (.*)", user).group(1).strip()
    return json.dumps({"analysis": "Scripted.", "answer": FAKE_ANSWERS[question], "confidence": 0.9})


@pytest.fixture
def fake_preset(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The scripted preset lmms-eval's model loads by name; the models it built, for asserts."""
    built: dict[str, Any] = {}

    def build(**_: Any) -> dict[str, Any]:
        built.update(llm=ScriptedChatModel(replies=[_reply] * 1000), answerer=ScriptedAnswerer("red"))
        return dict(built)

    preset = Preset(PRESET, "Scripted models for the lmms-eval tests.", build,
                    {"max_rounds": 2, "attempts": 1, "calibration": "stated"})
    monkeypatch.setitem(idealagent.presets.PRESETS, PRESET, preset)
    return built


@pytest.fixture
def lmms_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> type:
    """lmms-eval's class for ``--model idealagent``, found through the entry point that
    pyproject.toml declares (installed here as a distribution of its own on the path)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("LMMS_EVAL_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    group = "lmms_eval.models"
    # The table as pyproject.toml writes it (tomllib is Python 3.11+; the package supports 3.10).
    table = (ROOT / "pyproject.toml").read_text().split(f'[project.entry-points."{group}"]\n')[1].split("\n[")[0]
    points = dict(line.replace('"', "").split(" = ") for line in table.splitlines() if " = " in line)
    dist = tmp_path / "site" / "idealagent_lmms_probe-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: idealagent-lmms-probe\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    from lmms_eval.models import MODEL_REGISTRY_V2, get_model

    MODEL_REGISTRY_V2.load_entrypoint_manifests(overwrite=True)  # what lmms-eval does on import
    return get_model("idealagent")


def _write_data(folder: Path) -> None:
    """The two tasks' JSON Lines files and their images, in ``folder`` (the tasks' data_files
    are relative to the working directory)."""
    for name, colour in (("red.png", "red"), ("blue.png", "blue")):
        Image.new("RGB", (24, 24), colour).save(folder / name)
    with open(folder / "idealagent_smoke_vqa.jsonl", "w") as out:
        for i, (question, answers) in enumerate(VQA_DOCS):
            doc = {"question_id": i, "question": question, "image": "red.png", "answer": answers[0],
                   "answers": [{"answer": a, "answer_id": k} for k, a in enumerate(answers)]}
            out.write(json.dumps(doc) + "\n")
    with open(folder / "idealagent_smoke_mc.jsonl", "w") as out:
        for question, choices, gold in MC_DOCS:
            out.write(json.dumps({"question": question, "choices": choices, "answer": gold, "image": "blue.png"})
                      + "\n")


def test_the_core_never_imports_the_integrations() -> None:
    """Only lmms-eval imports idealagent.integrations.lmms_eval; nothing else imports lmms_eval."""
    from tests.test_import_cycles import graph, modules

    edges = graph()
    outside = [name for name in edges if not name.startswith("idealagent.integrations")]
    assert not [name for name in outside if any(t.startswith("idealagent.integrations") for t in edges[name])]
    assert not [name for name in outside if "lmms_eval" in modules()[name].read_text(encoding="utf-8")]


def test_installing_lmms_eval_kept_the_cpu_torch() -> None:
    """make setup installs lmms-eval without its torchvision (which would bring another torch)."""
    import torch

    assert torch.__version__.split("+")[0] == "2.13.0"
    assert importlib.util.find_spec("torchvision") is None
    assert importlib.util.find_spec("lmms_eval") is not None


def test_lmms_eval_scores_the_agent_as_our_scoring_does(
        fake_preset: dict[str, Any], lmms_model: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from idealagent.integrations.lmms_eval import IdealAgentLMM

    assert lmms_model is IdealAgentLMM
    monkeypatch.chdir(tmp_path)
    _write_data(tmp_path)
    traces = tmp_path / "out" / "traces.jsonl"
    results = simple_evaluate(
        model="idealagent", model_args=f"preset={PRESET},confidence_threshold=0.8,traces={traces}",
        tasks=["idealagent_smoke_vqa", "idealagent_smoke_mc"], log_samples=True, bootstrap_iters=0,
        task_manager=TaskManager(include_path=str(TASKS), include_defaults=False, model_name="idealagent"))

    rows = [json.loads(line) for line in traces.read_text().splitlines()]
    by_doc = {(row["task"], row["doc_id"]): row for row in rows}
    assert len(by_doc) == len(rows) == len(VQA_DOCS) + len(MC_DOCS)
    # Ours: the VQA accuracy as lmms-eval computes it (the pre-2021 processing) and choice accuracy.
    ours = {"idealagent_smoke_vqa": [vqa_score(by_doc["idealagent_smoke_vqa", i]["reply"], answers, "vqa-legacy")
                                     for i, (_, answers) in enumerate(VQA_DOCS)],
            "idealagent_smoke_mc": [choice_accuracy(by_doc["idealagent_smoke_mc", i]["trace"]["choice_index"], gold)
                                    for i, (*_, gold) in enumerate(MC_DOCS)]}
    assert ours == {"idealagent_smoke_vqa": pytest.approx([1.0, 0.6, 1.0, 0.0, 1.0]),
                    "idealagent_smoke_mc": [1.0, 0.0, 1.0]}
    for task, scores in ours.items():
        theirs = {sample["doc_id"]: sample["exact_match"] for sample in results["samples"][task]}
        assert [theirs[i] for i in range(len(scores))] == pytest.approx(scores)
        assert results["results"][task]["exact_match,none"] == pytest.approx(sum(scores) / len(scores))

    # The prompt's instruction reached the agent; options became choices, answered by letter.
    mc = by_doc["idealagent_smoke_mc", 1]
    assert mc["trace"]["sample"]["kind"] == "multiple_choice"
    assert mc["trace"]["sample"]["choices"] == ["white", "black"]
    assert mc["trace"]["sample"]["question"] == ("What colour is the background?\n"
                                                 "Answer with the option's letter from the given choices directly.")
    assert [by_doc["idealagent_smoke_mc", i]["reply"] for i in range(3)] == ["B", "B", "A"]
    assert by_doc["idealagent_smoke_vqa", 4]["trace"]["sample"]["kind"] == "yes_no"
    assert by_doc["idealagent_smoke_vqa", 0]["trace"]["sample"]["question"].endswith(
        "\nAnswer the question using a single word or phrase.")
    # model_args reached the settings; lmms-eval logged each sample's tokens.
    assert all(row["trace"]["settings"]["confidence_threshold"] == 0.8 for row in rows)
    usage = by_doc["idealagent_smoke_mc", 0]["trace"]["usage"]
    assert results["samples"]["idealagent_smoke_mc"][0]["token_counts"] == [
        {"input_tokens": usage["llm_input_tokens"] + usage["answerer_input_tokens"],
         "output_tokens": usage["llm_output_tokens"] + usage["answerer_output_tokens"]}]
    # One pipelined batch: the reasoner saw every sample, each once (one round each).
    reasoner_calls = [c for c in fake_preset["llm"].calls if "sub-questions whose answers" not in str(c[0].content)]
    assert len(reasoner_calls) == len(rows)


def test_bad_model_args_are_one_line_errors_before_any_model_loads(
        fake_preset: dict[str, Any], lmms_model: type) -> None:
    with pytest.raises(InputError, match=r"^max_rounds: input should be greater than or equal to 1, got 0$"):
        lmms_model.create_from_arg_string(f"preset={PRESET},max_rounds=0")
    with pytest.raises(InputError, match=r"^unknown agent setting\(s\): rounds; known: max_rounds, "):
        lmms_model.create_from_arg_string(f"preset={PRESET},rounds=2")
    with pytest.raises(InputError, match=r"^unknown preset 'nope'"):
        lmms_model.create_from_arg_string("preset=nope")
    assert fake_preset == {}  # nothing was built


def test_lmms_eval_batch_size_sets_the_samples_in_flight_except_its_default(
        fake_preset: dict[str, Any], lmms_model: type) -> None:
    assert lmms_model.create_from_arg_string(f"preset={PRESET}", {"batch_size": "16"}).agent.settings.batch_size == 16
    default = idealagent.presets.preset_settings(PRESET).batch_size
    assert lmms_model.create_from_arg_string(f"preset={PRESET}", {"batch_size": 1}).agent.settings.batch_size == default


class _Instance:
    """The part of lmms-eval's Instance the model reads."""

    def __init__(self, context: str, visuals: list[Any], doc_id: int = 0) -> None:
        self.args = (context, {"until": ["\n"]}, lambda doc: visuals, doc_id, "t", "test")
        self.task_name, self.doc_id = "t", doc_id


@pytest.mark.parametrize(("visuals", "problem"), [
    (["clip.mp4"], r"a video or other non-image file \(clip.mp4\)"),
    ([Image.new("RGB", (4, 4)), Image.new("RGB", (4, 4))], r"2 visuals"),
    ([], r"0 visuals"),
    ([{"array": [0.0], "sampling_rate": 16000}], r"an audio clip"),
])
def test_unsupported_docs_stop_the_run_before_any_model_call(
        fake_preset: dict[str, Any], lmms_model: type, visuals: list[Any], problem: str) -> None:
    model = lmms_model.create_from_arg_string(f"preset={PRESET}")
    model.task_dict = {"t": {"test": [{}, {}]}}
    fine = _Instance("What is it?", [Image.new("RGB", (4, 4))], doc_id=0)
    with pytest.raises(NotImplementedError, match=rf"^idealagent cannot run task 't': doc 1 has {problem}"):
        model.generate_until([fine, _Instance("What is it?", visuals, doc_id=1)])
    assert fake_preset["llm"].calls == [] and fake_preset["answerer"].requests == []


def test_loglikelihood_and_multi_round_requests_are_refused_by_name(
        fake_preset: dict[str, Any], lmms_model: type) -> None:
    model = lmms_model.create_from_arg_string(f"preset={PRESET}")
    with pytest.raises(NotImplementedError, match=r"^idealagent does not support log-likelihood requests .*: task\(s\) t$"):
        model.loglikelihood([_Instance("Q?", [])])
    with pytest.raises(NotImplementedError, match=r"^idealagent does not support multi-round generation"):
        model.generate_until_multi_round([_Instance("Q?", [])])
