"""Where to look: a ZoomEye-style best-first search over a quadtree of views, and a grid.

Both are resumable objects the caller drives, so that views of many samples can be scored in
one batched answerer call: ``next_views()`` gives the boxes to score now, ``record()`` takes
their scores, until ``done``. Neither ever hands out more views than its ``budget``.

``QuadtreeSearch`` follows ZoomEye (om-ai-lab/ZoomEye, ``zoom_eye_search_type1``): each view
is scored by two yes/no probabilities about the target, "is it in this view?" (existence) and
"could zooming in find it?" (latent), combined with a weight that trusts existence more the
deeper (smaller) the view: ``w = bias + (1 - bias) * (depth / max_depth)**2``, ZoomEye's
``bias_value`` 0.2. The best-scored unexpanded view is split next (in 4, or in a row of 4 for
a long, thin view), down to views of ``min_side`` pixels. The search stops when a view below
the whole picture answers confidently (its answering or existence probability at least
``threshold``) or the budget is spent. ZoomEye scores in [-1, 1] (2p - 1); probabilities rank
the same. The whole picture is never scored: the direct answer has looked at it already.

``GridSearch`` is for answerers that give neither probabilities nor boxes: a grid of views,
each described once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from idealagent.looking.boxes import Box, Size

DEFAULT_BIAS = 0.2  # ZoomEye's bias_value: the weight of existence at the root
DEFAULT_THRESHOLD = 0.8  # a view this sure that the target is there (or the question answerable) ends the search
MAX_DEPTH = 5  # ZoomEye's depth_limit


@dataclass
class Look:
    """One view looked at: its box in original pixels, and what the answerer said about it."""

    box: Box
    depth: int  # 0: the whole picture; each level splits a view in four
    p_exists: float | None = None  # p(yes) to "is the target in this view?"
    p_latent: float | None = None  # p(yes) to "could zooming in find it?"
    p_answer: float | None = None  # p(yes) to "can the question be answered from this view?"
    text: str | None = None  # a grid view's description

    def confidence(self) -> float:
        """How sure the view is that the target is here: answering, else existence."""
        value = self.p_answer if self.p_answer is not None else self.p_exists
        return 0.0 if value is None else value


@dataclass
class _Node:
    look: Look
    priority: float = -math.inf
    scored: bool = False
    expanded: bool = False


def split(box: Box) -> list[Box]:
    """A view's four children, row by row: 2x2, or 4 in a row/column for a view at least twice
    as long as it is wide (ZoomEye's ``split_4subpatches``)."""
    ratio = box.height / box.width
    columns, rows = (1, 4) if ratio >= 2 else (4, 1) if ratio <= 0.5 else (2, 2)
    xs = [box.x0 + round(i * box.width / columns) for i in range(columns + 1)]
    ys = [box.y0 + round(j * box.height / rows) for j in range(rows + 1)]
    return [Box(xs[i], ys[j], xs[i + 1], ys[j + 1]) for j in range(rows) for i in range(columns)
            if xs[i + 1] > xs[i] and ys[j + 1] > ys[j]]


def tree_depth(size: Size, min_side: int, depth_limit: int = MAX_DEPTH) -> int:
    """How many times a picture of ``size`` can be split before its views are under ``min_side``."""
    depth, side = 0, max(size)
    while side >= min_side * 2 and depth < depth_limit:
        side /= 2
        depth += 1
    return max(1, depth)


class QuadtreeSearch:
    """Best-first search for a target over a quadtree of views (see the module doc)."""

    def __init__(self, size: Size, budget: int, *, min_side: int = 224, threshold: float = DEFAULT_THRESHOLD,
                 bias: float = DEFAULT_BIAS, depth_limit: int = MAX_DEPTH) -> None:
        if budget < 1:
            raise ValueError(f"a search needs a budget of at least 1 look, got {budget}")
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.size = size
        self.budget = budget
        self.threshold = threshold
        self.bias = bias
        self.max_depth = tree_depth(size, min_side, depth_limit)
        self.looks: list[Look] = []  # every scored view, in the order it was scored
        self._nodes: dict[Box, _Node] = {}
        self._pending: list[Box] = []  # handed out by next_views, not yet recorded
        self._stopped = False
        self._queue_children(Box.whole(size), depth=0)

    @property
    def done(self) -> bool:
        """Whether the search is over: a confident view, the budget spent, or nothing left to split."""
        return self._stopped or (not self._pending and not self._unscored() and self._expandable() is None)

    @property
    def spent(self) -> int:
        """Views handed out so far (scored or pending): never more than ``budget``."""
        return len(self.looks) + len(self._pending)

    def next_views(self) -> list[Box]:
        """The boxes to score next (all may go in one batch); [] when done or awaiting scores."""
        if self._stopped or self._pending:
            return []
        while not self._unscored():
            parent = self._expandable()
            if parent is None:
                return []
            self._expand(parent)
        room = self.budget - self.spent
        self._pending = self._unscored()[:room]
        if not self._pending:
            self._stopped = True
        return list(self._pending)

    def record(self, box: Box, p_exists: float | None, p_latent: float | None = None,
               p_answer: float | None = None) -> None:
        """The yes/no probabilities for a view ``next_views`` gave (None: the answerer gave none)."""
        if box not in self._pending:
            raise ValueError(f"{box} was not handed out by next_views (or was recorded already)")
        self._pending.remove(box)
        node = self._nodes[box]
        node.look.p_exists, node.look.p_latent, node.look.p_answer = p_exists, p_latent, p_answer
        node.priority = self._priority(node.look)
        node.scored = True
        self.looks.append(node.look)
        if node.look.confidence() >= self.threshold:
            self._stopped = True
        elif self.spent >= self.budget and not self._pending:
            self._stopped = True

    def best(self) -> Look | None:
        """The most confident view scored so far (the deeper on a tie), or None."""
        if not self.looks:
            return None
        return max(self.looks, key=lambda look: (look.confidence(), look.depth))

    def _priority(self, look: Look) -> float:
        if look.p_exists is None and look.p_latent is None and look.p_answer is not None:
            return look.p_answer  # scored by how sure the view's answer to the question is
        exists = look.p_exists if look.p_exists is not None else 0.0
        if look.p_latent is None:
            return exists
        weight = self.bias + (1 - self.bias) * (look.depth / self.max_depth) ** 2
        return weight * exists + (1 - weight) * look.p_latent

    def _queue_children(self, box: Box, depth: int) -> None:
        for child in split(box):
            self._nodes.setdefault(child, _Node(Look(child, depth + 1)))

    def _unscored(self) -> list[Box]:
        return [box for box, node in self._nodes.items() if not node.scored and box not in self._pending]

    def _expandable(self) -> _Node | None:
        """The best-scored view not yet split, if any can be split further."""
        candidates = [node for node in self._nodes.values()
                      if node.scored and not node.expanded and node.look.depth < self.max_depth
                      and min(node.look.box.width, node.look.box.height) >= 2]
        return max(candidates, key=lambda node: node.priority, default=None)

    def _expand(self, node: _Node) -> None:
        node.expanded = True
        self._queue_children(node.look.box, node.look.depth)


def grid_boxes(size: Size, count: int) -> list[Box]:
    """At most ``count`` equal views tiling a picture of ``size``, rows x columns following its shape."""
    if count < 1:
        return []
    best = (1, 1)
    for rows in range(1, count + 1):
        columns = count // rows
        if columns < 1:
            break
        # Prefer more views, then cells closest to square.
        cell = (size[0] / columns) / (size[1] / rows)
        key = (rows * columns, -abs(math.log(cell)))
        best_cell = (size[0] / best[1]) / (size[1] / best[0])
        if key > (best[0] * best[1], -abs(math.log(best_cell))):
            best = (rows, columns)
    rows, columns = best
    xs = [round(i * size[0] / columns) for i in range(columns + 1)]
    ys = [round(j * size[1] / rows) for j in range(rows + 1)]
    return [Box(xs[i], ys[j], xs[i + 1], ys[j + 1]) for j in range(rows) for i in range(columns)]


class GridSearch:
    """A grid of views, each described once: for answerers with neither probabilities nor boxes."""

    def __init__(self, size: Size, budget: int) -> None:
        if budget < 1:
            raise ValueError(f"a grid needs a budget of at least 1 look, got {budget}")
        self.size = size
        self.budget = budget
        self.looks: list[Look] = []
        self._pending = grid_boxes(size, budget)
        self._handed_out = False

    @property
    def done(self) -> bool:
        """Whether every view has been described."""
        return self._handed_out and not self._pending

    def next_views(self) -> list[Box]:
        """Every view, once; [] afterwards."""
        if self._handed_out:
            return []
        self._handed_out = True
        return list(self._pending)

    def record(self, box: Box, text: str) -> None:
        """What the answerer said about the view at ``box``."""
        if not self._handed_out or box not in self._pending:
            raise ValueError(f"{box} was not handed out by next_views (or was recorded already)")
        self._pending.remove(box)
        self.looks.append(Look(box, depth=1, text=text))
