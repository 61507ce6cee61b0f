"""Imports flow one way: no cycle among ferkit's modules, counting imports inside functions too.

Why a test: the registries used to import their architecture / backend modules back (and train's loop, report and
export_run imported each other), which works only as long as nobody reorders an import. Registries now follow timm:
each module registers itself and the package ``__init__`` imports them.
"""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.conftest import REPO

SRC = REPO / "src"


def import_graph() -> dict[str, set[str]]:
    """module -> the ferkit modules it imports (``from ferkit.x import y`` counts as ferkit.x.y when y is one)."""
    files = {}
    for path in (SRC / "ferkit").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ferkit":
                deps.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                            for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.split(".")[0] == "ferkit")
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return cycles


def test_no_import_cycles():
    graph = import_graph()
    assert "ferkit.models.registry" in graph and "ferkit.train.loop" in graph
    assert find_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_registries_are_filled_by_their_package_and_the_runtime_needs_no_torch():
    code = ("import sys; import ferkit.runtime; assert 'torch' not in sys.modules, 'runtime imported torch'; "
            "from ferkit.faces import detector_names; from ferkit.models import available; "
            "print(len(available()), detector_names())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(SRC), "PATH": ""}).stdout
    count, names = out.split(" ", 1)
    assert int(count) >= 29 and "dlib" in names and "haar" in names and "mediapipe_short" in names


def test_library_code_logs_instead_of_tqdm_write():
    offenders = [str(p.relative_to(REPO)) for p in (SRC / "ferkit").rglob("*.py")
                 if p.name != "cli.py" and "tqdm.write" in p.read_text()]
    assert offenders == []
