"""Skips for optional packages, tools and devices: the reason names what is missing and how to get it.

Only these helpers may skip a test; under CI any other skip fails (see ``conftest.py``).
"""

from __future__ import annotations

import importlib
import shutil
from types import ModuleType

import pytest

OPTIONAL = "optional:"  # prefix of every allowed skip reason
DEV_INSTALL = "pip install -e '.[dev]' (make install)"


def skip_optional(what: str, how: str) -> None:
    """Skip because an optional package, tool or device is absent; ``how`` says how to get it."""
    pytest.skip(f"{OPTIONAL} needs {what}; {how}")


def require_module(module: str, package: str, install: str = DEV_INSTALL) -> ModuleType:
    """Import ``module`` or skip the calling test module, naming ``package`` and its install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pytest.skip(f"{OPTIONAL} needs {package} ({exc}); install it with {install}", allow_module_level=True)


def require_ffmpeg_cli() -> str:
    """Path of the ``ffmpeg`` binary, or skip (only tests that compare against the real tool use it)."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        skip_optional("the ffmpeg CLI", "apt-get install ffmpeg (make install does it as root)")
    return exe


def require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        skip_optional("a CUDA device", "run on a GPU machine: make test-all there")


