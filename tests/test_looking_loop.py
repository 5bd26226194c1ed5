"""Looking closer inside the loop: the LOOK step between the direct answer and round 1.

The pictures are large and white with one small red square; the scripted answerers see only
the pixels of the view they are given, so a right answer proves the view held the square.
"""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image, ImageDraw

from idealagent import IdealAgent
from idealagent.answerers import Answer
from idealagent.capabilities import Capabilities
from idealagent.events import Looked
from idealagent.looking import Box, ViewSize
from idealagent.looking.closer import LookCloser, about_target, choose_mode, evidence_lines, has_detail, target_of
from idealagent.looking.views import Picture
from idealagent.testing import ScriptedChatModel

SIZE = (2048, 1536)
SQUARE = Box(1500, 1100, 1560, 1160)  # 60 px: a few pixels once the picture is 224 wide
VERDICT = json.dumps({"analysis": "The closer look says red.", "answer": "red", "confidence": 0.9})
QUESTIONS = json.dumps({"sub_questions": ["Is there a square?"]})


def picture_file(tmp_path, square: Box = SQUARE, size=SIZE) -> str:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).rectangle([square.x0, square.y0, square.x1 - 1, square.y1 - 1], fill=(255, 0, 0))
    path = tmp_path / "big.png"
    image.save(path)
    return str(path)


def red_share(image: Image.Image) -> float:
    small = image.convert("RGB").resize((64, 64), Image.Resampling.BOX)
    pixels = list(small.getdata())
    return sum(1 for r, g, b in pixels if r > 200 and g < 150 and b < 150) / len(pixels)


class SeeingAnswerer:
    """Answers from the view's pixels only: red where it sees red, with a probability."""

    def __init__(self, capabilities: Capabilities, box_reply: str | None = None, view_size: ViewSize | None = None):
        self.capabilities = capabilities
        self.view_size = view_size or ViewSize(max_side=224, min_side=224)
        self.box_reply = box_reply
        self.asked: list[tuple[tuple[int, int], str]] = []  # (view size, question) of every answer
        self.described: list[tuple[int, int]] = []

    def answer(self, requests):
        replies = []
        for image, question in requests:
            self.asked.append((image.size, question))
            seen = red_share(image) > 0.002
            if question.startswith("Is there"):
                replies.append(Answer("yes" if seen else "no", probability=0.95 if seen else 0.9))
            elif question.startswith("Where is"):
                replies.append(self.box_reply or "I cannot say")
            else:  # the main question
                replies.append(Answer("red" if seen else "white", probability=0.6 if seen else 0.3))
        return replies

    def caption(self, images):
        self.described += [image.size for image in images]
        return ["a red square on white" if red_share(image) > 0.002 else "white" for image in images]


def agent_for(answerer, *, pipeline=True, **settings) -> tuple[IdealAgent, ScriptedChatModel]:
    llm = ScriptedChatModel(replies=[QUESTIONS, VERDICT] * 4)
    settings = {"max_rounds": 1, "calibration": "stated", "pipeline": pipeline, **settings}
    return IdealAgent(llm, answerer, **settings), llm


@pytest.mark.parametrize("pipeline", [True, False])
def test_quadtree_search_finds_the_square_and_tells_the_reasoner(tmp_path, pipeline):
    answerer = SeeingAnswerer(Capabilities(logprobs=True))
    agent, llm = agent_for(answerer, pipeline=pipeline, look_budget=9)
    events = []
    trace = agent.run(picture_file(tmp_path), "What color is the small square?", callbacks=[events.append])

    search = trace.search
    assert search is not None and search.mode == "quadtree" and search.target == "small square"
    assert search.calls <= 9 and trace.usage.answerer_calls == 1 + search.calls + 1  # direct, looks, sub-question
    assert trace.usage.steps == {"caption": 1, "direct": 1, "look": search.calls, "questioner": 1, "answerer": 1,
                                 "reasoner": 1}
    exists = [look for look in search.looks if look.kind == "exists"]
    assert exists and all(look.p_yes is not None for look in exists)
    answer = search.looks[-1]
    assert answer.kind == "answer" and answer.reply == "red" and Box(*search.best).contains(SQUARE)
    # The reasoner (and the questioner) were told what the closer look saw, and where.
    reasoner_prompt = llm.calls[-1][-1].content
    assert "Zoomed in on the lower right" in reasoner_prompt and "answer: red" in reasoner_prompt
    assert trace.answer == "red"
    assert sum(len(e.looks) for e in events if isinstance(e, Looked)) == search.calls


def test_pipelined_and_lock_step_searches_are_equal(tmp_path):
    image = picture_file(tmp_path)
    traces = []
    for pipeline in (True, False):
        agent, _ = agent_for(SeeingAnswerer(Capabilities(logprobs=True)), pipeline=pipeline)
        traces.append(agent.run(image, "What color is the small square?"))
    assert traces[0].search.model_dump() == traces[1].search.model_dump()


