"""Roles that see (settings.roles_see, idealagent/sight.py): a questioner or reasoner whose model
takes images is shown the picture, and the reasoner the views the search looked at; a text
model gets the very messages it always got.

The picture is large and white with one small red square (as in test_looking_loop.py): the
whole picture at the role's size hardly shows it, a view the search found does.
"""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from PIL import Image

from idealagent import IdealAgent
from idealagent.capabilities import Capabilities
from idealagent.console import shown_summary
from idealagent.errors import InputError
from idealagent.images import decode_base64_image
from idealagent.looking.boxes import Box, describe_box
from idealagent.prompts import load_prompt
from idealagent.roles import _prompt_vars
from idealagent.sight import ROLE_MAX_PIXELS, looked_at, role_view_size
from idealagent.testing import IDEALGPT_LOOP, ScriptedAnswerer, ScriptedChatModel
from idealagent.trace import Look, Search, Trace
from tests.test_looking_loop import QUESTIONS, SQUARE, VERDICT, SeeingAnswerer, picture_file, red_share

QUESTION = "What color is the small square?"


def images_in(message) -> list[Image.Image]:
    """The pictures a message carries, decoded from its image blocks."""
    blocks = message.content if isinstance(message.content, list) else []
    return [decode_base64_image(b["base64"]) for b in blocks if isinstance(b, dict) and b.get("type") == "image"]


def run(llm, tmp_path, *, answerer=None, pipeline=True, **settings) -> Trace:
    answerer = answerer or SeeingAnswerer(Capabilities(logprobs=True))
    settings = {"max_rounds": 1, "calibration": "stated", "pipeline": pipeline, "look_budget": 9, **settings}
    return IdealAgent(llm, answerer, **settings).run(picture_file(tmp_path), QUESTION)


def test_auto_turns_seeing_on_only_for_a_model_that_takes_images():
    text, vlm = ScriptedChatModel(), ScriptedChatModel(images=3)
    assert IdealAgent(text, ScriptedAnswerer()).roles_seeing == {"questioner": False, "reasoner": False}
    assert IdealAgent(vlm, ScriptedAnswerer()).roles_seeing == {"questioner": True, "reasoner": True}
    mixed = IdealAgent(text, ScriptedAnswerer(), reasoner_llm=vlm)
    assert mixed.roles_seeing == {"questioner": False, "reasoner": True}
    assert IdealAgent(vlm, ScriptedAnswerer(), roles_see="off").roles_seeing == {"questioner": False,
                                                                              "reasoner": False}


@pytest.mark.parametrize(("models", "role"), [({}, "questioner"),
                                              ({"questioner_llm": ScriptedChatModel(images=3)}, "reasoner")])
def test_on_with_a_model_that_cannot_take_images_is_refused_when_the_agent_is_made(models, role):
    with pytest.raises(InputError) as refused:
        IdealAgent(ScriptedChatModel(), ScriptedAnswerer(), roles_see="on", **models)
    message = str(refused.value)
    assert "\n" not in message and "--roles-see" in message and f"the {role}'s ScriptedChatModel" in message
    IdealAgent(ScriptedChatModel(images=1), ScriptedAnswerer(), roles_see="on")  # a VLM is welcome


def test_a_text_model_gets_exactly_the_prompts_it_always_got(tmp_path):
    """The tiny preset's case: no image block, no word of the seeing prompts, and each role's
    conversation is its prompt file rendered with no ``sight`` at all."""
    llm = ScriptedChatModel(replies=[QUESTIONS, VERDICT])
    trace = run(llm, tmp_path)
    assert trace.search is not None and trace.shown == {}
    asked, judged = llm.calls
    assert all(isinstance(m.content, str) for m in asked + judged)
    assert "that you cannot see" in asked[0].content and "that you cannot see" in judged[0].content
    # The questioner's request as rendered before roles could see (the trace holds its round
    # by now: the evidence it was asked with is the sub-answers of no earlier round).
    before = trace.model_copy(update={"rounds": []})
    expected = load_prompt("questioner").render("open", **_prompt_vars(before), analysis="", max_sub_questions=3)
    assert [(m.type, m.content) for m in asked] == [(m.type, m.content) for m in expected]
    expected = load_prompt("reasoner").render("open", **_prompt_vars(trace), final=True)
    assert [(m.type, m.content) for m in judged] == [(m.type, m.content) for m in expected]


