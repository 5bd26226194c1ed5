"""The notebooks are documentation that must keep working and must show what the code does now:
execute each one end to end, and check that its saved outputs are from the current version
(``make notebooks`` regenerates them; tests/notebook_outputs.py)."""

from __future__ import annotations

import re

import nbformat
import pytest

from idealagent.evaluation.plots import PLOT_FILES
from tests.notebook_outputs import METADATA_KEY, NOTEBOOKS, execute, output_kinds, outputs_fingerprint

REGENERATE = "its saved outputs are out of date; run `make notebooks` to save them again"


@pytest.mark.long  # about 100 s; the saved outputs' fingerprint is checked in every run (below)
@pytest.mark.real_weights
@pytest.mark.tiny_replies  # the kernel inherits the shared response cache
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_shows_what_is_saved(path, tmp_path):
    saved = nbformat.read(path, as_version=4)
    notebook = nbformat.read(path, as_version=4)
    execute(notebook, tmp_path)
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    stderr = "".join(o["text"] for o in outputs if o.get("output_type") == "stream" and o["name"] == "stderr")
    assert not re.search(r"\w+Warning: ", stderr), stderr  # e.g. tqdm's, in a kernel without ipywidgets
    # The same kinds of output, cell by cell (no plot more or fewer). Log lines on stderr may
    # come and go with what the tiny model says, so they are left out here; the saved
    # notebooks hold none (test_saved_outputs_are_from_this_version).
    kinds, saved_kinds = output_kinds(notebook, stderr=False), output_kinds(saved, stderr=False)
    assert kinds == saved_kinds, f"{path.name}: {REGENERATE}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_saved_outputs_are_from_this_version(path):
    notebook = nbformat.read(path, as_version=4)
    stored = notebook.metadata.get(METADATA_KEY, {}).get("outputs_fingerprint")
    assert stored == outputs_fingerprint(), f"{path.name}: {REGENERATE}"
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code), f"{path.name} has unexecuted cells"
    kinds = [kind for cell in output_kinds(notebook) for kind in cell]
    assert "error:" not in kinds and "stream:stderr" not in kinds, f"{path.name} saved an error or warning"


def test_the_evaluation_notebook_is_saved_with_its_results() -> None:
    # Readers see it on GitHub without running it: the report table and every plot are stored.
    (path,) = [p for p in NOTEBOOKS if p.stem == "evaluation"]
    notebook = nbformat.read(path, as_version=4)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == len(PLOT_FILES)
    assert any("agent" in o.get("data", {}).get("text/plain", "") for o in outputs)  # the report's table
