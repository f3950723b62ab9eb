"""Test tiers: ``tests/unit`` needs nothing; ``tests/integration`` needs the real
Kafka broker, which this file starts once per session with scripts/kafka.sh on
free loopback ports and its own data dir, and wipes at the end.

``ETL_GATE_TEST_BOOTSTRAP=host:port`` uses an already running broker instead.
There is no skip: if the broker cannot start, every integration test errors.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from tests.checkout import ROOT

KAFKA_SH = ROOT / "scripts" / "kafka.sh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    given = os.environ.get("ETL_GATE_TEST_BOOTSTRAP")
    if given:
        yield given
        return
    data_dir = tempfile.mkdtemp(prefix="etl-gate-test-kafka-")
    env = {**os.environ, "KAFKA_DATA_DIR": data_dir, "KAFKA_PORT": str(_free_port()),
           "KAFKA_CONTROLLER_PORT": str(_free_port())}
    started = subprocess.run(["bash", str(KAFKA_SH), "start"], env=env, capture_output=True,
                             text=True, timeout=600)
    if started.returncode != 0:
        subprocess.run(["bash", str(KAFKA_SH), "wipe"], env=env, capture_output=True)
        pytest.fail(f"the test broker did not start:\n{started.stdout}\n{started.stderr}",
                    pytrace=False)
    try:
        yield f"127.0.0.1:{env['KAFKA_PORT']}"
    finally:
        subprocess.run(["bash", str(KAFKA_SH), "wipe"], env=env, capture_output=True,
                       timeout=120)
