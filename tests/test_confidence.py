"""The direct answer, the confidence signals, the calibration and the choice of the final answer."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from typing import Any

import pytest
from PIL import Image

from idealagent import IdealAgent
from idealagent.answerers import Answer
from idealagent.calibration import NO_DATA_PRIOR, Calibration, default_score, fit, resolve
from idealagent.confidence import agrees, answer_probability, names, share_naming
from idealagent.errors import InputError
from idealagent.settings import AgentSettings
from idealagent.testing import ScriptedChatModel


def sub_questions(*questions: str) -> str:
    return json.dumps({"sub_questions": list(questions)})


def verdict(answer: str, confidence: float, analysis: str = "Looked.") -> str:
    return json.dumps({"analysis": analysis, "answer": answer, "confidence": confidence})


class SureAnswerer:
    """Answers every question with ``answer`` at ``probability``; records the questions."""

    def __init__(self, answer: str = "red", probability: float | None = 0.9) -> None:
        self.answer_text, self.probability = answer, probability
        self.questions: list[str] = []

    def answer(self, requests: Sequence[tuple[Any, str]]) -> list[Answer]:
        self.questions += [question for _, question in requests]
        return [Answer(self.answer_text, 10, 1, self.probability) for _ in requests]

    def caption(self, images: Sequence[Any]) -> list[str]:
        return ["a picture, mostly red" for _ in images]


@pytest.fixture
def image() -> Image.Image:
    return Image.new("RGB", (16, 16), "red")


# -- the direct answer ------------------------------------------------------------------------


def test_the_direct_answer_is_asked_first_and_reaches_the_reasoner_labelled(image) -> None:
    llm = ScriptedChatModel(replies=[sub_questions("Is it red?"), verdict("red", 0.9)])
    answerer = SureAnswerer("dark red", probability=0.2)  # too unsure to stop the loop by itself
    trace = IdealAgent(llm, answerer, calibration="default").run(image, "What colour is it?")
    assert answerer.questions[0] == "What colour is it?"  # before any sub-question
    assert trace.direct is not None and trace.direct.answer == "dark red"
    # agrees_sub joins once there are sub-answers: the answerer said "dark red" to "Is it red?" too.
    assert trace.direct.signals == {"answer_prob": 0.2, "in_caption": 0.0, "agrees_sub": 1.0}
    reasoner_prompt = llm.calls[-1][-1].content
    assert "The vision assistant's direct answer to the main question (may be wrong): dark red" in reasoner_prompt
    questioner_prompt = llm.calls[0][-1].content
    assert "dark red" not in questioner_prompt
    assert trace.settings["direct_answer"] is True
    assert trace.usage.answerer_calls == 2  # the direct answer and one sub-answer


def test_without_the_direct_answer_the_reasoner_sees_none(image) -> None:
    llm = ScriptedChatModel(replies=[sub_questions("Is it red?"), verdict("red", 0.9)])
    answerer = SureAnswerer("crimson")
    trace = IdealAgent(llm, answerer, direct_answer=False, calibration="stated").run(image, "What colour?")
    assert trace.direct is None and answerer.questions == ["Is it red?"]
    assert "direct answer to the main question" not in llm.calls[-1][-1].content
    assert trace.settings["direct_answer"] is False


def test_a_direct_answer_confident_enough_needs_no_round(image) -> None:
    llm = ScriptedChatModel(replies=[])
    trace = IdealAgent(llm, SureAnswerer("red", 0.95), confidence_threshold=0.9).run(image, "What colour?")
    assert trace.rounds == [] and llm.calls == []
    assert trace.stop_reason == "confident" and trace.answer == "red" and trace.confidence == 0.95
    assert trace.answer_source == "direct" and trace.answer_round is None


def test_the_direct_question_carries_the_options_and_the_reply_maps_to_a_choice(image) -> None:
    llm = ScriptedChatModel(replies=[])
    answerer = SureAnswerer("B) dog", 0.99)
    trace = IdealAgent(llm, answerer).run(image, "Which animal?", choices=["cat", "dog"])
    assert answerer.questions == ["Which animal? Options: A) cat B) dog. Answer with one option."]
    assert trace.answer == "dog" and trace.direct.choice_index == 1


# -- candidates and the threshold -------------------------------------------------------------


def test_the_final_answer_is_the_most_confident_candidate(image) -> None:
    # The direct answer (0.6) stays below the threshold; round 1 says blue at 0.3 (stated);
    # round 2, forced, says green at 0.2. The direct answer wins, and the trace says so.
    llm = ScriptedChatModel(replies=[sub_questions("Is it red?"), verdict("blue", 0.3),
                                     sub_questions("Is it green?"), verdict("green", 0.2)])
    calibration = Calibration(method="stated")
    trace = IdealAgent(llm, SureAnswerer("red", 0.6), max_rounds=2, calibration=calibration).run(image, "Colour?")
    # "stated" measures nothing of the direct answer: it gets the prior, and ranks below verdicts.
    assert trace.direct.calibrated == NO_DATA_PRIOR
    assert trace.answer == "blue" and trace.answer_source == "round" and trace.answer_round == 1
    trace = IdealAgent(ScriptedChatModel(replies=[sub_questions("Is it red?"), verdict("blue", 0.3),
                                                  sub_questions("Is it green?"), verdict("green", 0.2)]),
                       SureAnswerer("red", 0.6), max_rounds=2).run(image, "Colour?")
    # default: the direct answer at 0.6; blue at mean(0.3, agrees 0) = 0.15; green at 0.1
    assert [r.verdict.calibrated for r in trace.rounds] == [pytest.approx(0.15), pytest.approx(0.1)]
    assert trace.answer == "red" and trace.confidence == 0.6 and trace.answer_source == "direct"
    assert trace.stop_reason == "max_rounds"


def test_the_threshold_applies_to_the_calibrated_confidence(image) -> None:
    # Stated 0.9 would stop at once; against a direct answer it contradicts, the default
    # combination gives mean(0.9, 0) = 0.45, so the loop asks again.
    llm = ScriptedChatModel(replies=[sub_questions("Is it red?"), verdict("blue", 0.9),
                                     sub_questions("Is it dark?"), verdict("red", 0.9)])
    trace = IdealAgent(llm, SureAnswerer("red", 0.5), max_rounds=3).run(image, "What colour is it?")
    first, second = (r.verdict for r in trace.rounds)
    assert first.confidence == 0.9 and first.calibrated == pytest.approx(0.45)
    assert second.signals["agrees_direct"] == 1.0 and second.calibrated == pytest.approx(0.95)
    assert trace.stop_reason == "confident" and trace.answer == "red" and trace.answer_round == 2


def test_each_verdict_records_its_signals(image) -> None:
    llm = ScriptedChatModel(replies=[sub_questions("Is it red?", "What is it?"), verdict("red", 0.8)])
    answerer = SureAnswerer("a red ball", 0.6)
    trace = IdealAgent(llm, answerer, max_rounds=1).run(image, "What colour is it?")
    signals = trace.rounds[0].verdict.signals
    # The scripted chat model gives no log-probabilities: that signal is absent, not invented.
    assert signals == {"stated": 0.8, "direct_prob": 0.6, "agrees_direct": 1.0, "agrees_sub": 1.0,
                       "in_caption": 1.0}


def test_votes_sample_the_reasoner_and_record_their_agreement(image) -> None:
    replies = [sub_questions("Is it red?"), verdict("red", 0.5), verdict("red", 0.5), verdict("blue", 0.5),
               verdict("red", 0.5)]
    llm = ScriptedChatModel(replies=replies)
    trace = IdealAgent(llm, SureAnswerer("red", 0.1), max_rounds=1, votes=3).run(image, "What colour?")
    found = trace.rounds[0].verdict
    assert found.votes == ["red", "blue", "red"] and found.signals["votes"] == pytest.approx(2 / 3)
    assert trace.usage.llm_calls == 5


# -- signals ------------------------------------------------------------------------------------


def test_answer_probability_covers_the_answer_tokens_only() -> None:
    tokens = [('{"', -0.01), ("analysis", -0.2), ('":"', -0.01), ("x", -0.5), ('","', -0.01), ("answer", -0.01),
              ('":"', -0.02), ("dark", -0.3), (" red", -0.4), ('","', -0.05), ("confidence", -0.1)]
    assert answer_probability(tokens, "dark red") == pytest.approx(math.exp(-0.7))
    plain = [("It", -0.1), ("'s", -0.2), (" blue", -0.3), (".", -0.1)]
    assert answer_probability(plain, "blue") == pytest.approx(math.exp(-0.3))
    assert answer_probability(None, "blue") is None and answer_probability(plain, "green") is None


def test_agreement_reads_answers_as_vqa_does() -> None:
    assert agrees("a tabby cat", "cat") and agrees("Dog.", "dog") and agrees("two", "2")
    assert not agrees("cat", "catamaran") and not agrees("", "")
    assert names("mostly red, some white", "red") and not names("reddish", "red")
    assert share_naming(["a red ball", "no", "cannot tell", "red"], "red") == 0.5
    assert share_naming([], "red") is None


# -- calibration ------------------------------------------------------------------------------


def test_a_logistic_fit_recovers_a_known_relation() -> None:
    rng = random.Random(0)
    true_bias, true_weight = -0.5, 1.5  # P(right) = sigmoid(-0.5 + 1.5 * logit(answer_prob))
    examples = []
    for _ in range(4000):
        p = rng.uniform(0.02, 0.98)
        z = true_bias + true_weight * math.log(p / (1 - p))
        examples.append(({"answer_prob": p, "in_caption": float(rng.random() < 0.5)},
                         float(rng.random() < 1 / (1 + math.exp(-z)))))
    fitted = fit({"direct": examples}, "logistic").fits["direct"]
    weights = dict(zip(fitted.features, fitted.weights))
    assert fitted.bias == pytest.approx(true_bias, abs=0.15)
    assert weights["answer_prob"] == pytest.approx(true_weight, abs=0.15)
    assert abs(weights["in_caption"]) < 0.2  # noise gets (nearly) no weight


def test_an_isotonic_fit_is_monotone_and_matches_the_frequencies() -> None:
    examples = [({"answer_prob": 0.2}, 0.0)] * 30 + [({"answer_prob": 0.2}, 1.0)] * 10 \
        + [({"answer_prob": 0.8}, 1.0)] * 24 + [({"answer_prob": 0.8}, 0.0)] * 6
    calibration = fit({"direct": examples}, "isotonic")
    assert calibration.confidence("direct", {"answer_prob": 0.2}) == pytest.approx(0.25)
    assert calibration.confidence("direct", {"answer_prob": 0.8}) == pytest.approx(0.8)
    assert calibration.confidence("direct", {"answer_prob": 0.5}) == pytest.approx(0.525)
    # No verdicts to fit on: a verdict gets the no-data prior, not a measured value.
    assert calibration.confidence("verdict", {"stated": 0.9}) == NO_DATA_PRIOR
    assert not calibration.measures("verdict", {"stated": 0.9}) and calibration.measures("direct", {"answer_prob": 0.5})
    assert calibration.prior("direct") == calibration.fits["direct"].mean_score


def test_an_isotonic_fit_without_knots_gives_no_confidence() -> None:
    # Twelve direct answers, but only three with the answer probability the isotonic fit reads:
    # too few to fit a curve, so no knots: no signal is measured (not a 0), and a candidate gets
    # the fit's base rate, its prior.
    examples = [({"in_caption": 1.0}, 1.0)] * 9 + [({"answer_prob": 0.9}, 1.0)] * 3
    calibration = fit({"direct": examples}, "isotonic")
    assert calibration.fits["direct"].knots == []
    for probability in (0.9, 0.1):
        assert not calibration.measures("direct", {"answer_prob": probability})
        assert calibration.confidence("direct", {"answer_prob": probability}) == calibration.prior("direct") == 1.0


def test_calibration_files_round_trip_and_bad_ones_are_one_line_errors(tmp_path) -> None:
    examples = [({"answer_prob": p / 20, "in_caption": float(p % 2)}, float(p > 9)) for p in range(1, 20)]
    calibration = fit({"direct": examples, "verdict": [({"stated": 0.9}, 1.0)] * 3}, "logistic",
                      {"files": ["train.jsonl"]})
    path = tmp_path / "calibration.json"
    calibration.save(path)
    loaded = resolve(str(path))
    assert loaded == calibration and "verdict" not in loaded.fits  # 3 verdicts are too few
    assert loaded.confidence("direct", {"answer_prob": 0.7}) == calibration.confidence("direct", {"answer_prob": 0.7})
    assert AgentSettings.of(calibration=str(path)).calibration == calibration
    (tmp_path / "bad.json").write_text('{"format": 1, "method": "magic"}')
    (tmp_path / "other.json").write_text('{"rows": []}')
    for bad, message in [("bad.json", "invalid calibration file"), ("other.json", "not a calibration file"),
                         ("missing.json", "no calibration file")]:
        with pytest.raises(InputError, match=message) as error:
            AgentSettings.of(calibration=str(tmp_path / bad))
        assert "\n" not in str(error.value)


def test_the_default_and_stated_calibrations_are_documented_combinations() -> None:
    signals = {"stated": 0.9, "answer_prob": 0.5, "agrees_direct": 0.0, "agrees_sub": 1.0}
    assert default_score("verdict", signals) == pytest.approx((0.9 + 0.5 + 0.0) / 3)
    assert default_score("direct", {"answer_prob": 0.7}) == 0.7 and default_score("direct", {}) is None
    assert resolve("stated").confidence("verdict", signals) == 0.9
    assert resolve("stated").confidence("direct", {"answer_prob": 0.99}) == NO_DATA_PRIOR
    assert not resolve("stated").measures("direct", {"answer_prob": 0.99})
    assert resolve("default").confidence("direct", {}) == NO_DATA_PRIOR and not resolve("default").measures("direct", {})


# -- servers: the signal is the server's, or absent ---------------------------------------------


@pytest.mark.parametrize("logprobs", [True, False], ids=["with-logprobs", "without"])
def test_a_servers_logprobs_reach_the_trace_and_their_absence_is_not_filled_in(logprobs: bool) -> None:
    from idealagent.answerers.openai import OpenAIAnswerer
    from idealagent.llms.openai import make_chat_model
    from tests.openai_stub import STUB_LOGPROB, StubServer
    from tests.test_structured_forms import FAST, QUESTION, endpoint

    with StubServer(endpoint, logprobs=logprobs) as stub:
        llm = make_chat_model("stub-llm", stub.base_url, timeout=5.0, attempts=4, **FAST)
        answerer = OpenAIAnswerer("stub-vlm", stub.base_url, timeout=5.0, **FAST)
        # A threshold above anything reachable, so that the round runs and is judged.
        trace = IdealAgent(llm, answerer, max_rounds=1, confidence_threshold=1.0).run(
            Image.new("RGB", (8, 8), "red"), QUESTION)
    direct, found = trace.direct, trace.rounds[0].verdict
    assert direct.answer == "red" and found.answer == "red"
    if logprobs:  # the stub gives every word-token STUB_LOGPROB; each answer is one token
        assert direct.signals["answer_prob"] == pytest.approx(math.exp(STUB_LOGPROB))
        assert found.signals["answer_prob"] == pytest.approx(math.exp(STUB_LOGPROB))
        assert found.signals["direct_prob"] == pytest.approx(math.exp(STUB_LOGPROB))
    else:
        # Not filled in: no signal, so the prior, and the calibration says it measured nothing.
        assert "answer_prob" not in direct.signals and direct.calibrated == NO_DATA_PRIOR
        assert not Calibration().measures("direct", direct.signals)
        assert "answer_prob" not in found.signals and "direct_prob" not in found.signals
    assert trace.answer == "red" and trace.stop_reason == "max_rounds"


# -- failures of the direct answer -----------------------------------------------------------


class FailingDirect(SureAnswerer):
    """Fails the direct question (the main question) with ``error`` the first ``times`` times."""

    def __init__(self, error: Exception, times: int) -> None:
        super().__init__("red", 0.5)
        self.error, self.times = error, times

    def answer_each(self, requests):
        self.questions += [question for _, question in requests]
        failing = self.times > 0 and any(question == "What colour is it?" for _, question in requests)
        self.times -= failing
        return [self.error if failing and question == "What colour is it?" else Answer("red", 1, 1, 0.5)
                for _, question in requests]


def test_a_direct_answer_the_infrastructure_failed_is_asked_again(image) -> None:
    from idealagent.errors import InfrastructureError

    llm = ScriptedChatModel(replies=[sub_questions("Is it red?"), verdict("red", 0.9)])
    answerer = FailingDirect(InfrastructureError("HTTP 503 after 5 tries"), times=1)
    trace = IdealAgent(llm, answerer, max_rounds=1).run(image, "What colour is it?")
    assert answerer.questions[:2] == ["What colour is it?", "What colour is it?"]
    assert trace.direct.answer == "red" and trace.direct.error is None and trace.answer == "red"
    answerer = FailingDirect(InfrastructureError("HTTP 503 after 5 tries"), times=99)
    with pytest.raises(InfrastructureError, match="HTTP 503"):  # never a result
        IdealAgent(ScriptedChatModel(replies=[]), answerer, max_rounds=1).run(image, "What colour is it?")


def test_a_direct_answer_that_fails_on_the_sample_is_recorded_and_the_loop_goes_on(image) -> None:
    from idealagent.errors import ModelOutputError

    llm = ScriptedChatModel(replies=[sub_questions("Is it red?"), verdict("red", 0.9)])
    answerer = FailingDirect(ModelOutputError("no answer in the reply"), times=1)
    trace = IdealAgent(llm, answerer, max_rounds=1).run(image, "What colour is it?")
    assert trace.direct.answer is None and "no answer in the reply" in trace.direct.error
    assert trace.answer == "red" and trace.answer_source == "round" and trace.error is None
    assert "direct answer to the main question" not in llm.calls[-1][-1].content


def test_a_preset_can_name_its_calibration_file(tmp_path, monkeypatch) -> None:
    import idealagent.presets
    from idealagent.presets import Preset, load_preset

    calibration = fit({"direct": [({"answer_prob": p / 20}, float(p > 9)) for p in range(1, 20)]}, "logistic")
    calibration.save(tmp_path / "calibration.json")
    build = lambda: {"llm": ScriptedChatModel(), "answerer": SureAnswerer()}  # noqa: E731
    monkeypatch.setitem(idealagent.presets.PRESETS, "calibrated",
                        Preset("calibrated", "", build, {"calibration": str(tmp_path / "calibration.json")}))
    assert load_preset("calibrated").settings.calibration == calibration
    assert load_preset("calibrated", calibration="stated").settings.calibration.method == "stated"


# -- compute goes where it pays -----------------------------------------------------------------


def _row(answers: list[str], direct: str, verdicts: list[str]) -> dict[str, Any]:
    rounds = [{"index": i + 1, "verdict": {"answer": v, "analysis": "", "confidence": 0.5, "signals": {"stated": 0.5}}}
              for i, v in enumerate(verdicts)]
    return {"metric": "exact", "answers": answers, "score": 0.0, "prediction": verdicts[-1] if verdicts else direct,
            "trace": {"direct": {"answer": direct, "signals": {}}, "rounds": rounds}}


def test_round_records_count_the_samples_each_round_fixed() -> None:
    from idealagent.evaluation.calibrate import round_records

    rows = [_row(["cat"], "dog", ["cat", "cat"]),  # round 1 fixed it; round 2 had nothing to fix
            _row(["cat"], "dog", ["dog", "cat"]),  # round 2 fixed it
            _row(["cat"], "cat", ["dog"]),  # right before any round: round 1 broke it, fixed nothing
            _row(["cat"], "dog", [])]  # no round
    records = round_records({}, rows)
    assert {i: (r.reached, r.fixed) for i, r in records.items()} == {1: (3, 1), 2: (2, 1)}


def test_a_round_that_never_paid_in_the_fitted_run_is_not_asked(image) -> None:
    from idealagent.calibration import MIN_ROUND_EVIDENCE, RoundRecord

    never = Calibration(method="default", rounds={1: RoundRecord(reached=MIN_ROUND_EVIDENCE, fixed=0)})
    assert not never.round_pays(1) and never.round_pays(2)  # round 2: no record, so it may pay
    assert Calibration(rounds={1: RoundRecord(reached=MIN_ROUND_EVIDENCE - 1, fixed=0)}).round_pays(1)
    llm = ScriptedChatModel(replies=[])  # no LLM call may be made
    trace = IdealAgent(llm, SureAnswerer("red", 0.5), calibration=never).run(image, "What colour is it?")
    assert trace.stop_reason == "rounds_do_not_pay" and trace.answer == "red" and not trace.rounds
    assert llm.calls == []
    # Without a candidate to keep, round 1 is asked all the same.
    llm = ScriptedChatModel(replies=[sub_questions("Is it red?"), verdict("red", 0.9)])
    trace = IdealAgent(llm, SureAnswerer("red", 0.5), calibration=never, direct_answer=False).run(image, "Colour?")
    assert trace.judged_rounds == 1
    # The record survives a save and a load.
    assert Calibration.model_validate(json.loads(never.model_dump_json())) == never
