"""No import cycles inside the package: each cycle is a responsibility in the wrong module.

Every module of ``idealagent`` is parsed (not imported); an edge is any ``import idealagent...``
or ``from idealagent... import`` at module level or inside a function, relative imports
resolved, except those under ``if TYPE_CHECKING:`` (never run). A strongly connected component
of more than one module is a cycle.
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import idealagent

PACKAGE = "idealagent"


def modules() -> dict[str, Path]:
    """Every module of the package and its source file."""
    found = {PACKAGE: Path(idealagent.__file__)}
    for info in pkgutil.walk_packages(idealagent.__path__, prefix=f"{PACKAGE}."):
        spec = importlib.util.find_spec(info.name)
        assert spec is not None and spec.origin is not None, info.name
        found[info.name] = Path(spec.origin)
    return found


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that ``name`` (at ``path``) imports when it runs."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node.test):
            for child in node.orelse:  # the body runs only for type checkers
                visit(child)
            return
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            # `from pkg import module` needs the module; `from pkg import name`, the package.
            targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    # `import idealagent.a.b` runs idealagent.a too, but a package importing its own children is
    # how packages work, not a cycle: the edge goes to the module named.
    return {target for target in targets if target in known and target != name}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported(name, path, set(found)) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def test_the_package_has_no_import_cycles() -> None:
    edges = graph()
    found = cycles(edges)
    described = ["; ".join(f"{m} -> {', '.join(sorted(edges[m] & set(c)))}" for m in c) for c in found]
    assert not found, "import cycles:\n" + "\n".join(described)


def test_the_core_does_not_import_the_evaluation_package() -> None:
    """Evaluation depends on the core, never the reverse: only the evaluation package itself and
    the CLI may import it (at module level, in a function, or for type checkers alike)."""
    found = modules()
    evaluation = f"{PACKAGE}.evaluation"
    allowed = (evaluation, f"{PACKAGE}.cli")

    def inside(name: str, package: str) -> bool:
        return name == package or name.startswith(package + ".")

    offenders = {}
    for name, path in found.items():
        if any(inside(name, package) for package in allowed):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        named = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
                base = ".".join(part for part in (anchor, node.module or "") if part)
                named |= {f"{base}.{alias.name}" for alias in node.names}
        bad = sorted(target for target in named if inside(target, evaluation))
        if bad:
            offenders[name] = bad
    assert not offenders, f"the core imports the evaluation package: {offenders}"


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    """The check itself works: a cycle closed only by an import inside a function is found,
    one closed only under TYPE_CHECKING is not."""
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text("from pkg import b\n")
    b.write_text("def f():\n    from . import a\n")
    c.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n")
    known = {"pkg.a", "pkg.b", "pkg.c"}
    edges = {f"pkg.{p.stem}": imported(f"pkg.{p.stem}", p, known) for p in (a, b, c)}
    assert edges == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": set()}
    assert cycles(edges) == [["pkg.a", "pkg.b"]]


def test_the_endpoint_answerer_imports_without_langchain_openai() -> None:
    """The answerer needs the openai client only; the chat model's langchain-openai is apart."""
    code = ("import sys; sys.modules['langchain_openai'] = None\n"
            "import idealagent.answerers.openai, idealagent.endpoints\n"
            "print('langchain_openai' in sys.modules and sys.modules['langchain_openai'] is not None)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