def test_the_questioner_and_the_reasoner_see_the_picture(tmp_path):
    llm = ScriptedChatModel(images=3, replies=[QUESTIONS, VERDICT])
    trace = run(llm, tmp_path, zoom="off")
    asked, judged = llm.calls
    for conversation in (asked, judged):
        system, *exemplars, last = conversation
        assert isinstance(system, SystemMessage) and "which you are shown" in system.content
        assert all(isinstance(m.content, str) for m in exemplars)  # the few-shot turns stay text
        [picture] = images_in(last)
        assert isinstance(last, HumanMessage) and last.content[0]["type"] == "image"  # before the text
        assert picture.size == (512, 384)  # the 2048 x 1536 picture, at the size the model takes
        assert "The image above is the whole picture." in last.text and QUESTION in last.text
    whole = [0, 0, 2048, 1536]
    assert [(s.box, s.where, s.size) for s in trace.shown["questioner"]] == [(whole, "", [512, 384])]
    assert trace.shown["reasoner"] == trace.shown["questioner"]  # no search: no views
    assert trace.settings["roles_see"] == "auto"
    assert Trace.from_json(trace.to_json()).shown == trace.shown


def test_the_reasoner_sees_the_views_the_search_looked_at(tmp_path):
    llm = ScriptedChatModel(images=3, replies=[QUESTIONS, VERDICT])
    trace = run(llm, tmp_path)
    search = trace.search
    assert search is not None and Box(*search.best).contains(SQUARE)
    asked, judged = llm.calls
    assert len(images_in(asked[-1])) == 1  # the questioner: the picture only
    picture, *views = images_in(judged[-1])
    assert 1 <= len(views) <= 2  # images_per_request 3: the picture and at most two views
    assert red_share(picture) < red_share(views[0])  # the best view shows the square the picture hides
    shown = trace.shown["reasoner"]
    assert shown[1].box == search.best and [s.size for s in shown] == [list(i.size) for i in (picture, *views)]
    assert [s.where for s in shown[1:]] == [look.where for look in looked_at(search, 2)]
    where = describe_box(Box(*search.best), (2048, 1536))
    assert f"image 2 is a closer view of its {where}" in judged[-1].text
    assert shown_summary(trace) == f"questioner: the picture; reasoner: the picture and {len(views)} view" + (
        "s" if len(views) > 1 else "")  # the result panel's "roles saw" row


def test_the_views_shown_are_bounded_by_what_a_request_may_carry(tmp_path):
    llm = ScriptedChatModel(images=2, replies=[QUESTIONS, VERDICT])
    trace = run(llm, tmp_path)
    assert len(images_in(llm.calls[-1][-1])) == 2 and len(trace.shown["reasoner"]) == 2
    llm = ScriptedChatModel(images=1, replies=[QUESTIONS, VERDICT])
    trace = run(llm, tmp_path)
    assert len(images_in(llm.calls[-1][-1])) == 1 and "image 2" not in llm.calls[-1][-1].text


def test_looked_at_ranks_the_answered_view_first_and_never_the_whole_picture():
    looks = [Look(box=[0, 0, 100, 100], kind="exists", question="?", p_yes=0.6),
             Look(box=[0, 0, 50, 50], kind="exists", question="?", p_yes=0.9),
             Look(box=[0, 0, 50, 50], kind="answer", question="?", reply="red"),
             Look(box=[50, 50, 100, 100], kind="exists", question="?", p_yes=0.2)]
    search = Search(mode="quadtree", target="square", size=[100, 100], looks=looks, best=[0, 0, 50, 50])
    assert [look.kind for look in looked_at(search, 3)] == ["answer"]  # the same place once; p 0.2 is no find
    assert looked_at(search, 0) == [] and looked_at(None, 2) == []


def test_a_role_image_is_sized_for_its_model_within_the_role_bound():
    class Processor:  # Qwen2-VL's defaults: up to 12.8 megapixels an image
        class image_processor:  # stands in for an attribute
            patch_size, merge_size, min_pixels, max_pixels, size = 14, 2, 3136, 12845056, {}

    model = ScriptedChatModel(images=3)
    object.__setattr__(model, "processor", Processor())
    want = role_view_size(model)
    assert want.max_pixels == ROLE_MAX_PIXELS and want.multiple == 28
    width, height = want.fit(4000, 3000)
    assert width * height <= ROLE_MAX_PIXELS and width % 28 == 0


