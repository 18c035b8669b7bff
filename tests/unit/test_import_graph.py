"""No import cycle inside ``museg_lit`` (top-level and function-level imports alike), found by
``experiments/import_graph.py``, whose graph builder and cycle finder are checked on small cases."""

from __future__ import annotations

import importlib.util

from tests.conftest import REPO_ROOT


def _import_graph():
    spec = importlib.util.spec_from_file_location(
        "import_graph", REPO_ROOT / "experiments" / "import_graph.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cycle_finder_on_a_synthetic_graph():
    ig = _import_graph()
    # a -> b -> c -> a is one cycle; d -> e -> d another; f only points into a cycle
    graph = {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["e"], "e": ["d"], "f": ["a", "d"]}
    assert ig.find_cycles(graph) == [["a", "b", "c"], ["d", "e"]]
    assert ig.find_cycles({"a": ["b"], "b": ["c"], "c": []}) == []
    assert ig.find_cycles({"a": ["a"]}) == []  # a self-import is not a cycle between modules


def test_graph_sees_lazy_and_relative_imports(tmp_path):
    ig = _import_graph()
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub import b\n")
    (pkg / "a.py").write_text("def f():\n    from pkg.sub.b import g  # lazy\n    return g\n")
    (pkg / "sub" / "b.py").write_text("from .. import a\nimport os\n")
    graph = ig.import_graph(tmp_path, "pkg")
    assert graph == {"pkg": set(), "pkg.a": {"pkg.sub.b"}, "pkg.sub": {"pkg.sub.b"}, "pkg.sub.b": {"pkg.a"}}
    assert ig.find_cycles(graph) == [["pkg.a", "pkg.sub.b"]]


def test_museg_lit_has_no_import_cycle():
    ig = _import_graph()
    graph = ig.import_graph()
    assert (
        "museg_lit.evaluation.runner" in graph
        and "museg_lit.evaluation.etbench" in graph["museg_lit.evaluation.runner"]
    )
    assert ig.find_cycles(graph) == []
