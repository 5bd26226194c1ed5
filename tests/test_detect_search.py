"""The ``detect`` search: an answerer's own detector scores the picture's quarters and says
where the target is; the main question is asked of a view around the surest finding.

The scripted detector sees only the pixels of the view it is given (a red square on white), so
a finding at the right place proves the view was cut from the right part of the picture.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from idealagent.answerers import Detection
from idealagent.answerers.perception import Guess, PerceptionAnswerer
from idealagent.calibration import fit
from idealagent.capabilities import Capabilities
from idealagent.errors import InputError
from idealagent.events import Looked
from idealagent.looking import Box
from idealagent.looking.closer import LookCloser, choose_mode
from idealagent.looking.draw import BEST_COLOUR, FOUND_COLOUR, draw_looks
from idealagent.looking.views import Picture
from idealagent.testing import ScriptedChatModel
from tests.test_looking_loop import SIZE, SQUARE, SeeingAnswerer, agent_for, picture_file

QUESTION = "What color is the small square?"


def red_box(image: Image.Image) -> tuple[float, float, float, float] | None:
    """The red pixels' bounding box, each 0..1 of the image, or None."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    ys, xs = np.nonzero((rgb[..., 0] > 200) & (rgb[..., 1] < 150) & (rgb[..., 2] < 150))
    if len(xs) == 0:
        return None
    height, width = rgb.shape[:2]
    return xs.min() / width, ys.min() / height, (xs.max() + 1) / width, (ys.max() + 1) / height


class DetectingAnswerer(SeeingAnswerer):
    """The looking tests' answerer, plus a detector of red that says where it is."""

    def __init__(self, boxes: bool = True) -> None:
        super().__init__(Capabilities(logprobs=True, detects=True))
        self.boxes = boxes
        self.sought: list[tuple[tuple[int, int], str]] = []  # (view size, target) of each detect

    def detect(self, requests):
        found = []
        for image, target in requests:
            self.sought.append((image.size, target))
            box = red_box(image)
            found.append(Detection(0.0) if box is None else
                         Detection(0.9, "a red square", box if self.boxes else None))
        return found


