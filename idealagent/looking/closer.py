"""One sample's look closer: which views to ask the answerer about next, and what its replies mean.

The machine (machine.py) runs the LOOK step while ``LookCloser.requests`` has something to ask;
calls.py turns each request into a view cut from the full-resolution picture and asks the
answerer; ``record`` takes the replies. The whole search is written to the trace as it goes
(``Trace.search``), so a trace shows every look, in order, with its box in original pixels.

The mode follows what the answerer offers (``choose_mode``):

- ``quadtree``: yes/no probabilities. "Is there a {target} in the image?" is asked of each view
  of a ZoomEye-style best-first quadtree (search.py), until a view is sure or the budget is
  spent; then the main question is asked of the most promising view.
- ``answers``: the same quadtree, but each view is asked the main question itself and scored
  by the probability of its answer (for an answerer whose yes/no replies carry no signal, such
  as the ``tiny`` preset's 135M LLM, which says "no" to every "Is there...?"); the most
  confident view's answer is the search's answer, with no further call.
- ``detect``: the answerer's own detector (``Capabilities.detects``, such as the ``tiny`` preset's
  shape finder and classifier) says how sure it is that the target is in each quarter of the
  picture, and where; the main question is then asked of a view around the surest finding (a
  quarter of the picture's width and height, the quadtree's second level), or of its quarter
  where the detector cannot say where. Four looks and one answer: five calls.
- ``boxes``: the answerer names where the target is, as a box in its own convention; a reply
  with no usable box is asked once more; the main question is then asked of that view.
- ``grid``: neither. A grid of views, each described once (the answerer's ``caption``), which
  is how the ``tiny`` preset's perception answerer looks at a part of a picture.

Every request is one answerer call, and ``LookCloser`` never asks more than ``budget``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from idealagent.answerers import Detection, Reply, probability_of, text_of
from idealagent.capabilities import capabilities_of
from idealagent.errors import one_line
from idealagent.looking.boxes import Box, BoxConvention, describe_box, parse_box
from idealagent.looking.questions import look_question, p_yes
from idealagent.looking.search import GridSearch, QuadtreeSearch, split
from idealagent.looking.views import Picture, ViewSize
from idealagent.trace import Look, LookKind, Search, SearchMode

# A picture this many times larger (longest side) than what the answerer takes in has detail
# that one look cannot see; below it, zoom=auto does not search (the answerer sees it all).
DETAIL_FACTOR = 4
DEFAULT_INPUT_SIDE = 512  # what an answerer that does not say its input size is assumed to take
BOX_TRIES = 2  # asks for a box before the boxes search gives up
_CONVENTION_WORDS = {"pixels": "in pixels of the image", "norm1000": "with each coordinate from 0 to 1000",
                     "norm1": "with each coordinate from 0 to 1"}
_LEADING = re.compile(r"^(?:what|which|who|where|how many|how|is|are|does|do|can|was|were)\b.*?\b(?:the|a|an)\s+",
                      re.IGNORECASE)
_TRAILING = re.compile(r"\s+(?:in|on|of)\s+(?:the|this)\s+(?:picture|image|photo|photograph)\b.*$", re.IGNORECASE)


@dataclass(frozen=True)
class LookRequest:
    """One answerer call of a search: a view (``box``, original pixels) and what to ask of it."""

    box: Box
    kind: LookKind
    question: str


def view_size_of(answerer: Any) -> ViewSize:
    """The size of view ``answerer`` takes in: its ``view_size``, its processor's, or a default."""
    declared = getattr(answerer, "view_size", None)
    if isinstance(declared, ViewSize):
        return declared
    processor = getattr(getattr(answerer, "processor", None), "image_processor", None)
    if processor is not None:
        return ViewSize.from_processor(processor)
    return ViewSize(max_side=DEFAULT_INPUT_SIDE)


def input_side(want: ViewSize) -> float:
    """About how many pixels along its longest side an answerer that wants ``want`` sees."""
    if want.max_side:
        return want.max_side
    if want.max_pixels:
        return want.max_pixels ** 0.5
    return DEFAULT_INPUT_SIDE


def has_detail(picture_size: tuple[int, int], want: ViewSize) -> bool:
    """Whether a picture of ``picture_size`` holds far more detail than the answerer's input."""
    return max(picture_size) >= DETAIL_FACTOR * input_side(want)


def choose_mode(answerer: Any, setting: str) -> tuple[SearchMode, BoxConvention | None]:
    """The search mode for ``answerer`` (``setting`` auto: by what it offers), and its box convention."""
    capabilities = capabilities_of(answerer)
    convention = capabilities.boxes
    if setting != "auto":
        if setting == "boxes" and convention is None:
            convention = "norm1000"  # the commonest convention of grounding models
        return setting, convention  # type: ignore[return-value]
    if capabilities.detects:  # its own detector says where: surer than a yes/no reply
        return "detect", convention
    if capabilities.logprobs:
        return "quadtree", convention
    if convention is not None:
        return "boxes", convention
    return "grid", None


