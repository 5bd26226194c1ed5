"""What starting the ``idealagent`` command imports: its help, ``presets`` and a mistyped
argument answer without torch, transformers or LangChain (each a second or more to import on a
small machine); the models' libraries load only when a command loads models.

Each check runs in a fresh interpreter, since this one has imported everything already.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import idealagent
import idealagent.looking
from idealagent.examples import example_image

HEAVY = ("torch", "transformers", "langchain_core", "langchain_openai")
# Runs the CLI's app as `idealagent` does (main() would end the process before the print),
# then prints which HEAVY modules it imported.
RUN_CLI = """\
import sys
sys.argv = ["idealagent", *sys.argv[1:]]
from idealagent.cli import app
try:
    app()
except SystemExit:
    pass
print("imported:", *[name for name in {heavy!r} if name in sys.modules])
""".format(heavy=HEAVY)


def imported_by(*args: str) -> list[str]:
    """The HEAVY modules that ``idealagent ARGS...`` imported."""
    done = subprocess.run([sys.executable, "-c", RUN_CLI, *args], capture_output=True, text=True, timeout=120)
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("imported:"), done.stdout + done.stderr
    return line.split()[1:]


def test_importing_the_cli_imports_no_model_library() -> None:
    code = f"import sys, idealagent.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("args", [
    pytest.param(["--help"], id="help"),
    pytest.param(["ask", "--help"], id="ask-help"),
    pytest.param(["presets"], id="presets"),
    pytest.param(["ask", "no-such-picture.jpg", "What is it?"], id="missing-image"),
    pytest.param(["ask", str(example_image("cat")), "What is it?", "--threshold", "7"], id="bad-setting"),
])
def test_commands_that_load_no_model_import_no_model_library(args: list[str]) -> None:
    assert imported_by(*args) == []


def test_the_public_names_still_resolve() -> None:
    """The packages export their names on first use; every name in ``__all__`` is there."""
    for package in (idealagent, idealagent.looking):
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"
        assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError):
        idealagent.no_such_name  # noqa: B018
    from idealagent import IdealAgent
    from idealagent.agent import IdealAgent as Defined

    assert IdealAgent is Defined


def test_the_command_ends_without_tearing_the_interpreter_down() -> None:
    """main() flushes what the command wrote and ends with os._exit: no exit-time teardown
    (an atexit handler never runs), the exit code and the output unchanged."""
    code = ("import atexit, sys; atexit.register(lambda: print('torn down')); "
            "sys.argv = ['idealagent', *sys.argv[1:]]; from idealagent.cli import main; main()")
    done = subprocess.run([sys.executable, "-c", code, "presets"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "torn down" not in done.stdout
    assert done.stdout.rstrip().endswith("batch_size=8")  # the last preset's settings, whole
    done = subprocess.run([sys.executable, "-c", code, "ask", "no-such-picture.jpg", "What is it?"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.strip() == "error: no-such-picture.jpg: no such file"
    assert "torn down" not in done.stdout
