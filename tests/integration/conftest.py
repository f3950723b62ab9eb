"""Integration-test hygiene: a gate a test started never outlives the test,
even when the test fails half-way (an orphaned gate would hold ports and CPU)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator

import pytest

from .helpers import STARTED


@pytest.fixture(autouse=True)
def _stop_started_gates() -> Iterator[None]:
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
