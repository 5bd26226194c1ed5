"""Looking closer: boxes parsed from text, views from the full-resolution picture, the searches."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from idealagent import images
from idealagent.answerers import Answer
from idealagent.looking import (
    Box,
    GridSearch,
    Picture,
    QuadtreeSearch,
    ViewSize,
    describe_box,
    grid_boxes,
    look_question,
    p_yes,
    parse_box,
    split,
)
from idealagent.prompts import PromptError

SIZE = (2000, 1000)

# --- boxes named in text ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    '{"bbox_2d": [100, 50, 300, 150], "label": "cup"}',
    '```json\n[{"bbox_2d": [100, 50, 300, 150], "label": "cup"}]\n```',
    "The cup is at [100, 50, 300, 150].",
    "<box>(100,50),(300,150)</box>",
    "(100, 50), (300, 150)",
])
def test_qwen_pixel_boxes_map_back_from_the_shown_size(text):
    # Qwen2.5-VL saw the picture at half size: its pixels are doubled back to the original's.
    assert parse_box(text, "pixels", SIZE, shown=(1000, 500)) == Box(200, 100, 600, 300)


def test_normalised_boxes():
    assert parse_box("<|box_start|>(100,200),(300,400)<|box_end|>", "norm1000", SIZE) == Box(200, 200, 600, 400)
    assert parse_box("[0.1, 0.2, 0.3, 0.4]", "norm1", SIZE) == Box(200, 200, 600, 400)
    # Without a shown size, pixels are the original's.
    assert parse_box("[10, 20, 30, 40]", "pixels", SIZE) == Box(10, 20, 30, 40)


def test_swapped_corners_are_put_in_order_and_overshoot_is_clamped():
    assert parse_box("[300, 150, 100, 50]", "pixels", SIZE) == Box(100, 50, 300, 150)
    assert parse_box("[-20, 900, 150, 1080]", "norm1000", SIZE) == Box(0, 900, 300, 1000)


@pytest.mark.parametrize("text", [
    "", "no box here", "[1, 2, 3]", '{"bbox_2d": [1, 2, "x", 4]}', '{"bbox_2d": [1, 2, 3, true]}',
    "[nan, 1, 2, 3]", "[10, 10, 10, 50]",  # zero width
    "[1500, 0, 2000, 100]",  # 0-1000 far past the frame: another convention, not a place
    "[0.2, 0.2, 5.0, 0.5]",  # a 0-1 box reaching five pictures wide
])
def test_malformed_and_out_of_range_boxes_give_none(text):
    convention = "norm1" if "0." in text else "norm1000"
    assert parse_box(text, convention, SIZE) is None


def test_non_text_and_unknown_convention():
    assert parse_box(None, "pixels", SIZE) is None  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown box convention"):
        parse_box("[1, 2, 3, 4]", "percent", SIZE)  # type: ignore[arg-type]


def test_where_a_box_is_in_words():
    assert describe_box(Box(0, 0, 200, 100), SIZE) == "upper left, about a tenth of the width"
    assert describe_box(Box(900, 450, 1100, 550), SIZE) == "centre, about a tenth of the width"
    assert describe_box(Box(1500, 800, 2000, 1000), SIZE) == "lower right, about a quarter of the width"
    assert describe_box(Box(0, 400, 1000, 600), SIZE) == "middle left, about half of the width"
    assert describe_box(Box.whole(SIZE), SIZE) == "centre, the whole width"


def test_expanded_keeps_context_inside_the_picture():
    assert Box(0, 0, 10, 10).expanded(100, SIZE) == Box(0, 0, 100, 100)
    assert Box(1990, 990, 2000, 1000).expanded(100, SIZE) == Box(1900, 900, 2000, 1000)
    assert Box(0, 0, 10, 10).expanded(5000, SIZE) == Box.whole(SIZE)


# --- views from the full-resolution picture ---------------------------------------------------------


def _picture_with_pattern(path, size=(1600, 1200), at=(1300, 900), cell=2):
    """A grey picture with a 16x16 checkerboard of ``cell``-pixel squares at ``at``: fine detail
    that survives only at full resolution."""
    pixels = np.full((size[1], size[0], 3), 128, np.uint8)
    board = (np.indices((16 * cell, 16 * cell)) // cell).sum(axis=0) % 2 * 255
    pixels[at[1]:at[1] + 16 * cell, at[0]:at[0] + 16 * cell] = board[..., None]
    Image.fromarray(pixels).save(path)
    return Box(at[0], at[1], at[0] + 16 * cell, at[1] + 16 * cell)


def _contrast(image):
    return float(np.asarray(image.convert("L"), np.float32).std())


def test_views_come_from_the_full_resolution_picture(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    pattern = _picture_with_pattern(path)
    monkeypatch.setattr(images, "MAX_PIXELS", 400 * 300)  # the agent's copy: a quarter of each side
    picture = Picture(str(path))
    assert picture.shown.size == (400, 300) and picture.size == (1600, 1200) and picture.downscaled
    view = picture.view(pattern, ViewSize(max_side=64, min_side=32))
    # The view is the pattern at full detail: exactly the original's pixels, black and white squares.
    original = np.asarray(Image.open(path).crop(tuple(pattern)))
    assert view.size == (32, 32)
    assert np.array_equal(np.asarray(view), original)
    # Cut from the agent's downscaled copy instead, the 2-pixel squares blur to grey.
    blurred = picture.shown.crop(tuple(v // 4 for v in pattern)).resize((32, 32))
    assert _contrast(view) > 100 > 5 > _contrast(blurred)
    picture.release()
    assert picture._full is None


def test_coarse_views_use_the_loaded_copy(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    _picture_with_pattern(path)
    monkeypatch.setattr(images, "MAX_PIXELS", 400 * 300)
    picture = Picture(str(path))
    view = picture.view(Box.whole(picture.size), ViewSize(max_side=224))
    assert view.size == (224, 168) and picture._full is None  # nothing decoded at full size


def test_small_boxes_grow_to_the_minimum_side_and_views_fit_the_processor(tmp_path):
    path = tmp_path / "big.png"
    pattern = _picture_with_pattern(path)
    picture = Picture(str(path))
    qwen = ViewSize(min_pixels=56 * 56, max_pixels=28 * 28 * 64, multiple=28, min_side=200)
    view = picture.view(pattern, qwen)
    assert view.size[0] % 28 == 0 and view.size[1] % 28 == 0
    assert 56 * 56 <= view.size[0] * view.size[1] <= 28 * 28 * 64
    # A 32-pixel box is looked at within 200 pixels of its surroundings.
    assert qwen.fit(200, 200) == view.size


def test_view_size_from_a_qwen2_vl_processor():
    class Processor:
        size = {"shortest_edge": 3136, "longest_edge": 1003520}
        patch_size, merge_size = 14, 2

    want = ViewSize.from_processor(Processor())
    assert (want.min_pixels, want.max_pixels, want.multiple) == (3136, 1003520, 28)
    assert want.fit(4000, 3000) == (1148, 868)  # transformers' smart_resize gives the same

    class Llava:
        size = {"shortest_edge": 336}
        crop_size = {"height": 336, "width": 336}

    assert ViewSize.from_processor(Llava()).max_side == 336


# --- the quadtree search ----------------------------------------------------------------------------

TARGET = Box(1400, 1000, 1460, 1060)  # a small object in the lower right of a 2048x1536 picture


def _scorer(box):
    """p(exists) and p(latent) as functions of the box: high where the target is, and surer the
    more of the view it fills (as a VLM is, for a small object)."""
    inner = Box(max(box.x0, TARGET.x0), max(box.y0, TARGET.y0), min(box.x1, TARGET.x1), min(box.y1, TARGET.y1))
    inside = inner.area / TARGET.area if inner.width > 0 and inner.height > 0 else 0.0
    fill = TARGET.area / box.area
    return min(0.99, inside * (0.3 + 10 * fill)), 0.1 + 0.8 * inside


def _run(search):
    batches = 0
    while not search.done:
        views = search.next_views()
        if not views:
            break
        batches += 1
        for box in views:
            search.record(box, *_scorer(box))
    return batches


def test_search_finds_a_planted_target():
    search = QuadtreeSearch((2048, 1536), budget=16, min_side=224)
    batches = _run(search)
    best = search.best()
    assert best is not None and best.box.contains(TARGET) and best.confidence() >= search.threshold
    assert best.depth >= 3 and search.done
    # Best-first: four views a level, straight down to the target, in batches of four.
    assert search.spent == 4 * batches <= 16


@pytest.mark.parametrize("budget", [1, 3, 5, 7])
def test_the_look_budget_is_never_exceeded(budget):
    search = QuadtreeSearch((2048, 1536), budget=budget)
    handed = 0
    while not search.done:
        views = search.next_views()
        if not views:
            break
        handed += len(views)
        assert search.spent <= budget
        for box in views:
            search.record(box, 0.1, 0.5)  # never confident: only the budget stops it
    assert handed == len(search.looks) == budget and search.done
    assert search.next_views() == []


def test_record_refuses_a_box_it_did_not_hand_out():
    search = QuadtreeSearch((1024, 1024), budget=4)
    with pytest.raises(ValueError, match="not handed out"):
        search.record(Box(0, 0, 10, 10), 0.5)
    [first, *_] = search.next_views()
    search.record(first, 0.2)
    with pytest.raises(ValueError, match="recorded already"):
        search.record(first, 0.2)


def test_a_small_picture_stops_when_nothing_is_left_to_split():
    search = QuadtreeSearch((300, 300), budget=50, min_side=224)
    _run(search)
    assert search.done and len(search.looks) == 4 and search.max_depth == 1


def test_an_answering_probability_decides_when_to_stop():
    search = QuadtreeSearch((1024, 1024), budget=8)
    views = search.next_views()
    for box in views:
        search.record(box, 0.99 if box == views[0] else 0.0, 0.5, p_answer=0.2)  # sure it's there, can't answer
    assert not search.done  # existence alone would have stopped it; the answering probability did not
    assert search.next_views() == split(views[0])  # the likeliest view is split next


def test_split_follows_the_shape_of_the_view():
    assert len(split(Box(0, 0, 1000, 1000))) == 4
    assert split(Box(0, 0, 1000, 200)) == [Box(0, 0, 250, 200), Box(250, 0, 500, 200), Box(500, 0, 750, 200),
                                           Box(750, 0, 1000, 200)]
    assert all(child.width == 100 for child in split(Box(0, 0, 100, 400)))


# --- the grid ---------------------------------------------------------------------------------------


def test_grid_mode_describes_each_view_once():
    grid = GridSearch((2048, 1536), budget=6)
    views = grid.next_views()
    assert len(views) == 6 and grid.next_views() == [] and not grid.done
    covered = np.zeros((1536, 2048), bool)
    for box in views:
        assert not covered[box.y0:box.y1, box.x0:box.x1].any()  # no overlap
        covered[box.y0:box.y1, box.x0:box.x1] = True
        grid.record(box, f"a view at {box.x0},{box.y0}")
    assert covered.all() and grid.done and [look.text for look in grid.looks][0] == "a view at 0,0"
    with pytest.raises(ValueError):
        grid.record(views[0], "again")


def test_grid_follows_the_picture_shape():
    assert len(grid_boxes((3000, 1000), 3)) == 3 and grid_boxes((3000, 1000), 3)[1] == Box(1000, 0, 2000, 1000)
    assert grid_boxes((1000, 1000), 4)[3] == Box(500, 500, 1000, 1000)
    assert len(grid_boxes((1000, 1000), 5)) <= 5 and grid_boxes((10, 10), 0) == []


# --- questions and p(yes) ---------------------------------------------------------------------------


def test_look_questions_render_strictly():
    assert look_question("exists", target="red circle") == "Is there a red circle in the image? Answer yes or no."
    assert "zooming" in look_question("latent", target="cup")
    with pytest.raises(PromptError, match="missing"):
        look_question("answerable", target="cup")  # needs the question
    with pytest.raises(PromptError, match="no kind"):
        look_question("smell", target="cup")


def test_p_yes_from_an_answer():
    assert p_yes(Answer("Yes", probability=0.9)) == pytest.approx(0.9)
    assert p_yes(Answer("no.", probability=0.8)) == pytest.approx(0.2)
    assert p_yes(Answer("maybe", probability=0.8)) is None
    assert p_yes(Answer("yes", probability=None)) is None  # a server without logprobs
    assert p_yes("yes") is None  # a plain string carries no probability
