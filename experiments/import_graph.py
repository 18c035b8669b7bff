"""The import graph of ``src/museg_lit`` and its cycles: ``python experiments/import_graph.py``.

Every ``import`` / ``from ... import`` of every module counts, at the top level *and* inside
functions (a lazy import is still a dependency: it only hides the cycle until the call), and
``if TYPE_CHECKING:`` blocks too. Each is resolved to the ``museg_lit`` module it loads:
``from museg_lit.data import annotations`` -> ``museg_lit.data.annotations`` (a submodule),
``from museg_lit.data.annotations import AnnotationError`` -> ``museg_lit.data.annotations``,
relative imports against the importing package. Importing a submodule also runs its parent
packages' ``__init__``; those edges are left out (an ``__init__`` that imports its own submodules
would otherwise make every package a cycle), so the graph is what modules *ask* for.

Prints ``module -> imported modules`` per module, then the strongly connected components with more
than one module (Tarjan), one per line; exits 1 if there is any.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "museg_lit"

__all__ = ["find_cycles", "import_graph", "main", "module_names"]


def module_names(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """``{dotted module name: file}`` of every ``.py`` under ``root/package`` (packages as their ``__init__``)."""
    names = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _imported(tree: ast.AST, module: str, is_package: bool, known: Iterable[str]) -> set[str]:
    """The known modules that the imports anywhere in ``tree`` load."""
    known = set(known)
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()

    def longest_known(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                head = ".".join(base + ([node.module] if node.module else []))
            else:
                head = node.module or ""
            # `from pkg import name`: `name` is a submodule or an attribute of `pkg`
            targets = [
                f"{head}.{alias.name}" if f"{head}.{alias.name}" in known else head for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if (hit := longest_known(target)) is not None and hit != module:
                found.add(hit)
    return found


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    """``{module: {museg_lit modules it imports}}``, top-level and function-level imports alike,
    without the implicit edges to the importing module's own parent packages."""
    names = module_names(root, package)
    graph = {}
    for name, path in names.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        deps = _imported(tree, name, path.name == "__init__.py", names)
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    return graph


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (sorted), by Tarjan's algorithm.

    >>> find_cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]})
    [['a', 'b', 'c']]
    >>> find_cycles({"a": ["b"], "b": []})
    []
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    nodes = set(graph) | {d for deps in graph.values() for d in deps}

    def visit(v: str) -> None:  # recursion depth <= number of modules (~100)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return sorted(components)


def main() -> int:
    graph = import_graph()
    for module in sorted(graph):
        print(f"{module} -> {', '.join(sorted(graph[module])) or '(none)'}")
    cycles = find_cycles(graph)
    print(f"\ncycles: {len(cycles) or 'none'}")
    for component in cycles:
        print("  " + " <-> ".join(component))
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
