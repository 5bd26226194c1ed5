"""A seeded, offline set of large pictures with one small object each: where looking closer pays.

    python eval/make_zoom_set.py --out data/zoom --seed 0 --count 100 --size 2048x1536 --object-scale 0.05

Each picture is one of the package's example photos (idealagent/examples, cropped, flipped and
enlarged) with ONE shape from the easy-vqa package (a coloured circle, rectangle or triangle,
cut from its background) pasted somewhere, ``--object-scale`` of the picture's width wide. Its
question asks the shape's colour or its kind. Seen whole at a model's input size (224x224 for
the tiny preset's classifier) the shape is a few pixels; a view around it shows it clearly.

Writes ``OUT/{split}.jsonl`` for ``idealagent eval jsonl --data OUT/{split}.jsonl``, and the
pictures under ``OUT/images/``. Besides the loader's fields, each record keeps the shape's
``box`` ([x0, y0, x1, y1] in picture pixels) and the picture's ``size``, for oracle views. The
same seed, options and installed packages give the same files, byte for byte. The shapes come
from easy-VQA's ``--split`` images (test by default), so a set for fitting (``--split train``,
another seed) never shares a shape image with a test set.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

log = logging.getLogger("make_zoom_set")

EXAMPLES = Path(__file__).resolve().parent.parent / "idealagent" / "examples"
SHAPES = ("circle", "rectangle", "triangle")
COLOURS = ("red", "green", "blue", "black", "gray", "yellow", "teal", "brown")
QUESTIONS = {"color": "What color is the small shape?", "shape": "What shape is the small object?"}
MARGIN = 0.02  # no shape closer than this share of the width to an edge


def parse_size(text: str) -> tuple[int, int]:
    """``2048x1536`` -> (2048, 1536); a clear error for anything else."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or min(int(match.group(1)), int(match.group(2))) < 64:
        raise argparse.ArgumentTypeError(f"--size must be WIDTHxHEIGHT of at least 64x64, e.g. 2048x1536; got {text!r}")
    return int(match.group(1)), int(match.group(2))


def easy_vqa_shapes(split: str) -> list[tuple[str, str, str]]:
    """(image path, colour, shape) for every easy-VQA image of ``split`` whose questions name both."""
    import easy_vqa

    if split == "train":
        (questions, answers, ids), paths = easy_vqa.get_train_questions(), easy_vqa.get_train_image_paths()
    else:
        (questions, answers, ids), paths = easy_vqa.get_test_questions(), easy_vqa.get_test_image_paths()
    colour: dict[int, str] = {}
    shape: dict[int, str] = {}
    for question, answer, image_id in zip(questions, answers, ids):
        if answer in COLOURS and "color" in question:
            colour[image_id] = answer
        elif answer in SHAPES:
            shape[image_id] = answer
        elif answer == "yes" and " not " not in f" {question} ":
            named = [s for s in SHAPES if re.search(rf"\b{s}\b", question)]
            if len(named) == 1:
                shape.setdefault(image_id, named[0])
    return [(paths[i], colour[i], shape[i]) for i in sorted(colour.keys() & shape.keys()) if i in paths]


def cut_out(path: str) -> Image.Image:
    """The shape of an easy-VQA image as RGBA, cropped to it: alpha from each pixel's distance to
    the background colour (the tile's most common), so anti-aliased edges stay soft."""
    rgb = np.asarray(Image.open(path).convert("RGB"), np.float32)
    colours, counts = np.unique(rgb.reshape(-1, 3), axis=0, return_counts=True)
    background = colours[counts.argmax()]
    distance = np.sqrt(((rgb - background) ** 2).sum(axis=2))
    alpha = np.clip((distance - 20) / 60, 0, 1)
    ys, xs = np.nonzero(alpha > 0.5)
    box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    rgba = np.dstack([rgb, alpha * 255]).astype(np.uint8)
    return Image.fromarray(rgba, "RGBA").crop(box)


