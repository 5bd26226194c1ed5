"""Throughput of the batched loop on the embedded `tiny` preset (or any preset).

Runs the same easy-VQA test questions (shipped in the `easy-vqa` package, so it works offline)
at several batch sizes and prints samples/s, sub-questions/s and generated LLM tokens/s.

    python eval/bench_throughput.py --samples 8 --batch-sizes 1 8
"""

from __future__ import annotations

import argparse
import json
import random
import time

from idealagent import Sample, load_preset


def easy_vqa_samples(count: int, seed: int) -> list[Sample]:
    """``count`` seeded test questions from easy-VQA, as yes/no or open samples."""
    import easy_vqa

    questions, answers, image_ids = easy_vqa.get_test_questions()
    paths = easy_vqa.get_test_image_paths()
    picked = random.Random(seed).sample(range(len(questions)), count)
    return [
        Sample(
            id=str(i),
            image=paths[image_ids[i]],
            question=questions[i],
            kind="yes_no" if answers[i] in ("yes", "no") else "open",
        )
        for i in picked
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    samples = easy_vqa_samples(args.samples, args.seed)
    agent = load_preset(args.preset)
    agent.run_batch(samples[:1])  # warm-up: first-call costs (grammar compilation, caches)
    for batch_size in args.batch_sizes:
        agent.batch_size = batch_size
        started = time.perf_counter()
        traces = agent.run_batch(samples)
        seconds = time.perf_counter() - started
        sub_questions = sum(len(t.sub_questions) for t in traces)
        tokens = sum(t.usage.llm_output_tokens for t in traces)
        print(json.dumps({
            "preset": args.preset, "samples": len(traces), "batch_size": batch_size,
            "seconds": round(seconds, 1), "samples_per_s": round(len(traces) / seconds, 3),
            "sub_questions_per_s": round(sub_questions / seconds, 2),
            "llm_output_tokens_per_s": round(tokens / seconds, 1),
            "mean_rounds": round(sum(len(t.rounds) for t in traces) / len(traces), 2),
        }))


if __name__ == "__main__":
    main()
