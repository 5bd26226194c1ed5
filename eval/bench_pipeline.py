"""Throughput of the loop against model servers: the pipelined scheduler against the lock-step
loop, on a latency stub that varies like a busy vLLM (eval/latency_stub.py, in its own process).

    python eval/bench_pipeline.py --samples 400 --median 0.2 --sigma 0.8 --unconfident 0.4

Both runs use the openai preset (batch size 64 unless --batch-size) with 16 LLM and 16 VLM
requests allowed in flight, on seeded easy-VQA test questions. For each it prints samples/s,
requests/s, and the mean requests in flight (summed request time over wall time, measured at
the server) against the 32 allowed. Results go to stdout as a table and, with --json, as JSON
lines. The figures in docs/benchmarks.md come from this script.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def call_stub(url: str, path: str, post: bool = False) -> dict:
    request = urllib.request.Request(url + path, data=b"{}" if post else None, method="POST" if post else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def start_stub(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(HERE / "latency_stub.py"), "--port", str(port),
                                "--median", str(args.median), "--sigma", str(args.sigma),
                                "--unconfident", str(args.unconfident), "--seed", str(args.seed)],
                               stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(200):
        try:
            call_stub(url, "/stats")
            return process, url
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the latency stub did not start")


def measure(url: str, samples: list, pipeline: bool, batch_size: int | None, allowed: int) -> dict:
    from idealagent.presets import load_preset

    agent = load_preset("openai", pipeline=pipeline, batch_size=batch_size, cache=False)  # timing: no hits
    agent.run_batch(samples[:2])  # connections and the structured-output form, outside the timing
    call_stub(url, "/stats/reset", post=True)
    started = time.perf_counter()
    traces = agent.run_batch(samples)
    seconds = time.perf_counter() - started
    stats = call_stub(url, "/stats")
    return {
        "loop": "pipelined" if pipeline else "lock-step", "samples": len(samples),
        "batch_size": agent.batch_size, "seconds": round(seconds, 2),
        "samples_per_s": round(len(samples) / seconds, 2), "requests_per_s": round(stats["requests"] / seconds, 1),
        "mean_in_flight": round(stats["busy_s"] / seconds, 1), "allowed": allowed,
        "busy_share": round(stats["busy_s"] / seconds / allowed, 3), "most_in_flight": stats["most_in_flight"],
        "requests": stats["requests"], "by_role": stats["by_role"],
        "mean_in_flight_by_server": {
            "llm": round((stats["busy_s_by_role"].get("questioner", 0) + stats["busy_s_by_role"].get("reasoner", 0))
                         / seconds, 1),
            "vlm": round(stats["busy_s_by_role"].get("vlm", 0) / seconds, 1)},
        "mean_rounds": round(sum(t.judged_rounds for t in traces) / len(traces), 2),
        "completed": sum(t.answer is not None for t in traces),
        "stop_reasons": {r: sum(t.stop_reason == r for t in traces) for r in sorted({t.stop_reason for t in traces})},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--median", type=float, default=0.2)
    parser.add_argument("--sigma", type=float, default=0.8)
    parser.add_argument("--unconfident", type=float, default=0.4)
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight per server (LLM, VLM)")
    parser.add_argument("--batch-size", type=int, default=None, help="samples in flight (default: the preset's)")
    parser.add_argument("--loop", choices=["both", "pipelined", "lock-step"], default="both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="one JSON line per run")
    args = parser.parse_args()

    from idealagent.evaluation.datasets import load_benchmark

    process, url = start_stub(args)
    try:
        for prefix, model in (("IDEALAGENT_LLM", "stub-llm"), ("IDEALAGENT_VLM", "stub-vlm")):
            os.environ.update({f"{prefix}_BASE_URL": url, f"{prefix}_MODEL": model,
                               f"{prefix}_MAX_CONCURRENCY": str(args.concurrency), f"{prefix}_TIMEOUT": "60"})
        items = load_benchmark("easy-vqa", None, "test", limit=args.samples, seed=args.seed).items
        samples = [item.to_sample() for item in items]
        loops = {"both": [False, True], "pipelined": [True], "lock-step": [False]}[args.loop]
        for pipeline in loops:
            line = measure(url, samples, pipeline, args.batch_size, 2 * args.concurrency)
            if args.json:
                print(json.dumps(line), flush=True)
            else:
                print(f"{line['loop']:>9}: {line['samples_per_s']:.2f} samples/s, {line['requests_per_s']:.1f} "
                      f"requests/s, {line['mean_in_flight']:.1f} of {line['allowed']} in flight on average "
                      f"({line['busy_share']:.0%}), at most {line['most_in_flight']}; "
                      f"{line['completed']}/{line['samples']} answered in {line['seconds']:.1f}s, "
                      f"{line['mean_rounds']} rounds", flush=True)
    finally:
        process.kill()


if __name__ == "__main__":
    main()
