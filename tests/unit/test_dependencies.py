"""Packaging audit: every package a documented command needs is declared in ``pyproject.toml``.

A fresh machine gets only what ``pyproject.toml`` declares (``.ci/run`` proves it in a virtual
environment it makes itself); these tests name the gap directly instead of as a
``ModuleNotFoundError`` deep in a launcher. What they check:

* every third-party import of ``src/museg_lit`` comes from a main dependency (not a dev extra), or
  from the optional extra named in ``OPTIONAL_IMPORTS`` (``caption``: pycocoevalcap);
* every import of ``tests/`` and ``experiments/`` comes from a main or ``dev`` dependency;
* every Hydra launcher in ``conf/hydra/launcher`` (``hydra/launcher=submitit_local``, ``slurm``)
  resolves to an importable class, and every ``python -m X`` of the Makefile to a module.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import re
import sys
import tomllib
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from museg_lit.config import CONF_DIR

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
LOCAL = {"museg_lit", "tests", "videos", "conftest", "optional"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(requirements: list[str]) -> set[str]:
    """``["torch==2.14.1", "decord==0.6.0; platform_machine == 'x86_64'"]`` -> ``{"torch", "decord"}``."""
    return {_canonical(re.match(r"[A-Za-z0-9_.-]+", r).group(0)) for r in requirements}


MAIN = _names(PYPROJECT["project"]["dependencies"])
DEV = _names(PYPROJECT["project"]["optional-dependencies"]["dev"])
# optional features of the package: module -> the extra that declares it (imported lazily, behind a check)
OPTIONAL_IMPORTS = {"pycocoevalcap": "caption"}


def _third_party_imports(root: Path) -> dict[str, str]:
    """Top-level module -> first ``file:line`` importing it, for every non-stdlib, non-local import."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in LOCAL:
                    found.setdefault(top, f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def _undeclared(imports: dict[str, str], declared: set[str]) -> list[str]:
    providers = importlib.metadata.packages_distributions()
    missing = []
    for module, where in sorted(imports.items()):
        dists = {_canonical(d) for d in providers.get(module, [])}
        if not dists & declared:
            missing.append(f"{where}: imports {module!r} (from {sorted(dists) or 'an uninstalled package'}), "
                           "which pyproject.toml does not declare")
    return missing


def test_the_audit_reads_the_declared_names():
    # the parser itself: pins and environment markers are stripped, names canonicalised
    assert _names(["torch==2.14.1", "hydra_core>=1.3", "decord==0.6.0; platform_machine == 'x86_64'"]) == {
        "torch", "hydra-core", "decord"}
    assert {"torch", "transformers", "lightning", "hydra-submitit-launcher", "mlflow", "av"} <= MAIN


def test_package_imports_are_main_dependencies():
    imports = _third_party_imports(REPO / "src" / "museg_lit")
    for module, extra in OPTIONAL_IMPORTS.items():  # declared by their extra instead
        assert _canonical(module) in _names(PYPROJECT["project"]["optional-dependencies"][extra]), module
        imports.pop(module, None)
    assert _undeclared(imports, MAIN) == []


@pytest.mark.parametrize("folder", ["tests", "experiments"])
def test_test_and_experiment_imports_are_declared(folder):
    assert _undeclared(_third_party_imports(REPO / folder), MAIN | DEV) == []


@pytest.mark.parametrize("launcher", sorted(p.stem for p in (REPO / "conf" / "hydra" / "launcher").glob("*.yaml")))
def test_every_documented_launcher_is_installed(launcher):
    """``hydra/launcher=<name>`` composes (its defaults may name the plugin's schema) and the class
    its ``_target_`` names imports (hydra-submitit-launcher)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    target = cfg.hydra.launcher._target_
    module, _, cls = target.rpartition(".")
    assert hasattr(importlib.import_module(module), cls), f"hydra/launcher={launcher}: {target} not found"


def test_every_make_module_is_installed():
    modules = set(re.findall(r"\$\(PYTHON\) -m ([A-Za-z0-9_.]+)", (REPO / "Makefile").read_text()))
    assert {"pytest", "museg_lit.train", "museg_lit.eval", "mlflow", "pip"} <= modules
    assert [m for m in sorted(modules) if importlib.util.find_spec(m) is None] == []
