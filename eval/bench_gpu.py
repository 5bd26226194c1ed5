"""GPU benchmark of TransformersAnswerer and the one-model agent on a random Qwen2.5-VL-3B shape.

Random weights (no download): the shape, not the answers, sets the cost. The model is built
directly on the device (bf16 on CUDA) with Qwen2.5-VL-3B's dimensions and its 151,936-token
vocabulary, and paired with the tiny test tokenizer (400 tokens). ``--tiny`` keeps the
architecture, the image size and a vocabulary ten times the tokenizer's but shrinks every
dimension, so the whole script runs on a CPU in seconds (``eval/gpu_check.sh --dry-run``
does that in ``make test``).

One JSON line per measurement, on stdout and appended to ``--jsonl``:

- ``setup``: what was built, the weights' memory, image tokens per image.
- ``answerer``: ``answer_each`` over every request with ``max_batch_size`` = the batch size.
- ``agent``: ``IdealAgent.run_batch`` with these weights in every role, after a warm-up sample.
- ``generate``: the same prompts and images through the processor and ``model.generate`` in
  chunks of the batch size, without the answerer: its overhead is the difference.
- ``per_call``: one ``answer_each`` call per request, as a caller that does not batch.

Every phase resets the peak-memory counter first, so ``peak_gib`` minus the setup line's
``weights_gib`` is what that phase needed beyond the VLM itself.

    python eval/bench_gpu.py --requests 64 --batch-sizes 1 8 32 --agent-samples 8
    python eval/bench_gpu.py --tiny --device cpu --requests 8 --batch-sizes 1 4 --agent-samples 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.tiny_vlms builds the tokenizer and processor offline

QWEN_VOCAB = 151936
# Qwen/Qwen2.5-VL-3B-Instruct's config.json (text and vision towers).
QWEN25_VL_3B_TEXT = {
    "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16,
    "num_key_value_heads": 2, "vocab_size": QWEN_VOCAB, "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6, "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0,
                                              "mrope_section": [16, 24, 24]},
}
QWEN25_VL_3B_VISION = {
    "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 2048,
    "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31], "hidden_act": "silu",
}
# The same architecture with tiny dims (mrope_section sums to head_dim / 2 = 8). Its vocabulary,
# like the 3B's, is far larger than the tokenizer's, but not so large that the output layer
# dominates a CPU run: 90% of the ids still cannot be decoded.
TINY_TEXT = {**QWEN25_VL_3B_TEXT, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "vocab_size": 4096, "max_position_embeddings": 4096,
             "rope_parameters": {**QWEN25_VL_3B_TEXT["rope_parameters"], "mrope_section": [2, 3, 3]}}
TINY_VISION = {**QWEN25_VL_3B_VISION, "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
               "out_hidden_size": 64, "fullatt_block_indexes": [1]}
# Tied embeddings, as in the 3B; at tiny dims the residual stream is mostly the last token's
# embedding, so a tied head echoes it ("\n\n\n..."): the tiny shape has its own output rows.
SHAPES = {"3b": (QWEN25_VL_3B_TEXT, QWEN25_VL_3B_VISION, True), "tiny": (TINY_TEXT, TINY_VISION, False)}
# 448x448 is 32x32 patches of 14 px, merged 2x2: exactly 256 image tokens, a typical VQA photo.
IMAGE_SIDE = 448


def build(shape: str, device: str, dtype: Any = None) -> Any:
    """The answerer over a random model of ``shape``, built on ``device`` (default dtype: bf16
    on CUDA, else fp32)."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from idealagent.answerers.transformers import TransformersAnswerer
    from idealagent.answerers.vlm_processing import load_processor
    from tests.tiny_vlms import make_tiny_qwen2_vl

    with tempfile.TemporaryDirectory() as workdir:  # only its tokenizer and processor are used
        folder = make_tiny_qwen2_vl(Path(workdir), version="2.5")
        processor = load_processor(str(folder), {"local_files_only": True})
    size = processor.image_processor.size  # a dict, or transformers' SizeDict: keep its type
    processor.image_processor.size = type(size)(shortest_edge=56 * 56, longest_edge=IMAGE_SIDE * IMAGE_SIDE)
    tokenizer = processor.tokenizer
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in
           ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}
    text, vision, tied = SHAPES[shape]
    config = Qwen2_5_VLConfig(
        text_config={**text, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
                     "bos_token_id": None},
        vision_config=vision, tie_word_embeddings=tied,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    dtype = dtype or (torch.bfloat16 if device == "cuda" else torch.float32)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in place: saving and reloading 7 GB would only time the disk
    try:
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(default)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    silence_undecodable_tokens(model, tokenizer)
    name = f"random Qwen2.5-VL {shape} shape"
    return TransformersAnswerer(model, processor, model_name=name, max_new_tokens=8)


def silence_undecodable_tokens(model: Any, tokenizer: Any) -> int:
    """Zero the embedding and output rows of the ids the tokenizer cannot turn into text.

    The model's vocabulary is Qwen's 151,936 ids; the tokenizer decodes only the first 400,
    minus its special tokens, which ``skip_special_tokens`` drops. Left alone, a random model
    picks almost only such ids, so every answer decodes to "" and the agent stops at the
    caption. A zero output row gives a logit of 0, below the best of the live rows, so the
    model writes ordinary tokens; the end token then comes only when a JSON grammar leaves
    nothing else. Returns how many ids were silenced.
    """
    import torch

    vocab = model.get_input_embeddings().weight.shape[0]
    silent = torch.ones(vocab, dtype=torch.bool)
    silent[: len(tokenizer)] = False
    silent[[i for i, token in tokenizer.added_tokens_decoder.items() if token.special]] = True
    layers = {id(layer): layer for layer in (model.get_input_embeddings(), model.get_output_embeddings())}
    with torch.no_grad():
        for layer in layers.values():  # one layer when the embeddings are tied
            layer.weight[silent.to(layer.weight.device)] = 0
    return int(silent.sum())


def requests(count: int) -> list:
    """``count`` (image, question) pairs over count // 4 distinct images, as the agent sends them."""
    from PIL import Image

    colours = ["red", "green", "blue", "white", "black", "yellow", "purple", "orange"]
    images = [Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), colours[i % len(colours)])
              for i in range(max(count // 4, 1))]
    questions = ["What is in the picture?", "What colour is it?", "Is there a person?", "How many objects?"]
    return [(images[i % len(images)], questions[i % len(questions)]) for i in range(count)]


def image_tokens(processor: Any, image: Any) -> int:
    """Tokens one image becomes: its patch grid, merged ``merge_size`` x ``merge_size``."""
    grid = processor.image_processor([image], return_tensors="pt")["image_grid_thw"][0]
    return int(grid.prod()) // processor.image_processor.merge_size ** 2


def raw_generate(answerer: Any, pairs: list, batch_size: int) -> list[str]:
    """The answerer's rows, chunked as it chunks them, through the processor and ``generate``
    alone: no per-image preprocessing cache, no trimming, no error handling."""
    import torch

    processor, model, tokenizer = answerer.processor, answerer.model, answerer.processor.tokenizer
    prompts = [answerer._prompt("answer", question) for _, question in pairs]  # the very same text
    order = sorted(range(len(pairs)), key=lambda i: len(prompts[i]))
    texts = [""] * len(pairs)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        inputs = processor(text=[prompts[i] for i in rows], images=[pairs[i][0] for i in rows],
                           padding=True, return_tensors="pt").to(model.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=answerer.max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
        decoded = tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        for i, text in zip(rows, decoded):
            texts[i] = text
    return texts


class Meter:
    """Times a phase and reads its peak GPU memory (the counter is reset at the start)."""

    def __init__(self) -> None:
        import torch

        self.cuda = torch.cuda.is_available()
        self.torch = torch

    def __enter__(self) -> Meter:
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.started
        self.peak_gib = gib(self.torch.cuda.max_memory_allocated()) if self.cuda else 0.0


def gib(size: int) -> float:
    return round(size / 2**30, 3)


def answer_counts(results: list) -> dict[str, Any]:
    """Non-empty answers and failures (the first failure's message, to say why)."""
    failures = [r for r in results if isinstance(r, Exception)]
    counts: dict[str, Any] = {"answered": sum(not isinstance(r, Exception) and bool(str(r).strip())
                                              for r in results),
                              "failed": len(failures)}
    if failures:
        counts["first_error"] = f"{type(failures[0]).__name__}: {failures[0]}"
    return counts


def agent_phase(answerer: Any, samples: int, batch_size: int, emit: Any) -> None:
    """The one-model agent: a warm-up sample (grammar compilation, first kernels), then the run."""
    from idealagent import Sample
    from idealagent.agent import IdealAgent

    answerer.max_batch_size = batch_size
    llm = answerer.chat_model(max_new_tokens=400, max_batch_size=max(samples, 1))
    agent = IdealAgent(llm, answerer, max_rounds=2, max_sub_questions=2, structured="auto", attempts=1,
                       batch_size=samples)
    pairs = requests(samples + 1)
    batch = [Sample(question=q, image=image, kind="yes_no", id=str(i)) for i, (image, q) in enumerate(pairs)]
    warm_up = time.perf_counter()
    agent.run_batch(batch[-1:])
    warm_up = time.perf_counter() - warm_up
    with Meter() as meter:
        traces = agent.run_batch(batch[:-1])
    sub_questions = sum(len(t.sub_questions) for t in traces)
    llm_tokens = sum(t.usage.llm_output_tokens for t in traces)
    line = {"phase": "agent", "samples": len(traces), "seconds": round(meter.seconds, 3),
            "warm_up_seconds": round(warm_up, 3), "samples_per_s": round(len(traces) / meter.seconds, 3),
            "sub_questions": sub_questions, "sub_questions_per_s": round(sub_questions / meter.seconds, 3),
            "verdicts": sum(t.answer is not None for t in traces),
            "errors": sum(t.error is not None for t in traces),
            "stop_reasons": dict(Counter(t.stop_reason for t in traces)),
            "llm_output_tokens": llm_tokens, "llm_output_tokens_per_s": round(llm_tokens / meter.seconds, 1),
            "peak_gib": meter.peak_gib}
    errors = [t.error for t in traces if t.error]
    if errors:
        line["first_error"] = errors[0]
    emit(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny dims, same architecture (runs on a CPU)")
    parser.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when available")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--agent-samples", type=int, default=8)
    parser.add_argument("--jsonl", type=Path, help="also append every line to this file")
    args = parser.parse_args()

    import torch
    import transformers

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    if not args.tiny and device != "cuda":
        parser.error("the 3B-shaped benchmark needs CUDA; pass --tiny to run on the CPU")

    def emit(line: dict[str, Any]) -> None:
        text = json.dumps(line)
        print(text, flush=True)
        if args.jsonl:
            with args.jsonl.open("a") as out:
                out.write(text + "\n")

    shape = "tiny" if args.tiny else "3b"
    started = time.perf_counter()
    answerer = build(shape, device)
    model, tokenizer = answerer.model, answerer.processor.tokenizer
    pairs = requests(args.requests)
    emit({"phase": "setup", "shape": shape, "device": device, "dtype": str(model.dtype).split(".")[-1],
          "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
          "torch": torch.__version__, "transformers": transformers.__version__,
          "parameters_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3),
          "weights_gib": gib(torch.cuda.memory_allocated()) if device == "cuda" else 0.0,
          "model_vocab": model.get_input_embeddings().weight.shape[0], "tokenizer_vocab": len(tokenizer),
          "image_size": IMAGE_SIDE, "image_tokens_per_image": image_tokens(answerer.processor, pairs[0][0]),
          "max_new_tokens": answerer.max_new_tokens,
          "build_seconds": round(time.perf_counter() - started, 2)})

    for batch_size in args.batch_sizes:  # warm-up: one chunk of each shape (kernels, the allocator)
        answerer.max_batch_size = batch_size
        answerer.answer_each(pairs[:batch_size])
    for batch_size in args.batch_sizes:
        answerer.max_batch_size = batch_size
        with Meter() as meter:
            results = answerer.answer_each(pairs)
        emit({"phase": "answerer", "batch_size": batch_size, "rows": len(pairs), **answer_counts(results),
              "seconds": round(meter.seconds, 3), "rows_per_s": round(len(pairs) / meter.seconds, 2),
              "peak_gib": meter.peak_gib})

    agent_phase(answerer, args.agent_samples, max(args.batch_sizes), emit)

    for batch_size in args.batch_sizes:
        with Meter() as meter:
            texts = raw_generate(answerer, pairs, batch_size)
        emit({"phase": "generate", "batch_size": batch_size, "rows": len(pairs),
              "answered": sum(bool(t.strip()) for t in texts), "failed": 0,
              "seconds": round(meter.seconds, 3), "rows_per_s": round(len(pairs) / meter.seconds, 2),
              "peak_gib": meter.peak_gib})

    with Meter() as meter:
        results = [answerer.answer_each([pair])[0] for pair in pairs]
    emit({"phase": "per_call", "batch_size": 1, "rows": len(pairs), **answer_counts(results),
          "seconds": round(meter.seconds, 3), "rows_per_s": round(len(pairs) / meter.seconds, 2),
          "peak_gib": meter.peak_gib})


if __name__ == "__main__":
    main()
