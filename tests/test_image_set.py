"""One ``idealagent eval`` over a mixed image set: broken files and URLs next to valid but unusual
images. Every valid one is answered, every broken one fails alone with one line naming its
problem, each id appears once, and the run's memory stays bounded (the 400-megapixel bomb is
never decoded)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.image_files import VALID_SIZES, broken_images, valid_images
from tests.image_server import ImageServer, closed_port_url

ROOT = Path(__file__).resolve().parent.parent
CLI = "from tests.eval_fake_preset import register; register(); from idealagent.cli import main; main()"
MAX_RSS_BYTES = 1.5 * 2**30

# id -> a fragment the failed sample's error must contain
BROKEN = {
    "empty.png": "empty (0 bytes)",
    "truncated.png": "truncated",
    "text.jpg": "not a readable image (text)",
    "page.png": "an HTML page",
    "bad_crc.png": "damaged or unsupported PNG",
    "bomb.png": "decompression bomb (400 megapixels)",
    "a_folder.png": "is a directory",
    "missing.png": "no such file",
    "url_404": "HTTP 404",
    "url_closed_port": "unreachable",
}


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "no_proxy": "127.0.0.1",
            "NO_PROXY": "127.0.0.1"}


def ask(image: str) -> subprocess.CompletedProcess:
    """``idealagent ask`` in a subprocess (real stderr: warnings and tracebacks would show)."""
    return subprocess.run([sys.executable, "-c", CLI, "ask", image, "What is it?", "--preset", "fake-eval"],
                          cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=120, check=False)


# The child's own peak resident memory (VmHWM, read as it exits), not the parent's ru_maxrss of
# it: Linux carries the high-water mark across fork and exec, so ru_maxrss would count the
# pytest process the child was forked from (over 1 GB late in the suite).
def run_measured(command: list[str], log: Path) -> tuple[int, int]:
    """Run the CLI with ``command``'s arguments, output to ``log``; its exit code and its own
    peak resident memory in bytes."""
    peak_file = log.with_suffix(".peak")
    # The CLI ends with os._exit (no atexit handlers): the peak is read just before it.
    code = ("import os, re\n"
            "_exit = os._exit\n"
            f"def _peak_then_exit(status_code, path={str(peak_file)!r}):\n"
            "    status = open('/proc/self/status').read()\n"
            "    open(path, 'w').write(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1))\n"
            "    _exit(status_code)\n"
            "os._exit = _peak_then_exit\n" + CLI)
    with log.open("wb") as out:
        done = subprocess.run([sys.executable, "-c", code, *command], cwd=ROOT, env=cli_env(), stdout=out,
                              stderr=subprocess.STDOUT, timeout=300, check=False)
    return done.returncode, int(peak_file.read_text()) * 1024


def test_one_eval_over_a_mixed_image_set(tmp_path: Path) -> None:
    valid = valid_images(tmp_path / "valid")
    broken = broken_images(tmp_path / "broken")
    with ImageServer(tmp_path / "valid") as server:
        refs = {**{name: str(path) for name, path in valid.items()},
                **{name: str(path) for name, path in broken.items()},
                "url_ok": server.url("rotated.jpg"),
                "url_404": server.url("nope.png"),
                "url_closed_port": closed_port_url()}
        data = tmp_path / "mixed.jsonl"
        records = [{"id": name, "image": ref, "question": f"What colour is item {n}?", "answer": "red"}
                   for n, (name, ref) in enumerate(refs.items())]
        data.write_text("".join(json.dumps(record) + "\n" for record in records))
        out = tmp_path / "results.jsonl"
        code, peak_rss = run_measured(
            ["eval", "jsonl", "--data", str(data), "--out", str(out), "--preset", "fake-eval"],
            tmp_path / "eval.log")
    log = (tmp_path / "eval.log").read_text()
    assert code == 0, log
    assert "Traceback" not in log
    assert peak_rss < MAX_RSS_BYTES, f"peak RSS {peak_rss / 2**20:.0f} MiB"

    rows = [json.loads(line) for line in out.read_text().splitlines()][1:]
    ids = [row["id"] for row in rows]
    assert sorted(ids) == sorted(refs) and len(ids) == len(set(ids))  # each id once
    by_id = {row["id"]: row for row in rows}
    for name in [*VALID_SIZES, "url_ok"]:
        row = by_id[name]
        assert row["error"] is None and row["prediction"] in ("red", "blue"), row
        assert row["trace"]["stop_reason"] != "error"
    for name, fragment in BROKEN.items():
        row = by_id[name]
        error = row["trace"]["error"]
        assert row["trace"]["stop_reason"] == "error" and row["prediction"] is None, row
        assert fragment in error and "\n" not in error, (name, error)
        assert refs[name] in error  # the line names the file or URL at fault


def test_ask_with_a_bomb_prints_one_line(tmp_path: Path) -> None:
    bomb = broken_images(tmp_path)["bomb.png"]
    result = ask(str(bomb))
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "decompression bomb" in lines[0] and str(bomb) in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize("ref", ["ftp://127.0.0.1/cat.jpg", "file:///etc/hosts"])
def test_ask_with_another_url_scheme_says_so(ref: str) -> None:
    result = ask(ref)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "unsupported URL scheme" in result.stderr and "no such file" not in result.stderr
