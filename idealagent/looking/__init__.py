"""Looking closer: the building blocks of a visual search that zooms where the direct answer is unsure.

- ``boxes``: ``Box`` (original-picture pixels), where a box is in words, boxes named in text;
- ``views``: ``Picture`` (the loaded copy, and the full-resolution original when a view needs
  it) and ``ViewSize`` (the size the answerer wants);
- ``search``: ``QuadtreeSearch`` (ZoomEye-style, scored by yes/no probabilities) and
  ``GridSearch`` (each view described once), both driven in batches by the caller;
- ``questions``: the yes/no questions of prompts/look.yaml, and p(yes) from a reply.

Which one a sample uses depends on what its answerer offers: probabilities (the quadtree),
boxes in text (``parse_box``, then one view), or neither (the grid).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from idealagent.lazy import lazy_exports

if TYPE_CHECKING:
    from idealagent.looking.boxes import BOX_CONVENTIONS, Box, BoxConvention, describe_box, parse_box
    from idealagent.looking.questions import look_question, p_yes, reads_yes
    from idealagent.looking.search import GridSearch, Look, QuadtreeSearch, grid_boxes, split
    from idealagent.looking.views import Picture, ViewSize

# Each name and the module that defines it, imported on first use (PEP 562): a module that needs
# only ``looking.boxes`` (the console, the CLI's help) does not import the prompts and LangChain.
_IN = "idealagent.looking."
_HOMES = {
    **dict.fromkeys(("BOX_CONVENTIONS", "Box", "BoxConvention", "describe_box", "parse_box"), _IN + "boxes"),
    **dict.fromkeys(("look_question", "p_yes", "reads_yes"), _IN + "questions"),
    **dict.fromkeys(("GridSearch", "Look", "QuadtreeSearch", "grid_boxes", "split"), _IN + "search"),
    **dict.fromkeys(("Picture", "ViewSize"), _IN + "views"),
}

__all__ = [
    "BOX_CONVENTIONS",
    "Box",
    "BoxConvention",
    "GridSearch",
    "Look",
    "Picture",
    "QuadtreeSearch",
    "ViewSize",
    "describe_box",
    "grid_boxes",
    "look_question",
    "p_yes",
    "parse_box",
    "reads_yes",
    "split",
]


__getattr__, __dir__ = lazy_exports(__name__, _HOMES, __all__)
