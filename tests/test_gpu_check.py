"""``eval/gpu_check.sh --dry-run``: every step of the GPU check on the CPU with tiny shapes.

A GPU is lent only now and then, for one short run; this keeps the script that run depends on
from rotting. The real run differs in the model's dims, the device and the dtype only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.long  # about 35 s of subprocesses; CI runs it


def summarise(out: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "eval" / "gpu_check.py"), "summary", "--out", str(out),
                           *options], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    run = subprocess.run(["bash", str(ROOT / "eval" / "gpu_check.sh"), "--dry-run"], env=env,
                         capture_output=True, text=True, timeout=400)
    return run, out


def test_dry_run_answers_every_request_and_the_agent_reaches_verdicts(dry_run):
    run, out = dry_run
    assert run.returncode == 0, run.stdout[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] and summary["mode"] == "dry-run"
    lines = summary["measurements"]
    assert [line["phase"] for line in lines[:1]] == ["setup"]
    assert lines[0]["model_vocab"] > lines[0]["tokenizer_vocab"]  # the mismatch the real run has
    answering = [line for line in lines if line["phase"] in ("answerer", "generate", "per_call")]
    assert {line["phase"] for line in answering} == {"answerer", "generate", "per_call"}
    assert all(line["answered"] == line["rows"] > 0 and line["failed"] == 0 for line in answering)
    [agent] = [line for line in lines if line["phase"] == "agent"]
    assert agent["verdicts"] == agent["samples"] > 0 and agent["errors"] == 0
    assert agent["sub_questions"] > 0 and agent["llm_output_tokens"] > 0
    text = (out / "summary.txt").read_text()
    assert text == run.stdout[-len(text):]  # the run ends by printing the summary
    assert text.startswith("idealagent GPU check (dry-run): OK")
    assert "skipped: CUDA was not visible" in text  # skipped GPU tests are named, not passed off
    assert {"log.txt", "env.json", "tests.xml", "bench.jsonl"} <= {p.name for p in out.iterdir()}


def test_the_same_files_read_as_a_gpu_run_fail_loudly(dry_run):
    """Skipped GPU tests, no CUDA and a tiny CPU benchmark are a failure when a GPU was expected."""
    _, out = dry_run
    result = summarise(out, "--mode", "gpu", "--tests-rc", "0", "--bench-rc", "0")
    assert result.returncode == 1
    assert result.stdout.startswith("idealagent GPU check (gpu): FAILED")
    checks = json.loads((out / "summary.json").read_text())["checks"]
    assert not checks["tests"]["ok"] and "NOT a pass" in checks["tests"]["detail"]
    assert not checks["cuda"]["ok"] and not checks["benchmark"]["ok"]
    assert checks["answers"]["ok"] and checks["agent"]["ok"]


def test_a_benchmark_stopped_at_its_limit_is_reported(dry_run):
    _, out = dry_run
    result = summarise(out, "--mode", "dry-run", "--tests-rc", "0", "--bench-rc", "124", "--bench-timeout", "270")
    assert result.returncode == 1
    benchmark = json.loads((out / "summary.json").read_text())["checks"]["benchmark"]
    assert not benchmark["ok"] and "stopped at the 270 s limit" in benchmark["detail"]
