"""This checkout, for tests that run its scripts in a subprocess."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def bench_module(name: str) -> ModuleType:
    """A module of bench/, whose scripts import each other by bare name (so
    bench/ is on sys.path only while it and its imports load)."""
    path = str(ROOT / "bench")
    sys.path.insert(0, path)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(path)


def env_checkout_first() -> dict[str, str]:
    """The environment with this checkout first on PYTHONPATH, so a script
    imports this checkout's etl_gate wherever (or whether) the package is
    installed: CI's python3 may have another checkout installed in edit mode."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
