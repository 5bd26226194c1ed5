"""The README's Python blocks, run as written: only the server addresses and the model folder
are pointed at the tests' stand-ins (a local OpenAI-compatible stub, a tiny random Qwen2-VL)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from tests.openai_stub import StubServer
from tests.test_structured_forms import endpoint
from tests.tiny_vlms import make_tiny_qwen2_vl

ROOT = Path(__file__).resolve().parent.parent


def python_blocks() -> list[str]:
    """Every ```python block of the README, in order."""
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)


def block(marker: str) -> str:
    [found] = [b for b in python_blocks() if marker in b]
    return found


def run(code: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Execute ``code`` from the repository root; return what it printed."""
    monkeypatch.chdir(ROOT)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    return printed.getvalue()


TRACE_LINE = re.compile(r"^'.+' → ('.+' at \d\.\d\d( \(the direct answer\)| \(from a closer look\)| \(from round \d+\))?|no answer) "
                        r"after \d+ rounds?; \w+$")


@pytest.mark.real_weights
@pytest.mark.tiny_replies
def test_the_quick_start_runs_and_stream_prints_one_line_per_step(monkeypatch):
    printed = run(block('load_preset("tiny")'), monkeypatch).splitlines()
    answer, confidence, stop = printed[0].rsplit(" ", 2)
    assert answer and 0.0 <= float(confidence) <= 1.0 and stop in {"confident", "max_rounds", "no_new_questions",
                                                                             "rounds_do_not_pay"}
    steps = printed[1:]
    patterns = [re.compile(r"^Direct answer ('.+' at \d\.\d\d \(reply: '.*'\)|: none .*)$"),
                re.compile(r"^Round \d+( \(final\))?: \d+ sub-questions?; (verdict '.+' at \d\.\d\d|undecided)$"),
                TRACE_LINE]
    assert steps and all(any(p.match(line) for p in patterns) for line in steps), steps
    assert steps[0].startswith("Direct answer") and TRACE_LINE.match(steps[-1])
    # The README's example lines have the same shapes as what was printed.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = re.search(r"each with the\ncalibrated confidence the loop acts on:\n\n```\n(.*?)```", readme, re.S)
    assert example and all(any(p.match(line) for p in patterns) for line in example.group(1).splitlines())


def test_the_server_pairing_runs_against_openai_compatible_servers(monkeypatch):
    code = block("OpenAIAnswerer(")
    with StubServer(endpoint) as llm_server, StubServer(endpoint) as vlm_server:
        code = code.replace("http://localhost:8000/v1", llm_server.base_url)
        code = code.replace("http://localhost:8001/v1", vlm_server.base_url)
        printed = run(code, monkeypatch)
    assert TRACE_LINE.match(printed.strip()) and "'red'" in printed


def test_the_local_vlm_pairing_loads_through_from_pretrained(monkeypatch, tmp_path):
    folder = make_tiny_qwen2_vl(tmp_path / "qwen2-vl")
    code = block("TransformersAnswerer.from_pretrained(")
    printed = run(code.replace("/models/Qwen2.5-VL-3B-Instruct", str(folder)), monkeypatch)
    # Random weights answer nonsense, or nothing usable: the loop still ends with one line.
    assert TRACE_LINE.match(printed.strip()), printed


def test_any_langchain_chat_model_with_the_perception_answerer(monkeypatch):
    code = block("PerceptionAnswerer(llm)")
    monkeypatch.setenv("OPENAI_API_KEY", "not-needed-by-the-stub")
    with StubServer(endpoint) as server:
        printed = run(code.replace("https://api.openai.com/v1", server.base_url), monkeypatch)
    assert TRACE_LINE.match(printed.strip()), printed