@pytest.mark.parametrize("pipeline", [True, False])
def test_the_detector_finds_the_square_and_the_question_is_asked_around_it(tmp_path, pipeline):
    answerer = DetectingAnswerer()
    agent, llm = agent_for(answerer, pipeline=pipeline, calibration="default")
    events = []
    trace = agent.run(picture_file(tmp_path), QUESTION, callbacks=[events.append])

    search = trace.search
    assert search.mode == "detect" and [look.kind for look in search.looks] == ["detect"] * 4 + ["answer"]
    assert search.calls == 5 and trace.usage.steps["look"] == 5
    assert [target for _, target in answerer.sought] == ["small square"] * 4
    hit = [look for look in search.looks if look.kind == "detect" and look.p_yes]
    assert len(hit) == 1 and hit[0].reply == "a red square" and Box(*hit[0].found).overlap(SQUARE) > 0.5
    assert hit[0].where.startswith("lower right") and Box(*hit[0].box).contains(SQUARE)
    # The view the question is asked of: a quarter of the picture's width and height, around the square.
    best = Box(*search.best)
    assert best.contains(SQUARE) and (best.width, best.height) == (SIZE[0] // 4, SIZE[1] // 4)
    assert search.looks[-1].reply == "red" and search.answer.answer == "red"
    assert search.presence == 0.9 and search.answer.signals == {"answer_prob": 0.6, "found": 0.9}
    reasoner_prompt = llm.calls[-1][-1].content
    assert "The small square seems to be in the lower right" in reasoner_prompt and ": a red square (p 0.90)" in reasoner_prompt
    assert trace.answer == "red" and trace.answer_source == "look"
    assert sum(len(event.looks) for event in events if isinstance(event, Looked)) == 5
    # --show-looks draws the finding (magenta) around the square, inside the best view (cyan).
    drawn = draw_looks(Image.new("RGB", SIZE, "white"), search)
    x0, y0, _, _ = hit[0].found
    assert drawn.getpixel((x0 + 1, y0 + 1)) == FOUND_COLOUR and drawn.getpixel((best.x0, best.y0 + 200)) == BEST_COLOUR


def test_pipelined_and_lock_step_detect_searches_are_equal(tmp_path):
    image = picture_file(tmp_path)
    searches = [agent_for(DetectingAnswerer(), pipeline=pipeline)[0].run(image, QUESTION).search.model_dump()
                for pipeline in (True, False)]
    assert searches[0] == searches[1]


@pytest.mark.parametrize("budget", [1, 2, 3, 4, 5, 6, 9])
def test_a_detect_search_keeps_to_its_budget(tmp_path, budget):
    closer = LookCloser(Picture(picture_file(tmp_path)), DetectingAnswerer().view_size, "detect", "small square",
                        QUESTION, budget)
    answerer = DetectingAnswerer()
    while not closer.done:
        requests = closer.requests()
        detects = answerer.detect([(closer.view(r), "small square") for r in requests if r.kind == "detect"])
        answers = answerer.answer([(closer.view(r), r.question) for r in requests if r.kind == "answer"])
        closer.record([detects.pop(0) if r.kind == "detect" else answers.pop(0) for r in requests])
    kinds = [look.kind for look in closer.search.looks]
    assert closer.search.calls == len(kinds) <= budget
    # Under five calls the whole picture is looked at once, never only some of the quarters.
    assert kinds == (["detect"] * 4 + ["answer"] if budget >= 5 else ["detect", "answer"] if budget >= 2
                     else ["detect"])
    assert closer.search.looks[0].box == ([0, 0, 1024, 768] if budget >= 5 else [0, 0, *SIZE])
    assert (closer.search.best is not None) is (budget >= 2)


def test_a_finding_without_a_box_is_asked_of_its_quarter(tmp_path):
    agent, _ = agent_for(DetectingAnswerer(boxes=False))
    search = agent.run(picture_file(tmp_path), QUESTION).search
    assert Box(*search.best) == Box(1024, 768, 2048, 1536) and search.looks[-1].reply == "red"


def test_nothing_found_asks_nothing_more_and_the_rounds_go_on(tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", SIZE, "white").save(blank)
    agent, _ = agent_for(DetectingAnswerer())
    trace = agent.run(str(blank), QUESTION)
    assert [look.kind for look in trace.search.looks] == ["detect"] * 4
    assert trace.search.best is None and trace.search.answer is None and trace.rounds


def test_a_failing_detector_is_recorded_and_the_sample_goes_on(tmp_path):
    class Failing(DetectingAnswerer):
        def detect(self, requests):
            raise ValueError("the detector broke on this view")

    agent, _ = agent_for(Failing())
    trace = agent.run(picture_file(tmp_path), QUESTION)
    assert len(trace.search.looks) == 4 and all("detector broke" in look.error for look in trace.search.looks)
    assert trace.search.best is None and trace.answer == "red"  # the rounds answered


def test_detect_mode_needs_a_detector_and_is_refused_before_any_call():
    assert choose_mode(DetectingAnswerer(), "auto") == ("detect", None)
    plain = SeeingAnswerer(Capabilities(logprobs=True))
    with pytest.raises(InputError, match="--look-mode detect needs an answerer with its own detector"):
        agent_for(plain, look_mode="detect")
    assert plain.asked == []
    agent_for(plain, look_mode="detect", zoom="off")  # no search, nothing to refuse


class Classifier:
    """A stand-in ImageNet classifier with fixed guesses."""

    def classify(self, images, top_k=3):
        return [[Guess("tiger cat", 0.5), Guess("Egyptian cat", 0.25), Guess("plunger", 0.1)][:top_k] for _ in images]


def test_the_perception_answerer_finds_a_small_shape_and_where_it_is():
    """A red triangle a tenth of the width (as the zoom set's shapes are of a quarter of their
    picture) on a noisy, photo-like background."""
    noise = np.random.default_rng(0).integers(-25, 26, size=(192, 256, 3))
    image = Image.fromarray((np.array([120, 100, 80]) + noise).astype(np.uint8))
    image = image.resize((1024, 768))  # smooth, as an enlarged photo is
    ImageDraw.Draw(image).polygon([(680, 520), (780, 520), (730, 430)], fill=(255, 0, 0))
    answerer = PerceptionAnswerer(ScriptedChatModel(replies=[]), classifier=Classifier())
    assert answerer.capabilities.detects
    shape, cat, other = answerer.detect([(image, "small shape"), (image, "cats"), (image, "bicycle")])
    assert shape.score > 0.5 and shape.label == "a red triangle"
    x0, y0, x1, y1 = shape.box
    assert 0.66 < x0 < x1 < 0.77 and 0.55 < y0 < y1 < 0.68
    # Any other target is looked for among the classifier's guesses, with no box.
    assert cat == Detection(0.75, "tiger cat, Egyptian cat") and other == Detection(0.0, "")
    assert answerer.detect([(image.crop((0, 0, 400, 300)), "shape")])[0].score == 0.0


def test_looks_are_calibrated_on_their_own_once_there_are_enough_of_them():
    def examples(n, right):
        return [({"answer_prob": 0.5, "found": 0.9 if i % 2 else 0.1}, float(right(i))) for i in range(n)]

    direct = examples(40, lambda i: i % 3 == 0)
    looks = examples(20, lambda i: i % 2)  # right exactly where the search was sure
    calibration = fit({"direct": direct, "look": looks, "verdict": examples(20, lambda i: 0)})
    assert set(calibration.fits) == {"direct", "look", "verdict"} and "found" in calibration.fits["look"].features
    sure = calibration.confidence("look", {"answer_prob": 0.5, "found": 0.9})
    assert sure > 0.7 > 0.3 > calibration.confidence("look", {"answer_prob": 0.5, "found": 0.1})
    # Too few looks: they are fitted with the direct answers, and served by that fit.
    few = fit({"direct": direct, "look": looks[:6]})
    assert set(few.fits) == {"direct"} and few.fits["direct"].n == 46
    assert few.confidence("look", {"answer_prob": 0.5}) == few.confidence("direct", {"answer_prob": 0.5})
    assert few.prior("look") == few.prior("direct")
