"""A broker that is down at start, or goes away mid-stream, is waited for.

Uses a private broker (its own ports and data dir) so that stopping it does
not disturb the session broker the other tests share."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from etl_gate.gen import GenSpec

from ..conftest import KAFKA_SH, _free_port
from .helpers import GateEnv, expected_by_replay, wait_until
from .test_gate_kafka import _expected_ids, _ids

pytestmark = pytest.mark.integration


def test_gate_waits_for_a_broker_down_at_start_and_during_a_restart(tmp_path: Path) -> None:
    data_dir = tempfile.mkdtemp(prefix="etl-gate-outage-")
    port = _free_port()
    env_vars = {**os.environ, "KAFKA_DATA_DIR": data_dir, "KAFKA_PORT": str(port),
                "KAFKA_CONTROLLER_PORT": str(_free_port())}

    def broker(cmd: str) -> None:
        subprocess.run(["bash", str(KAFKA_SH), cmd], env=env_vars, check=True,
                       capture_output=True, timeout=300)

    env = GateEnv(f"127.0.0.1:{port}", tmp_path, workers=2, partitions=2)
    events = list(env.generate(GenSpec(count=12000, seed=11, id_prefix="o")).events())
    try:
        gate = env.start()  # no broker yet
        time.sleep(4)
        assert gate.poll() is None, env.logs()
        broker("start")
        env.create_topics()
        half = len(events) // 2
        env.produce(events[:half])
        wait_until(env.all_committed, 90, "the gate to catch up once the broker is up")
        # The broker goes away mid-stream, then comes back on the same data.
        broker("stop")
        time.sleep(5)
        assert gate.poll() is None, env.logs()
        broker("start")
        feeder = threading.Thread(target=env.produce, args=(events[half:],), daemon=True)
        feeder.start()
        feeder.join(90)
        wait_until(env.all_committed, 120, "the gate to finish after the broker restart")
        env.stop_all()
        assert gate.returncode == 0, env.logs()
        got = _ids(env.read())
        expected = _expected_ids(expected_by_replay(env, events, tmp_path))
        assert not expected - set(got), f"{len(expected - set(got))} events lost"
    finally:
        env.stop_all()
        subprocess.run(["bash", str(KAFKA_SH), "wipe"], env=env_vars, capture_output=True,
                       timeout=120)