@pytest.mark.parametrize("votes", [0, 2])
def test_pipelined_and_lock_step_loops_give_the_same_traces(tmp_path, votes):
    traces = []
    for pipeline in (True, False):
        replies = [QUESTIONS, VERDICT, *[VERDICT] * votes]
        trace = run(ScriptedChatModel(images=3, replies=replies), tmp_path, pipeline=pipeline, votes=votes)
        traces.append(trace.model_dump(exclude={"timings": True, "latency_s": True, "direct": {"latency_s"},
                                                "settings": {"pipeline"}}))
    assert traces[0] == traces[1] and traces[0]["shown"]["reasoner"]


def test_an_endpoint_request_key_holds_the_images():
    pytest.importorskip("langchain_openai")
    from idealagent.llms.openai import make_chat_model

    llm = make_chat_model("a-vlm", "http://localhost:9/v1", images_per_request=3)
    assert llm.capabilities.images and not make_chat_model("an-llm", "http://localhost:9/v1").capabilities.images
    text = [SystemMessage("s"), HumanMessage("What is it?")]

    def seeing(colour: str) -> list:
        from idealagent.images import encode_image

        data = encode_image(Image.new("RGB", (8, 8), colour)).partition(",")[2]
        return [text[0], HumanMessage([{"type": "image", "base64": data, "mime_type": "image/jpeg"},
                                       {"type": "text", "text": "What is it?"}])]

    keys = {llm.request_key(text), llm.request_key(seeing("red")), llm.request_key(seeing("blue"))}
    assert len(keys) == 3 and llm.request_key(seeing("red")) == llm.request_key(seeing("red"))


def test_the_local_vlm_chat_model_sees_through_its_processor(qwen, tmp_path, monkeypatch):
    """The real path: a tiny random Qwen2-VL plays every role; the questioner's and reasoner's
    generate calls get the picture's pixels, the trace says so, and the response cache keys a
    seeing request by its images (a blind one as before)."""
    from idealagent.response_cache import ResponseCache

    llm = qwen.chat_model(max_new_tokens=700, response_cache=ResponseCache(tmp_path / "cache"))
    assert llm.capabilities.images
    role_calls: list[dict] = []
    generate = qwen.model.generate

    def spy(*args, **kwargs):
        if "eos_token_id" in kwargs:  # the chat model's calls (the answerer passes none)
            role_calls.append({k: kwargs.get(k) for k in ("pixel_values", "image_grid_thw")})
        return generate(*args, **kwargs)

    monkeypatch.setattr(qwen.model, "generate", spy)
    agent = IdealAgent(llm, qwen, max_rounds=1, max_sub_questions=1, attempts=1, **IDEALGPT_LOOP)
    assert agent.roles_seeing == {"questioner": True, "reasoner": True}
    picture = Image.new("RGB", (40, 30), "red")
    trace = agent.run(picture, "Is the picture red?", kind="yes_no")
    assert trace.usage.llm_calls == 2 and len(role_calls) == 2, trace.rounds
    assert all(call["pixel_values"] is not None and len(call["image_grid_thw"]) == 1 for call in role_calls)
    assert [s.size for s in trace.shown["questioner"]] == [[28, 28]]  # the tiny processor's 28-pixel grid

    rerun = IdealAgent(llm, qwen, max_rounds=1, max_sub_questions=1, attempts=1, **IDEALGPT_LOOP)
    again = rerun.run(picture.copy(), "Is the picture red?", kind="yes_no")
    assert len(role_calls) == 2 and again.answer == trace.answer  # every role reply came from the cache

    text = [SystemMessage("s"), HumanMessage("Is it red?")]
    blind_key = llm.request_key(text)
    blind = llm.model_copy(update={"processor": None})
    assert blind.request_key(text) == blind_key  # a blind request's key is what it always was
    sight = [text[0], HumanMessage([{"type": "image", "base64": _jpeg("red"), "mime_type": "image/jpeg"},
                                    {"type": "text", "text": "Is it red?"}])]
    other = [text[0], HumanMessage([{"type": "image", "base64": _jpeg("blue"), "mime_type": "image/jpeg"},
                                    {"type": "text", "text": "Is it red?"}])]
    assert len({blind_key, llm.request_key(sight), llm.request_key(other)}) == 3
    with pytest.raises(ValueError, match="takes no images"):
        blind.reply([sight])


def _jpeg(colour: str) -> str:
    from idealagent.images import encode_image

    return encode_image(Image.new("RGB", (40, 30), colour)).partition(",")[2]