def target_of(question: str) -> str:
    """What to search for, from the question's last noun phrase: "What color is the small
    shape?" → "small shape". The whole question where no phrase stands out."""
    text = question.strip().rstrip("?.! ")
    text = _TRAILING.sub("", text)
    stripped = _LEADING.sub("", text)
    if stripped != text and stripped:
        # The last "the/a X" phrase names the thing ("the colour of the woman's bag" → "woman's bag").
        parts = re.split(r"\b(?:the|a|an)\s+", stripped, flags=re.IGNORECASE)
        return parts[-1].strip() or stripped
    return text


def about_target(question: str, target: str) -> bool:
    """Whether a sub-question is about the search's target: it names the target's head noun
    ("What shape is the object?" for "small object"; a plural counts)."""
    words = re.findall(r"[a-z]+", target.lower())
    if not words or len(words) > 4:  # no phrase stood out: the target is the whole question
        return False
    return re.search(rf"\b{re.escape(words[-1])}(?:s|es)?\b", question.lower()) is not None


class LookCloser:
    """The search of one sample (see the module doc)."""

    def __init__(self, picture: Picture, want: ViewSize, mode: SearchMode, target: str, main_question: str,
                 budget: int, convention: BoxConvention | None = None) -> None:
        if budget < 1:
            raise ValueError(f"a search needs a budget of at least 1 answerer call, got {budget}")
        self.picture = picture
        self.want = want
        self.mode = mode
        self.convention = convention or "norm1000"
        self.main_question = main_question
        self.budget = budget
        self.search = Search(mode=mode, target=target, size=list(picture.size))
        self._pending: list[LookRequest] = []
        self._answered = False
        self._box_tries = 0
        whole_budget = budget - 1 if mode != "grid" and budget > 1 else budget  # keep a call for the answer
        if mode == "answers":  # the views' own answers are the answer: no call kept back
            self._views: QuadtreeSearch | GridSearch | None = QuadtreeSearch(picture.size, budget,
                                                                             min_side=want.min_side)
        elif mode == "quadtree":
            self._views = QuadtreeSearch(picture.size, whole_budget, min_side=want.min_side)
        elif mode == "grid":
            self._views = GridSearch(picture.size, budget)
        else:
            self._views = None
        self._found: Box | None = None
        self.focus: Any = None  # the best view's image, cut once the search is done (see ``record``)
        self._advance()

    @property
    def spent(self) -> int:
        """Answerer calls asked for so far (recorded or pending)."""
        return len(self.search.looks) + len(self._pending)

    @property
    def done(self) -> bool:
        """Whether the search has nothing more to ask."""
        return not self._pending

    def requests(self) -> list[LookRequest]:
        """What to ask now (one answerer call each, all in one batch); [] when done."""
        return list(self._pending)

    def answer_look(self) -> Look | None:
        """The look whose reply is the search's answer to the main question: the one asked of
        the best view (``best``), if it was asked and answered."""
        if self.search.best is None:
            return None
        return next((look for look in reversed(self.search.looks)
                     if look.kind == "answer" and look.box == self.search.best and not look.error), None)

    def view(self, request: LookRequest) -> Any:
        """The image for ``request``: the whole loaded picture, or a view cut from the original."""
        if request.kind == "box":
            return self.picture.shown
        return self.picture.view(request.box, self.want)

    def record(self, replies: list[Reply | Exception]) -> list[Look]:
        """The answerer's replies to ``requests()``, in order; returns the new looks."""
        if len(replies) != len(self._pending):
            raise ValueError(f"{len(self._pending)} look requests pending, {len(replies)} replies")
        new = [self._read(request, reply) for request, reply in zip(self._pending, replies)]
        self.search.looks += new
        self._pending = []
        self._advance()
        if self.done:
            if self.search.best is not None:  # sub-questions about the target are answered on it
                self.focus = self.picture.view(Box(*self.search.best), self.want)
            self.picture.release()
        return new

    # -- reading replies ------------------------------------------------------------------------

    def _read(self, request: LookRequest, reply: Reply | Exception) -> Look:
        look = Look(box=list(request.box), kind=request.kind, question=request.question,
                    where=describe_box(request.box, self.picture.size),
                    depth=_depth(request.box, self.picture.size))
        if isinstance(reply, Exception):
            look.error = f"{type(reply).__name__}: {one_line(reply)}"
        elif request.kind == "detect":
            return self._read_detection(look, request.box, reply)  # type: ignore[arg-type]
        else:
            look.reply = text_of(reply)
        if not look.error and request.kind not in ("exists", "detect"):
            look.probability = probability_of(reply)  # type: ignore[arg-type]
        if request.kind == "exists":
            look.p_yes = None if look.error else p_yes(reply)  # type: ignore[arg-type]
            if isinstance(self._views, QuadtreeSearch):
                self._views.record(request.box, look.p_yes)
        elif self.mode == "answers" and isinstance(self._views, QuadtreeSearch):
            self._views.record(request.box, None, p_answer=look.probability or 0.0)
        elif request.kind == "describe" and isinstance(self._views, GridSearch):
            self._views.record(request.box, look.reply)
        elif request.kind == "box":
            self._box_tries += 1
            shown = self.picture.shown.size
            found = None if look.error else parse_box(look.reply, self.convention, self.picture.size, shown)
            if found is not None:
                self._found = found
                look.where = f"named {describe_box(found, self.picture.size)}"
        return look

    def _read_detection(self, look: Look, view: Box, found: Detection) -> Look:
        """A detector's finding in ``view``: its score as p(yes), and the box it names, if any, in
        the picture's pixels (the place said in words is then the box's)."""
        if not isinstance(found, Detection):
            look.error = f"TypeError: detect gave {type(found).__name__}, not a Detection"
            return look
        look.reply, look.p_yes = found.label, min(1.0, max(0.0, found.score))
        if found.box is not None and look.p_yes > 0:
            x0, y0, x1, y1 = found.box
            box = Box.clamped(view.x0 + x0 * view.width, view.y0 + y0 * view.height,
                              view.x0 + x1 * view.width, view.y0 + y1 * view.height, self.picture.size)
            if box is not None:
                look.found, look.where = list(box), describe_box(box, self.picture.size)
        return look

    # -- what to ask next -------------------------------------------------------------------------

    def _advance(self) -> None:
        room = self.budget - self.spent
        if self._answered:
            return
        if self.mode == "answers":
            assert isinstance(self._views, QuadtreeSearch)
            boxes = self._views.next_views() if room > 0 else []
            if boxes:
                self._pending = [LookRequest(box, "answer", self.main_question) for box in boxes[:room]]
                return
            self._answered = True
            best = max((look for look in self.search.looks if not look.error),
                       key=lambda look: (look.probability or 0.0, look.depth), default=None)
            self.search.best = best.box if best is not None else None
        elif room <= 0:
            return
        elif self.mode == "quadtree":
            assert isinstance(self._views, QuadtreeSearch)
            boxes = self._views.next_views()
            if boxes:
                question = look_question("exists", target=self.search.target)
                self._pending = [LookRequest(box, "exists", question) for box in boxes[:room]]
                return
            best = self._views.best()
            self._ask_main(best.box if best is not None and best.confidence() > 0 else None)
        elif self.mode == "detect":
            if not self.search.looks:
                whole = Box.whole(self.picture.size)
                quarters = split(whole)
                views = quarters if room > len(quarters) else [whole]  # and a call kept for the answer
                question = look_question("exists", target=self.search.target)
                self._pending = [LookRequest(box, "detect", question) for box in views[:room]]
                return
            self._ask_main(self._zoomed_on_finding())
        elif self.mode == "grid":
            assert isinstance(self._views, GridSearch)
            question = look_question("describe")
            self._pending = [LookRequest(box, "describe", question) for box in self._views.next_views()[:room]]
            self._answered = True  # the descriptions are the evidence: nothing is asked after them
        else:
            if self._found is None and self._box_tries < BOX_TRIES and room > 1:
                question = look_question("locate", target=self.search.target,
                                         convention=_CONVENTION_WORDS[self.convention])
                self._pending = [LookRequest(Box.whole(self.picture.size), "box", question)]
                return
            self._ask_main(self._found)

    def _zoomed_on_finding(self) -> Box | None:
        """The view around the detector's surest finding: a quarter of the picture's width and
        height (or twice the finding, if larger) centred on it; its look's own view where it named
        no box; None where nothing was found or only the whole picture was looked at unboxed."""
        found = [look for look in self.search.looks if look.kind == "detect" and (look.p_yes or 0) > 0]
        if not found:
            return None
        best = max(found, key=lambda look: look.p_yes or 0.0)
        width, height = self.picture.size
        if best.found is not None:
            box = Box(*best.found)
            return box.grown(max(width // 4, 2 * box.width), max(height // 4, 2 * box.height), self.picture.size)
        view = Box(*best.box)
        return None if view == Box.whole(self.picture.size) else view

    def _ask_main(self, box: Box | None) -> None:
        """The main question, asked of the view at ``box`` (nothing when no view was found)."""
        self._answered = True
        if box is None:
            return
        self.search.best = list(box)
        self._pending = [LookRequest(box, "answer", self.main_question)]


def _depth(box: Box, size: tuple[int, int]) -> int:
    """The quadtree level a box of this size is at: 0 for the whole picture, 1 for a quarter..."""
    share = max(box.width / size[0], box.height / size[1])
    level = 0
    while share <= 0.5 ** (level + 1) * 1.01 and level < 12:
        level += 1
    return level


def evidence_lines(search: Search | None) -> list[str]:
    """What the search saw, one line per look worth telling the questioner and the reasoner."""
    if search is None:
        return []
    lines = []
    for look in search.evidence():
        if look.kind == "answer":
            lines.append(f"Zoomed in on the {look.where}: asked \"{look.question}\"; answer: {look.reply}")
        elif look.kind == "describe":
            lines.append(f"The {look.where}: {look.reply}")
        else:
            chance = f" (p {look.p_yes:.2f})" if look.p_yes is not None else ""
            seen = f": {look.reply}" if look.kind == "detect" and look.reply else ""
            lines.append(f"The {search.target} seems to be in the {look.where}{seen}{chance}")
    return lines
