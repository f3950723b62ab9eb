"""This checkout, for tests that run its scripts in a subprocess."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def env_checkout_first() -> dict[str, str]:
    """The environment with this checkout first on PYTHONPATH, so a script
    imports this checkout's etl_gate wherever (or whether) the package is
    installed: CI's python3 may have another checkout installed in edit mode."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