@pytest.mark.parametrize("budget", [1, 2, 3, 5, 9, 13])
def test_the_look_budget_is_never_exceeded(tmp_path, budget):
    answerer = SeeingAnswerer(Capabilities(logprobs=True))
    agent, _ = agent_for(answerer, look_budget=budget)
    trace = agent.run(picture_file(tmp_path), "What color is the small square?")
    looks = [q for _, q in answerer.asked[1:-1]]  # between the direct answer and the sub-question
    assert trace.search.calls == len(looks) <= budget


def test_views_are_cut_from_the_full_resolution_picture(tmp_path):
    """A 60 px square is 0.03% of the picture: invisible in a 224 px copy, plain in a view."""
    path = picture_file(tmp_path)
    shown = Image.open(path).convert("RGB")
    shown.thumbnail((224, 224))
    assert red_share(shown) < 0.002
    picture = Picture(path, shown)
    view = picture.view(Box(1408, 1024, 1664, 1216), ViewSize(max_side=224, min_side=224))
    assert red_share(view) > 0.05


def test_boxes_mode_asks_where_then_looks_there(tmp_path):
    # 0-1000 coordinates of the square (1500..1560 of 2048, 1100..1160 of 1536), a little loose.
    answerer = SeeingAnswerer(Capabilities(logprobs=False, boxes="norm1000"), box_reply="[720, 700, 770, 770]")
    agent, _ = agent_for(answerer)
    trace = agent.run(picture_file(tmp_path), "What color is the small square?")
    kinds = [look.kind for look in trace.search.looks]
    assert trace.search.mode == "boxes" and kinds == ["box", "answer"]
    assert Box(*trace.search.best).overlap(SQUARE) > 0 and trace.search.looks[-1].reply == "red"


@pytest.mark.parametrize("reply", ["no idea", "[10, 20, 30]", "[5000, 5000, 6000, 6000]", '{"bbox_2d": "x"}'])
def test_a_malformed_box_is_asked_again_then_dropped(tmp_path, reply):
    answerer = SeeingAnswerer(Capabilities(logprobs=False, boxes="norm1000"), box_reply=reply)
    agent, _ = agent_for(answerer)
    trace = agent.run(picture_file(tmp_path), "What color is the small square?")
    assert [look.kind for look in trace.search.looks] == ["box", "box"]
    assert trace.search.best is None and trace.answer == "red"  # the rounds still ran


def test_grid_mode_describes_each_view_once(tmp_path):
    answerer = SeeingAnswerer(Capabilities(logprobs=False))
    agent, llm = agent_for(answerer, look_budget=4)
    trace = agent.run(picture_file(tmp_path), "What color is the small square?")
    assert trace.search.mode == "grid" and [look.kind for look in trace.search.looks] == ["describe"] * 4
    assert len(answerer.described) == 1 + 4  # the caption, then each view
    assert "The lower right, about half of the width: a red square on white" in llm.calls[-1][-1].content


def test_zoom_auto_skips_small_pictures_and_confident_answers_but_on_always_looks(tmp_path):
    small = picture_file(tmp_path, Box(100, 100, 110, 110), size=(400, 300))
    for zoom, looked in (("auto", False), ("on", True), ("off", False)):
        agent, _ = agent_for(SeeingAnswerer(Capabilities(logprobs=True)), zoom=zoom)
        assert (agent.run(small, "What color is the small square?").search is not None) is looked, zoom
    big = picture_file(tmp_path)
    agent, _ = agent_for(SeeingAnswerer(Capabilities(logprobs=True)), zoom="off")
    assert agent.run(big, "What color is the small square?").search is None


def test_a_failed_look_is_recorded_and_the_sample_goes_on(tmp_path):
    class Failing(SeeingAnswerer):
        def answer(self, requests):
            if any(q.startswith("Is there a small square") for _, q in requests):
                raise ValueError("the view could not be read")  # the sample's own failure
            return super().answer(requests)

    agent, _ = agent_for(Failing(Capabilities(logprobs=True)), look_budget=5)
    trace = agent.run(picture_file(tmp_path), "What color is the small square?")
    assert trace.search.looks and all(look.error for look in trace.search.looks)
    assert trace.stop_reason == "confident" and trace.answer == "red" and trace.search.best is None


def test_mode_follows_what_the_answerer_offers():
    class Plain:
        pass

    def with_caps(**caps):
        answerer = Plain()
        answerer.capabilities = Capabilities(**caps)
        return answerer

    assert choose_mode(with_caps(logprobs=True), "auto") == ("quadtree", None)
    assert choose_mode(with_caps(logprobs=False, boxes="pixels"), "auto") == ("boxes", "pixels")
    assert choose_mode(with_caps(logprobs=False), "auto") == ("grid", None)
    assert choose_mode(with_caps(logprobs=True), "grid") == ("grid", None)
    assert has_detail((2048, 1536), ViewSize(max_side=224)) and not has_detail((451, 300), ViewSize(max_side=224))


