"""How much room a zoom set leaves for looking closer: the answerer alone on the whole picture
against the same answerer on an oracle view around the object (its true box).

    python eval/make_zoom_set.py --out data/zoom --count 20
    python eval/zoom_oracle.py --data data/zoom/test.jsonl --preset tiny --limit 20

The view is cut from the full-resolution picture (idealagent.looking.Picture) around the
record's ``box``, its side ``--context`` times the object's (so the object spans about
1/context of it). Prints accuracy on each, per question type, with the answers as JSON
lines under ``--json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path

from idealagent.evaluation.datasets import load_benchmark
from idealagent.evaluation.scoring import score
from idealagent.images import load_image
from idealagent.looking import Box, Picture, ViewSize
from idealagent.parsing import match_choice


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the jsonl make_zoom_set.py wrote")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--context", type=float, default=1.5, help="view side as a multiple of the object's")
    parser.add_argument("--json", action="store_true", help="print each sample's answers as a JSON line too")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from idealagent.presets import get_preset

    boxes = {str(r["id"]): r["box"] for r in map(json.loads, args.data.read_text().splitlines()) if r}
    items = load_benchmark("jsonl", args.data, limit=args.limit, seed=args.seed).items
    answerer = get_preset(args.preset).build()["answerer"]
    requests_whole, requests_view = [], []
    for item in items:
        picture = Picture(item.image, load_image(item.image))
        box = Box(*boxes[item.id])
        want = ViewSize(min_side=round(args.context * max(box.width, box.height)), max_side=1024)
        question = item.question if not item.choices else f"{item.question} ({', '.join(item.choices)})"
        requests_whole.append((picture.shown, question))
        requests_view.append((picture.view(box, want), question))
    started = time.perf_counter()
    answers = {"whole": answerer.answer(requests_whole), "view": answerer.answer(requests_view)}
    seconds = time.perf_counter() - started
    right: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in answers}
    for name, replies in answers.items():
        for item, reply in zip(items, replies):
            text = str(reply)
            index = match_choice(text, item.choices) if item.choices else None
            value = score(item.metric, text, index, item.answers, item.gold_index)
            right[name]["all"].append(value)
            right[name][item.question_type or "-"].append(value)
    if args.json:
        for i, item in enumerate(items):
            print(json.dumps({"id": item.id, "gold": item.answers[0], "whole": str(answers["whole"][i]),
                              "view": str(answers["view"][i])}))
    groups = sorted(right["whole"], key=lambda g: (g != "all", g))
    print(f"{len(items)} samples of {args.data}, preset {args.preset}, views {args.context:g}x the object; "
          f"{seconds:.0f} s for {2 * len(items)} answers")
    print(f"{'group':<8} {'n':>4} {'whole picture':>14} {'oracle view':>12}")
    for group in groups:
        whole, view = right["whole"][group], right["view"][group]
        print(f"{group:<8} {len(whole):>4} {100 * sum(whole) / len(whole):>13.1f}% {100 * sum(view) / len(view):>11.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
