"""The two Python steps of ``eval/gpu_check.sh``: record the environment, and summarise the run.

    python eval/gpu_check.py env --out DIR --needed langchain_core,pydantic,...
    python eval/gpu_check.py summary --out DIR --mode gpu --tests-rc 0 --bench-rc 0

``summary`` reads what the run left in DIR (env.json, tests.xml from pytest, bench.jsonl from
bench_gpu.py), writes summary.txt and summary.json, prints the text and exits 1 unless every
check passed. It imports nothing heavy, so it still runs after a step crashed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

# Modules whose versions the summary shows, and the distributions they come from.
MODULES = {"torch": "torch", "transformers": "transformers", "accelerate": "accelerate", "triton": "triton",
           "xgrammar": "xgrammar", "langchain_core": "langchain-core", "pydantic": "pydantic",
           "tenacity": "tenacity", "platformdirs": "platformdirs", "numpy": "numpy", "PIL": "pillow"}
TIMED_OUT = {124, 137}  # timeout(1): the step ran past its limit (137: killed after the grace period)
ROW = "{:<9} {:>5} {:>5} {:>8} {:>8} {:>9} {:>9}"


def environment(needed: list[str]) -> dict[str, Any]:
    """Python, the modules' versions and locations, and what torch sees of CUDA."""
    info: dict[str, Any] = {"python": sys.version.split()[0], "modules": {}, "missing": []}
    for module, dist in MODULES.items():
        try:
            imported = importlib.import_module(module)
            info["modules"][module] = {"version": importlib.metadata.version(dist),
                                       "path": str(Path(imported.__file__).parent)}
        except Exception as error:  # absent, or broken: either way the run will say so
            info["modules"][module] = {"error": f"{type(error).__name__}: {error}"}
    info["missing"] = [m for m in needed if "error" in info["modules"].get(m, {"error": ""})]
    torch = sys.modules.get("torch")
    if torch is not None:
        cuda = torch.cuda.is_available()
        info["cuda"] = {"available": cuda, "torch_cuda": torch.version.cuda}
        if cuda:
            props = torch.cuda.get_device_properties(0)
            info["cuda"] |= {"device": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                             "capability": f"{props.major}.{props.minor}", "count": torch.cuda.device_count()}
    return info


def read_tests(path: Path) -> dict[str, int] | None:
    """Counts from pytest's JUnit XML, or None when pytest wrote none."""
    if not path.is_file():
        return None
    root = ElementTree.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["seconds"] = round(float(suite.get("time", 0)), 1)
    return counts


def read_bench(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_tests(tests: dict[str, int] | None, rc: int, timeout: int, gpu: bool) -> tuple[bool, str]:
    if rc in TIMED_OUT:
        return False, f"stopped at the {timeout} s limit; see log.txt"
    if tests is None:
        return False, f"pytest wrote no report (exit {rc}); see log.txt"
    failed = tests["failures"] + tests["errors"]
    counts = f"{tests['passed']} passed, {failed} failed, {tests['skipped']} skipped"
    if failed or rc != 0:
        return False, f"{counts} in {tests['seconds']} s (exit {rc}); see log.txt"
    if tests["skipped"]:
        why = "CUDA was not visible to pytest, so nothing ran on a GPU"
        if gpu:
            return False, f"{counts}: {why}. This is NOT a pass"
        return True, f"{counts}: {why} (expected in a dry run)"
    return True, f"{counts} in {tests['seconds']} s"


def check_answers(lines: list[dict[str, Any]]) -> tuple[bool, str]:
    """Every answerer row (batched and one per call) must be a non-empty answer."""
    rows = [line for line in lines if line["phase"] in ("answerer", "per_call")]
    if not rows:
        return False, "no answerer phase finished"
    parts = [f"{row['phase']} batch {row['batch_size']}: {row['answered']}/{row['rows']}" for row in rows]
    raw = [f"{line['answered']}/{line['rows']}" for line in lines if line["phase"] == "generate"]
    detail = "; ".join(parts) + (f" (raw generate: {', '.join(raw)})" if raw else "")
    empty = [line for line in rows if line["answered"] != line["rows"]]
    if empty:
        return False, f"NOT all non-empty: {detail}; first error: {empty[0].get('first_error', '?')}"
    return True, f"all non-empty: {detail}"


def check_agent(lines: list[dict[str, Any]]) -> tuple[bool, str]:
    """Every agent sample must end with a verdict and without an error."""
    agent = next((line for line in lines if line["phase"] == "agent"), None)
    if agent is None:
        return False, "the agent phase did not finish"
    reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(agent["stop_reasons"].items()))
    detail = (f"{agent['verdicts']} of {agent['samples']} samples reached a verdict ({reasons}); "
              f"{agent['sub_questions']} sub-questions, {agent['errors']} errors")
    if agent["verdicts"] != agent["samples"] or agent["errors"]:
        return False, f"{detail}; first error: {agent.get('first_error', 'none')}"
    return True, detail


def check_bench(lines: list[dict[str, Any]], rc: int, timeout: int, gpu: bool) -> tuple[bool, str]:
    phases = [line["phase"] for line in lines]
    setup = lines[0] if phases[:1] == ["setup"] else None
    expected = {"setup", "answerer", "agent", "generate", "per_call"}
    if rc in TIMED_OUT:
        return False, f"stopped at the {timeout} s limit after: {', '.join(phases) or 'nothing'}"
    if rc != 0 or not expected <= set(phases):
        return False, f"exit {rc} after: {', '.join(phases) or 'nothing'}; see log.txt"
    if gpu and (setup["device"] != "cuda" or setup["shape"] != "3b"):
        return False, f"ran the {setup['shape']} shape on {setup['device']}, not the 3B shape on CUDA"
    return True, f"every phase finished ({len(lines)} lines)"