@pytest.mark.parametrize(("question", "target"), [
    ("What color is the small shape?", "small shape"),
    ("What is the color of the woman's bag?", "woman's bag"),
    ("Is there a dog in the picture?", "dog"),
    ("How many people?", "How many people"),
])
def test_target_of(question, target):
    assert target_of(question) == target


def test_closer_never_asks_past_its_budget_even_with_no_probabilities(tmp_path):
    picture = Picture(picture_file(tmp_path))
    for budget in range(1, 12):
        closer = LookCloser(picture, ViewSize(max_side=224, min_side=224), "quadtree", "square", "Q?", budget)
        while not closer.done:
            closer.record(["maybe"] * len(closer.requests()))
        assert closer.search.calls <= budget
        assert evidence_lines(closer.search) == [line for line in evidence_lines(closer.search) if line]
        assert all(re.match(r"^(Zoomed|The )", line) for line in evidence_lines(closer.search))


@pytest.mark.parametrize("pipeline", [True, False])
def test_the_answer_on_the_closer_look_is_a_candidate_and_can_win(tmp_path, pipeline):
    # default calibration: the direct answer "white" at its probability 0.3, the closer look's
    # "red" at 0.6, the verdict "red" at mean(stated 0.9, agrees with the direct answer 0) = 0.45.
    agent, _ = agent_for(SeeingAnswerer(Capabilities(logprobs=True)), pipeline=pipeline, calibration="default")
    trace = agent.run(picture_file(tmp_path), "What color is the small square?")
    looked = trace.search.answer
    assert looked.answer == "red" and looked.calibrated == 0.6
    # ``found``: the search's surest p(yes), the probability of the "yes" that led it to the square.
    assert looked.signals == {"answer_prob": 0.6, "found": trace.search.presence} and trace.search.presence >= 0.5
    assert trace.answer == "red" and trace.answer_source == "look" and trace.confidence == 0.6
    assert "(from a closer look)" in str(trace)


def test_answers_mode_scores_views_by_their_answer_and_keeps_the_best(tmp_path):
    answerer = SeeingAnswerer(Capabilities(logprobs=True))
    agent, llm = agent_for(answerer, look_mode="answers", look_budget=8, calibration="default")
    trace = agent.run(picture_file(tmp_path), "What color is the small square?")
    search = trace.search
    assert search.mode == "answers" and {look.kind for look in search.looks} == {"answer"}
    assert search.calls <= 8 and Box(*search.best).overlap(SQUARE) > 0
    # The best view's answer is the candidate (no extra call), and the only look the reasoner hears of.
    assert search.answer.answer == "red" and search.answer.calibrated == 0.6
    assert trace.answer == "red" and trace.answer_source == "look"
    assert llm.calls[-1][-1].content.count("Zoomed in on") == 1


@pytest.mark.parametrize("pipeline", [True, False])
def test_sub_questions_about_the_target_are_answered_on_the_view_the_search_found(tmp_path, pipeline):
    """"What color is the square?" sees the zoomed view (red); a question about something else
    sees the whole picture, where the 60 px square is lost (white)."""
    answerer = SeeingAnswerer(Capabilities(logprobs=True))
    questions = json.dumps({"sub_questions": ["What color is the square?", "What color is the background?"]})
    llm = ScriptedChatModel(replies=[questions, VERDICT] * 2)
    agent = IdealAgent(llm, answerer, max_rounds=1, calibration="stated", pipeline=pipeline)
    trace = agent.run(picture_file(tmp_path), "What color is the small square?")

    about, other = trace.rounds[0].sub_qas
    assert about.box == trace.search.best and Box(*about.box).contains(SQUARE)
    assert about.where.startswith("lower right") and about.answer == "red"
    assert other.box is None and other.where is None and other.answer == "white"
    seen = {question: size for size, question in answerer.asked}
    assert max(seen["What color is the square?"]) == 224  # the view, sized for the answerer
    assert max(seen["What color is the background?"]) > 224  # the whole loaded picture
    assert trace.usage.steps["answerer"] == 2  # one call each, as before
    reasoner_prompt = llm.calls[-1][-1].content
    assert f"What color is the square? (asked of the zoomed view, {about.where}) Answer: red" in reasoner_prompt
    assert "What color is the background? Answer: white" in reasoner_prompt


def test_without_a_search_sub_questions_see_the_whole_picture(tmp_path):
    answerer = SeeingAnswerer(Capabilities(logprobs=True))
    agent, _ = agent_for(answerer, zoom="off")
    trace = agent.run(picture_file(tmp_path), "What color is the small square?")
    assert trace.search is None and all(qa.box is None and qa.where is None for qa in trace.rounds[0].sub_qas)


@pytest.mark.parametrize(("question", "target", "about"), [
    ("What color is the square?", "small square", True),
    ("Are the squares red?", "red square", True),
    ("What shape is the object?", "small object", True),
    ("What is the background?", "small square", False),
    ("Is there a squared paper?", "small square", False),
    ("What color is it?", "what color is it in this busy picture", False),  # no phrase: never routed
])
def test_about_target(question, target, about):
    assert about_target(question, target) is about
