"""Scoring, calibration and agent statistics, checked against hand-computed values."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idealagent.answers import (
    ARTICLES,
    CONTRACTIONS,
    NUMBER_WORDS,
    PUNCTUATION,
    normalize_answer,
    process_digit_article,
    process_punctuation,
    strip_whitespace,
)
from idealagent.errors import InputError
from idealagent.evaluation.loop_stats import agent_stats, is_fallback
from idealagent.evaluation.scoring import (
    DEFAULT_VQA_METRIC,
    VQA_METRICS,
    choice_accuracy,
    exact_match,
    score,
    vqa_score,
)
from idealagent.evaluation.trust import accuracy_at_coverage, calibration_bins, expected_calibration_error
from idealagent.trace import Round, Sample, SubQA, Trace, Usage, Verdict
from tests.official_vqa_eval import VQAEval, official_2021, official_legacy


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("two", "2"),
        ("Ten", "10"),
        ("none", "0"),  # a number word in the official map
        ("the dog", "dog"),
        ("A dog", "dog"),
        ("a", ""),  # an article alone vanishes
        ("yes.", "yes"),
        ("Yes, it is.", "yes it is"),
        ("3.5", "3.5"),  # a period before a digit stays
        ("5.", "5"),
        ("1,000", "1000"),  # digit-comma-digit: every mark is deleted, not spaced
        ("x-ray", "x ray"),  # a glued hyphen becomes a space
        ("t-shirt", "t shirt"),
        ("yes!", "yes"),
        ("red/white", "red white"),  # a glued mark becomes a space
        ("red / white", "red white"),  # a mark touching a space is deleted
        ("dont", "don't"),  # the contraction map restores the apostrophe ...
        ("don't", "don't"),  # ... which is not punctuation
        ("3:30", "3:30"),  # nor is the colon
        ("{cat}", "cat"),
        ("  two\tdogs\n", "2 dogs"),
    ],
)
def test_normalize_answer_matches_the_official_rules(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_dont_and_don_t_meet_as_in_the_official_evaluation() -> None:
    assert normalize_answer("dont") == normalize_answer("don't") == "don't"
    for variant in VQA_METRICS:
        assert vqa_score("dont", ["don't"] * 9 + ["no"], variant) == 1.0
        assert vqa_score("don't", ["don't"] * 9 + ["no"], variant) == 1.0


def test_t_shirt_and_t_shirt_meet_only_where_the_answers_are_processed() -> None:
    assert normalize_answer("t-shirt") == normalize_answer("t shirt") == "t shirt"
    differing = ["t shirt"] * 3 + ["shirt"] * 7
    assert vqa_score("t-shirt", differing, "vqa2021") == pytest.approx(0.9)
    assert vqa_score("t-shirt", differing, "vqa-legacy") == pytest.approx(0.9)
    # Identical human answers: the 2021 code compares the prediction raw, the legacy code normalised.
    assert vqa_score("t-shirt", ["t shirt"] * 10, "vqa2021") == 0.0
    assert vqa_score("t-shirt", ["t shirt"] * 10, "vqa-legacy") == 1.0
    assert vqa_score("yes!", ["yes"] * 9 + ["no"], "vqa2021") == 1.0


def test_the_tables_are_the_official_ones() -> None:
    official = VQAEval()
    assert list(PUNCTUATION) == official.punct == [
        ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
    assert CONTRACTIONS == official.contractions
    assert NUMBER_WORDS == official.manualMap
    assert ARTICLES == set(official.articles)


@pytest.mark.parametrize("variant", list(VQA_METRICS))
@pytest.mark.parametrize(
    ("matches", "expected"),
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_vqa_score_averages_the_ten_leave_one_out_subsets(
    matches: int, expected: float, variant: str
) -> None:
    # 2 matches: 8 subsets keep both (2/3), 2 subsets keep one (1/3): (8*2/3 + 2*1/3)/10 = 0.6.
    answers = ["yes"] * matches + ["no"] * (10 - matches)
    assert vqa_score("yes", answers, variant) == pytest.approx(expected)


def test_the_default_is_the_official_2021_processing() -> None:
    assert DEFAULT_VQA_METRIC == "vqa2021"
    assert vqa_score("Yes", ["yes"] * 10) == vqa_score("Yes", ["yes"] * 10, "vqa2021")
    assert score("vqa", "none", None, ["none"] * 4, None) == 1.0  # the default reaches score() too


@pytest.mark.parametrize(
    ("prediction", "answers", "official", "legacy"),
    [
        # The issue's examples: differing answers are normalised on both sides since 2021 ...
        ("Yes", ["Yes", "Yes"] + ["no"] * 8, 0.6, 0.0),
        # ... and identical ones on neither (the legacy code turned the prediction into "0").
        ("none", ["none"] * 4, 1.0, 0.0),
        # Identical answers leave the prediction raw: case, articles and number words all count.
        ("Yes", ["yes"] * 10, 0.0, 1.0),
        ("Two.", ["2"] * 10, 0.0, 1.0),
        ("the dog", ["dog"] * 10, 0.0, 1.0),
        ("1,000", ["1000"] * 10, 0.0, 1.0),
        (" yes\n", ["yes"] * 10, 1.0, 1.0),  # whitespace is trimmed in both
        (" Yes\n", ["yes"] * 10, 0.0, 1.0),
        # Differing answers get number words and articles only since 2021.
        ("two", ["two"] * 3 + ["dog"] * 7, 0.9, 0.0),
        ("2", ["two"] * 3 + ["dog"] * 7, 0.9, 0.0),
        ("the dog", ["a dog"] * 3 + ["cat"] * 7, 0.9, 0.0),
        # Punctuation on differing answers is removed in both.
        ("yes", ["yes."] * 3 + ["no"] * 7, 0.9, 0.9),
        # Identical answers are compared unprocessed in both (the official files are pre-normalised).
        ("yes", ["yes."] * 10, 0.0, 0.0),
        # The 2021 code trims the human answers before comparing them; the legacy code did not.
        ("yes", [" yes"] * 10, 1.0, 0.0),
        ("yes", ["yes", "yes\t"] + ["no"] * 8, 0.6, 0.3),
    ],
)
def test_vqa_score_variants_by_hand(
    prediction: str, answers: list[str], official: float, legacy: float
) -> None:
    assert vqa_score(prediction, answers, "vqa2021") == pytest.approx(official)
    assert vqa_score(prediction, answers, "vqa-legacy") == pytest.approx(legacy)
    assert score("vqa", prediction, None, answers, None, vqa_metric="vqa-legacy") == pytest.approx(legacy)


def test_vqa_score_with_fewer_answers() -> None:
    for variant in VQA_METRICS:
        # Leave-one-out over what there is: 3 identical answers leave 2 matches in every subset.
        assert vqa_score("cat", ["cat"] * 3, variant) == pytest.approx(2 / 3)
        # One answer: nothing to leave out, so it is a normalised exact match.
        assert vqa_score("the cat", ["cat"], variant) == 1.0
        assert vqa_score("dog", ["cat"], variant) == 0.0
        with pytest.raises(InputError, match="no human answers"):
            vqa_score("cat", [], variant)
    with pytest.raises(InputError, match="unknown VQA metric 'lmms'.*vqa2021, vqa-legacy"):
        vqa_score("cat", ["cat", "dog"], "lmms")


# -- against the official code, transcribed line by line in tests/official_vqa_eval.py ----------

# Characters the processing treats specially: every official punctuation mark, the marks it
# leaves alone (":", "'", the curly apostrophe), periods, digits, commas, whitespace, letters.
ALPHABET = "".join(PUNCTUATION) + ":'’.,0123456789 \t\nabeosyAEY"
WORDS = ["yes", "Yes", "YES.", "no", "no!", "yes!", "2", "two", "Two", "ten", "none", "0", "the", "a", "An",
         "dog", "dog.", "t-shirt", "t shirt", "tshirt", "red/white", "red / white", "dont", "don't", "don’t",
         "isnt", "Im", "1,000", "1000", "3.5", "3.", "5:30", "(yes)", "{a}", "x-ray", "it's", "oclock"]


def _generated(rng: random.Random) -> str:
    """A known word alone (a third of the time), or a few of them and, half the time, some random
    characters."""
    if rng.random() < 1 / 3:
        return rng.choice(WORDS)
    words = rng.choices(WORDS, k=rng.randint(1, 3))
    if rng.random() < 0.5:
        words.insert(rng.randint(0, len(words)), "".join(rng.choices(ALPHABET, k=rng.randint(1, 6))))
    return rng.choice(["", " ", "\t"]) + rng.choice([" ", "", "-", "/"]).join(words) + rng.choice(["", " ", "\n"])


def _question(rng: random.Random) -> tuple[str, list[str]]:
    """A prediction and 2 to 10 human answers drawn from a few candidates, the prediction among
    them half the time, so that matches (and identical answer sets) are common."""
    prediction = _generated(rng)
    pool = [_generated(rng) for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.5:
        pool.append(prediction)
    return prediction, rng.choices(pool, k=rng.choice([2, 3, 5, 10, 10, 10]))


CASES = 3000


def test_each_processing_step_matches_the_official_code_on_generated_answers() -> None:
    rng = random.Random(16)
    official = VQAEval()
    for _ in range(CASES):
        text = _generated(rng)
        assert process_punctuation(text) == official.processPunctuation(text), repr(text)
        assert process_digit_article(text) == official.processDigitArticle(text), repr(text)
        stripped = text.replace("\n", " ").replace("\t", " ").strip()  # the official first step
        assert strip_whitespace(text) == stripped, repr(text)
        assert normalize_answer(text) == official.processDigitArticle(official.processPunctuation(stripped))


def test_vqa_score_matches_the_official_loops_on_generated_questions() -> None:
    rng = random.Random(2021)
    for _ in range(CASES):
        prediction, answers = _question(rng)
        assert vqa_score(prediction, answers, "vqa2021") == official_2021(prediction, answers), (prediction, answers)
        legacy = vqa_score(prediction, answers, "vqa-legacy")
        assert legacy == official_legacy(prediction, answers), (prediction, answers)


# Answers that the processing steps treat differently: case, punctuation, number words,
# articles, contractions, whitespace, digit commas.
PIECES = ["yes", "Yes", "YES.", "no", "2", "two", "Two", "none", "0", "the dog", "a Dog", "dog", "dog.",
          "red/white", "red / white", "red white", "dont", "don't", "1,000", "1000", " yes", "yes\t", "no\n",
          "t-shirt", "t shirt", "yes!"]
FREE_TEXT = st.text(alphabet=st.sampled_from("aAyes 2,./'-!:\n\t"), max_size=8)
ANSWER = st.one_of(st.sampled_from(PIECES), FREE_TEXT)


@given(ANSWER, st.lists(ANSWER, min_size=2, max_size=10))
def test_the_default_agrees_with_the_official_2021_loop(prediction: str, answers: list[str]) -> None:
    assert vqa_score(prediction, answers) == pytest.approx(official_2021(prediction, answers))


@given(ANSWER, st.lists(ANSWER, min_size=2, max_size=10))
def test_vqa_legacy_agrees_with_the_official_pre_2021_loop(prediction: str, answers: list[str]) -> None:
    legacy = vqa_score(prediction, answers, "vqa-legacy")
    assert legacy == pytest.approx(official_legacy(prediction, answers))


@given(st.sampled_from(PIECES), st.integers(1, 9), st.sampled_from(PIECES))
def test_both_loops_agree_on_ten_answer_questions(prediction: str, k: int, other: str) -> None:
    # The VQAv2 shape: ten answers, k of one kind; both oracles and both variants line up.
    answers = [prediction] * k + [other] * (10 - k)
    assert vqa_score(prediction, answers, "vqa2021") == pytest.approx(official_2021(prediction, answers))
    legacy = vqa_score(prediction, answers, "vqa-legacy")
    assert legacy == pytest.approx(official_legacy(prediction, answers))


def test_exact_match_and_choice_accuracy() -> None:
    assert exact_match("The Dog.", ["dog"]) == 1.0
    assert exact_match("cat", ["dog", "cat"]) == 1.0
    assert exact_match("two", ["2"]) == 1.0
    assert exact_match("cats", ["cat"]) == 0.0
    assert exact_match(None, ["cat"]) == 0.0
    assert choice_accuracy(2, 2) == 1.0
    assert choice_accuracy(1, 2) == 0.0
    assert choice_accuracy(None, 0) == 0.0
    with pytest.raises(InputError):
        choice_accuracy(0, None)


def test_score_dispatches_by_metric() -> None:
    answers = ["yes"] * 2 + ["no"] * 8
    assert score("vqa", "yes", None, answers, None) == pytest.approx(0.6)
    assert score("exact", "yes", None, answers, None) == 1.0
    assert score("choice", "B", 1, ["B"], 1) == 1.0
    assert score("choice", "A", 0, ["B"], 1) == 0.0
    for metric in ("vqa", "exact", "choice"):
        assert score(metric, None, 1, ["yes"], 1) == 0.0  # no prediction, no credit
    with pytest.raises(InputError, match="unknown metric"):
        score("bleu", "yes", None, ["yes"], None)  # type: ignore[arg-type]


def test_expected_calibration_error_by_hand() -> None:
    # Bin 9: confidence .95, accuracy .5 (gap .45); bin 1: confidence .15, accuracy 0 (gap .15).
    assert expected_calibration_error([0.95, 0.95, 0.15, 0.15], [1, 0, 0, 0]) == pytest.approx(0.3)
    # 1.0 falls in the last bin; perfectly calibrated.
    assert expected_calibration_error([1.0, 0.0], [1.0, 0.0]) == pytest.approx(0.0)
    # A fractional VQA score is the accuracy: 0.6 confident and 0.6 right.
    assert expected_calibration_error([0.6], [0.6]) == pytest.approx(0.0)
    # A failed sample (no confidence, no score) counts as confidence 0 and wrong: no gap.
    assert expected_calibration_error([None, 0.9], [None, 0.0]) == pytest.approx(0.45)
    with pytest.raises(InputError):
        expected_calibration_error([0.5], [1.0, 0.0])
    with pytest.raises(InputError):
        expected_calibration_error([1.5], [1.0])


def test_calibration_bins_report_counts_and_means() -> None:
    table = calibration_bins([0.05, 0.15, 0.19], [1.0, 0.5, 0.0], bins=5)
    assert [b["n"] for b in table] == [3, 0, 0, 0, 0]
    assert table[0]["confidence"] == pytest.approx(0.13)
    assert table[0]["accuracy"] == pytest.approx(0.5)
    assert table[1]["accuracy"] is None


def test_accuracy_at_coverage_ranks_by_confidence_and_splits_ties_by_their_mean() -> None:
    # Ranked: #1 (0.9, right), then the tie #0/#2 at 0.5 (one right: mean 0.5), #3 (0.1, wrong).
    curve = accuracy_at_coverage([0.5, 0.9, 0.5, 0.1], [0, 1, 1, 0], coverages=(0.25, 0.5, 0.75, 1.0))
    # 50%: #1 and one place of the tie, worth its mean 0.5: (1 + 0.5) / 2, in any row order.
    assert curve == [(0.25, 1.0), (0.5, 0.75), (0.75, pytest.approx(2 / 3)), (1.0, 0.5)]
    # 30% of 10 is 3 samples, not 4 (floating point), and a tiny coverage still keeps one.
    ten = accuracy_at_coverage([i / 10 for i in range(10)], [1.0] * 3 + [0.0] * 7, coverages=(0.3, 0.01))
    assert ten == [(0.3, 0.0), (0.01, 0.0)]
    with pytest.raises(InputError, match="coverage"):
        accuracy_at_coverage([0.5], [1.0], coverages=(0.0,))


def test_accuracy_at_coverage_of_the_issue_does_not_depend_on_row_order() -> None:
    # 16 samples: 8 at 0.9 of which 2 right (listed first), 4 at 0.6 of which 3 right, 4 at 0.2 wrong.
    confidences = [0.9] * 8 + [0.6] * 4 + [0.2] * 4
    scores = [1.0, 1.0] + [0.0] * 6 + [1.0, 1.0, 1.0, 0.0] + [0.0] * 4
    coverages = (0.1, 0.5, 0.6, 0.75, 1.0)
    expected = [
        # 2 places, both in the 0.9 group whose mean is 2/8 (was 100%: the two right rows came first)
        (0.1, 0.25),
        (0.5, 0.25),  # the whole 0.9 group
        (0.6, 3.5 / 10),  # 10 places: the 0.9 group (2) and half of the 0.6 group (2 x 3/4)
        (0.75, 5 / 12),  # both groups whole
        (1.0, 5 / 16),
    ]
    curve = accuracy_at_coverage(confidences, scores, coverages)
    assert curve == [(c, pytest.approx(a)) for c, a in expected]
    for seed in range(5):
        order = random.Random(seed).sample(range(16), 16)
        permuted = accuracy_at_coverage([confidences[i] for i in order], [scores[i] for i in order],
                                        coverages)
        assert permuted == curve  # exactly, not approximately


@given(st.lists(st.tuples(st.sampled_from([0.0, 0.3, 0.5, 0.9, 1.0]), st.sampled_from([0.0, 0.3, 0.6, 1.0])),
                min_size=1, max_size=30), st.randoms(use_true_random=False))
def test_accuracy_at_coverage_is_the_same_for_any_row_order(rows: list[tuple[float, float]], rng) -> None:
    shuffled = rng.sample(rows, len(rows))
    curve = accuracy_at_coverage([c for c, _ in rows], [a for _, a in rows])
    assert accuracy_at_coverage([c for c, _ in shuffled], [a for _, a in shuffled]) == curve
    assert curve[-1][1] == pytest.approx(sum(a for _, a in rows) / len(rows))  # full coverage: the mean


@given(st.lists(st.floats(0, 1), min_size=1, max_size=20, unique=True), st.data())
def test_without_ties_accuracy_at_coverage_is_the_top_k_mean(confidences: list[float], data) -> None:
    scores = data.draw(st.lists(st.sampled_from([0.0, 0.6, 1.0]), min_size=len(confidences),
                                max_size=len(confidences)))
    ranked = [a for _, a in sorted(zip(confidences, scores), key=lambda pair: -pair[0])]
    for coverage, accuracy in accuracy_at_coverage(confidences, scores):
        k = max(1, math.ceil(round(coverage * len(ranked), 9)))
        assert accuracy == pytest.approx(sum(ranked[:k]) / k)


def _trace(
    stop: str, *, rounds: list[Round], answer: str | None, latency: float, error: str | None = None
) -> Trace:
    best = max((r.verdict.confidence for r in rounds if r.verdict), default=None)
    return Trace(
        sample=Sample(question="What is it?"), rounds=rounds, answer=answer, confidence=best,
        stop_reason=stop, error=error, latency_s=latency,
        usage=Usage(llm_calls=2 * len(rounds), llm_input_tokens=50, llm_output_tokens=5,
                    answerer_calls=sum(len(r.sub_qas) for r in rounds),
                    answerer_input_tokens=100 * sum(len(r.sub_qas) for r in rounds),
                    answerer_output_tokens=3 * sum(len(r.sub_qas) for r in rounds)),
    )  # fmt: skip


def _round(
    index: int, answer: str | None, confidence: float, forced: bool = False, questions: int = 1
) -> Round:
    verdict = Verdict(analysis="a", answer=answer, confidence=confidence)
    sub_qas = [SubQA(question=f"Q{i}?", answer="x") for i in range(questions)]
    return Round(index=index, sub_qas=sub_qas, verdict=verdict, forced=forced)


def test_fallback_means_a_failed_role_an_error_or_a_forced_answer() -> None:
    forced_best = _trace(
        "max_rounds", rounds=[_round(1, "cat", 0.3), _round(2, "dog", 0.5, True)], answer="dog", latency=1
    )
    earlier_best = _trace(
        "max_rounds", rounds=[_round(1, "cat", 0.6), _round(2, "dog", 0.2, True)], answer="cat", latency=1
    )
    assert is_fallback(forced_best)
    assert not is_fallback(earlier_best)  # kept a freely given earlier answer
    assert not is_fallback(_trace("confident", rounds=[_round(1, "cat", 0.9)], answer="cat", latency=1))
    assert not is_fallback(
        _trace("no_new_questions", rounds=[_round(1, "cat", 0.4)], answer="cat", latency=1)
    )
    # A trace that says which candidate it kept is read by that, not by the stated confidences:
    # here the forced round stated more, but the calibration kept the direct answer.
    kept_direct = forced_best.model_copy(update={"answer": "cat", "answer_source": "direct"})
    assert not is_fallback(kept_direct)
    kept_forced = earlier_best.model_copy(update={"answer": "dog", "answer_source": "round", "answer_round": 2})
    assert is_fallback(kept_forced)
    assert is_fallback(_trace("reasoner_failed", rounds=[Round(index=1)], answer=None, latency=1))
    assert is_fallback(_trace("error", rounds=[], answer=None, latency=0, error="image missing"))


def test_agent_stats_by_hand() -> None:
    traces = [
        _trace("confident", rounds=[_round(1, "cat", 0.9, questions=2)], answer="cat", latency=1.0),
        _trace(
            "max_rounds",
            rounds=[_round(1, "unknown", 0.1), _round(2, "dog", 0.4, True)],
            answer="dog",
            latency=3.0,
        ),
        _trace("questioner_failed", rounds=[Round(index=1)], answer=None, latency=2.0),
        _trace("error", rounds=[], answer=None, latency=0.0, error="image missing"),
    ]
    stats = agent_stats(traces)
    assert stats["n"] == 4
    assert stats["mean_rounds"] == pytest.approx((1 + 2 + 0 + 0) / 4)  # only judged rounds count
    assert stats["mean_sub_questions"] == pytest.approx((2 + 2 + 0 + 0) / 4)
    assert stats["total_llm_calls"] == 2 + 4 + 2 + 0
    assert stats["mean_llm_input_tokens"] == pytest.approx(50.0)
    assert stats["total_answerer_calls"] == 4
    assert stats["total_answerer_input_tokens"] == 400 and stats["mean_answerer_output_tokens"] == pytest.approx(3.0)
    assert stats["stop_reasons"] == {"confident": 1, "max_rounds": 1, "questioner_failed": 1, "error": 1}
    assert stats["unknown_rate"] == pytest.approx(1 / 4)  # the questioner failure; the error is not counted
    assert stats["error_rate"] == pytest.approx(1 / 4)
    assert stats["fallback_rate"] == pytest.approx(3 / 4)  # forced answer, failed role, error
    assert stats["latency_mean_s"] == pytest.approx(1.5)
    assert stats["latency_p50_s"] == pytest.approx(1.5)  # sorted 0, 1, 2, 3: halfway between 1 and 2
    assert stats["latency_p90_s"] == pytest.approx(2.7)  # position 2.7: 2 + 0.7 * (3 - 2)
    assert agent_stats([]) == {"n": 0}


def test_agent_stats_mean_model_calls_by_step() -> None:
    looked = _trace("confident", rounds=[], answer="cat", latency=1.0)
    looked.usage.steps = {"caption": 1, "direct": 1, "look": 9}
    asked = _trace("max_rounds", rounds=[_round(1, "dog", 0.4, True)], answer="dog", latency=1.0)
    asked.usage.steps = {"caption": 1, "direct": 1, "questioner": 2, "answerer": 3, "reasoner": 1}
    stats = agent_stats([looked, asked])
    assert stats["mean_calls_by_step"] == {"caption": 1.0, "direct": 1.0, "look": 4.5, "questioner": 1.0,
                                           "answerer": 1.5, "reasoner": 0.5}
    assert list(stats["mean_calls_by_step"]) == ["caption", "direct", "look", "questioner", "answerer", "reasoner"]