def figures(lines: list[dict[str, Any]]) -> list[str]:
    """The measurements as a table, then the comparisons the benchmark is for."""
    setup = next((line for line in lines if line["phase"] == "setup"), None)
    if setup is None:
        return []
    weights = setup["weights_gib"]
    side = setup["image_size"]
    text = [f"model: {setup['shape']} shape, {setup['parameters_b']} B parameters in {setup['dtype']} on "
            f"{setup['gpu'] or setup['device']}; weights {weights} GiB; vocabulary {setup['model_vocab']} "
            f"(tokenizer {setup['tokenizer_vocab']}); {setup['image_tokens_per_image']} image tokens per "
            f"{side}x{side} image; {setup['max_new_tokens']} new tokens per answer", "",
            ROW.format("phase", "batch", "rows", "seconds", "rows/s", "peak GiB", "+weights")]
    rates: dict[tuple[str, int], float] = {}
    for line in lines:
        if "rows" in line:
            rates[line["phase"], line["batch_size"]] = line["rows_per_s"]
            extra = round(line["peak_gib"] - weights, 3)
            text.append(ROW.format(line["phase"], line["batch_size"], line["rows"], line["seconds"],
                                   line["rows_per_s"], line["peak_gib"], extra))
    agent = next((line for line in lines if line["phase"] == "agent"), None)
    if agent:
        extra = round(agent["peak_gib"] - weights, 3)
        text += ["", f"agent: {agent['samples']} samples in {agent['seconds']} s (after a "
                 f"{agent['warm_up_seconds']} s warm-up): {agent['samples_per_s']} samples/s, "
                 f"{agent['sub_questions_per_s']} sub-questions/s, {agent['llm_output_tokens_per_s']} LLM "
                 f"tokens/s; peak {agent['peak_gib']} GiB (+{extra} over the weights)"]
    sizes = sorted(size for phase, size in rates if phase == "answerer")
    versus = [f"batch {s}: {rates['answerer', s]} vs {rates['generate', s]} "
              f"({rates['answerer', s] / rates['generate', s]:.2f}x)"
              for s in sizes if ("generate", s) in rates]
    if versus:
        text.append("answerer vs raw generate, rows/s: " + "; ".join(versus))
    if sizes and ("per_call", 1) in rates:
        best = max(sizes, key=lambda s: rates["answerer", s])
        text.append(f"batched vs one question per call, rows/s: {rates['answerer', best]} at batch {best} vs "
                    f"{rates['per_call', 1]} ({rates['answerer', best] / rates['per_call', 1]:.1f}x)")
    return text


def summarise(out: Path, mode: str, tests_rc: int, bench_rc: int, tests_timeout: int,
              bench_timeout: int) -> dict[str, Any]:
    """The checks and figures of a run, from the files it left in ``out``."""
    gpu = mode == "gpu"
    env_path = out / "env.json"
    env = {"modules": {}, "missing": ["no env.json"]}
    if env_path.is_file():
        env = json.loads(env_path.read_text())
    lines = read_bench(out / "bench.jsonl")
    cuda = env.get("cuda", {})
    missing = ", ".join(env["missing"])
    checks = {
        "imports": (not missing, f"missing: {missing}" if missing else "every needed module imports"),
        "tests": check_tests(read_tests(out / "tests.xml"), tests_rc, tests_timeout, gpu),
        "answers": check_answers(lines),
        "agent": check_agent(lines),
        "benchmark": check_bench(lines, bench_rc, bench_timeout, gpu),
    }
    if gpu:
        checks["cuda"] = (bool(cuda.get("available")), cuda.get("device", "torch sees no CUDA device"))
    ok = all(passed for passed, _ in checks.values())
    versions = ", ".join(f"{m} {v['version']}" for m, v in env["modules"].items() if "version" in v)
    device = "no CUDA device visible"
    if cuda.get("available"):
        device = f"{cuda['device']}, {cuda['memory_gib']} GiB, CUDA {cuda['torch_cuda']}"
    text = [f"idealagent GPU check ({mode}): {'OK' if ok else 'FAILED'}",
            f"environment: Python {env.get('python', '?')}; {device}; {versions}"]
    text += [f"{name + ':':<11} {'ok  ' if passed else 'FAIL'} {detail}" 
             for name, (passed, detail) in checks.items()]
    text += ["", *figures(lines)]
    return {"ok": ok, "mode": mode, "checks": {name: {"ok": passed, "detail": detail}
                                               for name, (passed, detail) in checks.items()},
            "environment": env, "measurements": lines, "text": "\n".join(text).rstrip() + "\n"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    env = commands.add_parser("env", help="write env.json and print it")
    env.add_argument("--out", type=Path, required=True)
    env.add_argument("--needed", default="", help="comma-separated modules the run cannot do without")
    summary = commands.add_parser("summary", help="write summary.txt and summary.json and print the text")
    summary.add_argument("--out", type=Path, required=True)
    summary.add_argument("--mode", choices=["gpu", "dry-run"], required=True)
    for step in ("tests", "bench"):
        summary.add_argument(f"--{step}-rc", type=int, required=True)
        summary.add_argument(f"--{step}-timeout", type=int, default=0)
    args = parser.parse_args()

    if args.command == "env":
        info = environment([m for m in args.needed.split(",") if m])
        (args.out / "env.json").write_text(json.dumps(info, indent=2))
        print(json.dumps(info))
        return
    result = summarise(args.out, args.mode, args.tests_rc, args.bench_rc, args.tests_timeout,
                       args.bench_timeout)
    text = result.pop("text")
    (args.out / "summary.txt").write_text(text)
    (args.out / "summary.json").write_text(json.dumps(result, indent=2))
    print(text, end="")
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
