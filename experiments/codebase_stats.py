"""Issue 14's "done when" numbers, before and after: ``python experiments/codebase_stats.py [REV]``.

For the working tree and for git revision ``REV`` (default ``71cb962``, the commit before issue 14)
it prints the line counts of ``src/museg_lit/module.py``, ``src/museg_lit/evaluation/`` (all
``.py`` files, and ``runner.py`` alone) and the import cycles inside ``museg_lit`` (top-level and
function-level imports, :mod:`experiments.import_graph`). The revision's tree is read with
``git archive`` into a temporary folder; nothing in the checkout changes.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _import_graph_module():
    """``experiments/import_graph.py`` (experiments/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("import_graph", REPO / "experiments" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def stats(repo: Path) -> dict[str, object]:
    """Line counts and import cycles of the tree at ``repo`` (a folder holding ``src/museg_lit``)."""
    package = repo / "src" / "museg_lit"
    graphs = _import_graph_module()
    evaluation = sorted((package / "evaluation").rglob("*.py"))
    return {
        "module.py lines": _lines(package / "module.py"),
        "evaluation/ lines": sum(_lines(p) for p in evaluation),
        "evaluation/ files": len(evaluation),
        "evaluation/runner.py lines": _lines(package / "evaluation" / "runner.py"),
        "import cycles": graphs.find_cycles(graphs.import_graph(repo / "src")) or "none",
    }


def stats_at(rev: str) -> dict[str, object]:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], capture_output=True, check=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        return stats(Path(tmp))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", nargs="?", default="71cb962", help="the 'before' revision")
    args = parser.parse_args()
    before, after = stats_at(args.rev), stats(REPO)
    print(f"| | {args.rev} | working tree |\n| --- | --- | --- |")
    for key in after:
        print(f"| {key} | {before[key]} | {after[key]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
