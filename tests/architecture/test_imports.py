"""The import graph: no cycles anywhere (module level or inside functions), and imports by
string only where the package means them.

``lint-imports`` (``.importlinter``, run by ``.ci/run``) checks the layers between
subpackages; a layers contract cannot see a cycle inside one layer, so this test builds the
graph with grimp (every ``import`` statement, wherever it stands in a file) and looks for one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("imdlbenco_maskclip", "dataset_adapters")

STRING_IMPORTS = {
    "imdlbenco_maskclip/__init__.py": "PEP 562 lazy names: the command starts without torch or IMDLBenCo",
    "dataset_adapters/__init__.py": "PEP 562 lazy names: the command's help imports neither torch nor IMDLBenCo",
    "imdlbenco_maskclip/cli/benco.py": "the command table: each command's module loads when it is used",
    "imdlbenco_maskclip/host/registration.py": "the registration hook: MaskCLIP and OpenSDIDataset register when IMDLBenCo is imported",
}


def strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:
        nonlocal counter
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for nxt in successors:
                if nxt not in graph.modules:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.find_modules_directly_imported_by(nxt)))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph.find_modules_directly_imported_by(node):
                        found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles():
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    assert len(graph.modules) > 60  # the whole package was read
    assert strongly_connected(graph) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    (tmp_path / "loop").mkdir()
    (tmp_path / "loop" / "__init__.py").write_text("")
    (tmp_path / "loop" / "a.py").write_text("def f():\n    from loop import b\n")
    (tmp_path / "loop" / "b.py").write_text("from loop.a import f\n")
    (tmp_path / "loop" / "c.py").write_text("from loop import b\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert strongly_connected(grimp.build_graph("loop", cache_dir=None)) == [["loop.a", "loop.b"]]


def _string_imports(path: Path) -> list[int]:
    """Lines of ``path`` that import a module named by a string."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("import_module", "__import__", "find_spec"):
                lines.append(node.lineno)
    return lines


def test_imports_by_string_only_where_listed():
    used = {
        str(path.relative_to(ROOT)): lines
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if (lines := _string_imports(path))
    }
    assert set(used) == set(STRING_IMPORTS)