def background(rng: random.Random, size: tuple[int, int], photos: list[Path]) -> Image.Image:
    """A random crop of a random example photo, at the picture's aspect ratio, maybe mirrored, enlarged."""
    with Image.open(rng.choice(photos)) as photo:
        photo = photo.convert("RGB")
    aspect = size[0] / size[1]
    width = min(photo.width, round(photo.height * aspect))
    width = max(16, round(width * rng.uniform(0.7, 1.0)))
    height = min(photo.height, round(width / aspect))
    x, y = rng.randint(0, photo.width - width), rng.randint(0, photo.height - height)
    crop = photo.crop((x, y, x + width, y + height))
    if rng.random() < 0.5:
        crop = ImageOps.mirror(crop)
    return crop.resize(size, Image.Resampling.BICUBIC)


def make_picture(rng: random.Random, size: tuple[int, int], object_scale: float, shape_source: tuple[str, str, str],
                 photos: list[Path]) -> tuple[Image.Image, list[int]]:
    """One picture and its shape's box [x0, y0, x1, y1]."""
    path, _, _ = shape_source
    picture = background(rng, size, photos)
    shape = cut_out(path)
    width = max(4, round(object_scale * size[0]))
    height = max(4, round(shape.height * width / shape.width))
    shape = shape.resize((width, height), Image.Resampling.LANCZOS)
    margin = round(MARGIN * size[0])
    x = rng.randint(margin, max(margin, size[0] - width - margin))
    y = rng.randint(margin, max(margin, size[1] - height - margin))
    picture.paste(shape, (x, y), shape)
    return picture, [x, y, x + width, y + height]


def make_set(out: Path, *, seed: int, count: int, size: tuple[int, int], object_scale: float, split: str = "test",
             multiple_choice: bool = False, questions: tuple[str, ...] = tuple(QUESTIONS)) -> Path:
    """Write ``count`` pictures and ``out/{split}.jsonl``; returns the jsonl's path."""
    if count < 1:
        raise ValueError(f"--count must be at least 1, got {count}")
    if not questions or set(questions) - set(QUESTIONS):
        raise ValueError(f"--questions must name some of: {', '.join(QUESTIONS)}; got {','.join(questions)}")
    if not 0 < object_scale <= 0.5:
        raise ValueError(f"--object-scale must be in (0, 0.5], a share of the width; got {object_scale}")
    rng = random.Random(seed)
    sources = easy_vqa_shapes(split)
    photos = sorted(EXAMPLES.glob("*.jpg"))
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for index in range(count):
        source = rng.choice(sources)
        picture, box = make_picture(rng, size, object_scale, source, photos)
        name = f"images/zoom-{seed}-{index:05d}.jpg"
        picture.save(out / name, "JPEG", quality=92)
        asked = rng.choice(questions)
        answer = source[1] if asked == "color" else source[2]
        record = {"id": f"zoom-{seed}-{index:05d}", "image": name, "question": QUESTIONS[asked], "answer": answer,
                  "question_type": asked, "box": box, "size": list(size)}
        if multiple_choice:
            pool = COLOURS if asked == "color" else SHAPES
            choices = [answer, *rng.sample([c for c in pool if c != answer], min(3, len(pool) - 1))]
            rng.shuffle(choices)
            record.update(kind="multiple_choice", choices=choices)
        records.append(record)
    path = out / f"{split}.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write {split}.jsonl and images/ into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=100, help="pictures (one question each)")
    parser.add_argument("--size", type=parse_size, default=(2048, 1536), help="WIDTHxHEIGHT of each picture")
    parser.add_argument("--object-scale", type=float, default=0.05, help="the shape's width, as a share of the picture's")
    parser.add_argument("--split", choices=("test", "train"), default="test",
                        help="easy-VQA split the shapes come from, and the jsonl's name")
    parser.add_argument("--multiple-choice", action="store_true", help="give each question its choices")
    parser.add_argument("--questions", default="color,shape",
                        help="what the questions ask, comma-separated: color, shape (the tiny preset's "
                             "classifier knows no shapes, so color alone measures it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = make_set(args.out, seed=args.seed, count=args.count, size=args.size, object_scale=args.object_scale,
                        split=args.split, multiple_choice=args.multiple_choice,
                        questions=tuple(q.strip() for q in args.questions.split(",") if q.strip()))
    except ValueError as err:
        parser.error(str(err))
    log.info("wrote %d pictures and %s", args.count, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
