"""The notebooks' saved outputs: regenerate them in place, and tell whether they are current.

``make notebooks`` (``python -m tests.notebook_outputs``) executes every notebook and saves it
with its outputs and, in its metadata, the fingerprint of what those outputs show (the version,
the Trace's fields, the tiny preset's settings, the prompts, the plot files). tests/test_notebooks.py
compares that fingerprint with the code's, and an execution's output kinds with the saved ones.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
METADATA_KEY = "idealagent"


def outputs_fingerprint() -> str:
    """12 hex digits over what the notebooks' outputs show; a change means they are out of date.

    Not the whole source: a refactor that shows the same things should not force a re-run."""
    import idealagent
    from idealagent.evaluation.plots import PLOT_FILES
    from idealagent.evaluation.results import prompts_sha256
    from idealagent.presets import preset_settings
    from idealagent.trace import Trace

    shown = {
        "version": idealagent.__version__, "trace": Trace.model_json_schema(),
        "tiny": preset_settings("tiny").model_dump(mode="json"), "prompts": prompts_sha256(),
        "plots": list(PLOT_FILES),
    }  # fmt: skip
    return hashlib.sha256(json.dumps(shown, sort_keys=True).encode()).hexdigest()[:12]


def execute(notebook: Any, workdir: Path, timeout: int | None = 600) -> None:
    """Run every cell in a fresh kernel, in ``workdir``, keeping the outputs in ``notebook``
    (``timeout``: seconds a cell may take; None, no limit)."""
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(workdir)}}).execute()  # fmt: skip


def output_kinds(notebook: Any, stderr: bool = True) -> list[list[str]]:
    """Per code cell, the kinds of its outputs (``stream:stderr``, ``display_data:image/png``, ...).

    What they say is left out (timings and the tiny model's answers vary); consecutive pieces of
    one stream count once, as the kernel may flush a print loop in several."""
    cells = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        kinds: list[str] = []
        for output in cell.get("outputs", []):
            if output["output_type"] == "stream":
                kind = f"stream:{output['name']}"
                if (kinds and kinds[-1] == kind) or (kind == "stream:stderr" and not stderr):
                    continue
            else:
                kind = f"{output['output_type']}:{'+'.join(sorted(output.get('data', {})))}"
            kinds.append(kind)
        cells.append(kinds)
    return cells


def main() -> None:
    """Execute each notebook and save it in place with its outputs and their fingerprint."""
    import idealagent

    fingerprint = outputs_fingerprint()
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        with tempfile.TemporaryDirectory(prefix="idealagent-notebook-") as workdir:
            execute(notebook, Path(workdir), timeout=None)  # a busy machine is slow, not broken
        notebook.metadata[METADATA_KEY] = {"version": idealagent.__version__,
                                           "outputs_fingerprint": fingerprint}  # fmt: skip
        nbformat.write(notebook, path)
        print(f"{path.name}: saved with outputs {fingerprint}", file=sys.stderr)


if __name__ == "__main__":
    main()
