"""A broker that is down at start, goes away mid-stream or freezes: nothing is
lost."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from etl_gate.gen import GenSpec
from etl_gate.kafka.loader import produce_events

from ..conftest import KAFKA_SH, _free_port
from .helpers import GateEnv, expected_by_replay, wait_until
from .test_gate_kafka import _expected_ids, _ids

pytestmark = pytest.mark.integration


class PrivateBroker:
    """A broker of the test's own (ports, data dir), so that stopping or
    freezing it does not disturb the session broker the other tests share."""

    def __init__(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="etl-gate-private-"))
        self.port = _free_port()
        self.env = {**os.environ, "KAFKA_DATA_DIR": str(self.data_dir),
                    "KAFKA_PORT": str(self.port), "KAFKA_CONTROLLER_PORT": str(_free_port())}

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __call__(self, cmd: str) -> None:
        subprocess.run(["bash", str(KAFKA_SH), cmd], env=self.env, check=True,
                       capture_output=True, timeout=300)

    def signal(self, sig: int) -> None:
        os.kill(int((self.data_dir / "kafka.pid").read_text().split()[0]), sig)


@pytest.fixture()
def broker() -> Iterator[PrivateBroker]:
    b = PrivateBroker()
    yield b
    with contextlib.suppress(ProcessLookupError, FileNotFoundError, ValueError):
        b.signal(signal.SIGCONT)  # a test that froze it and failed
    subprocess.run(["bash", str(KAFKA_SH), "wipe"], env=b.env, capture_output=True, timeout=120)


def test_gate_waits_for_a_broker_down_at_start_and_during_a_restart(
        tmp_path: Path, broker: PrivateBroker) -> None:
    env = GateEnv(broker.bootstrap, tmp_path, workers=2, partitions=2)
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


def test_outputs_that_time_out_are_produced_again_from_the_last_commit(
        tmp_path: Path, broker: PrivateBroker) -> None:
    """The broker freezes (SIGSTOP) mid-stream for longer than the producer's
    message timeout: outputs in flight fail with _MSG_TIMED_OUT, the worker
    rewinds to its last commit (kafka/ledger.py), and once the broker is back
    nothing is missing."""
    # linger.ms 500: outputs wait half a second in the producer before they
    # are sent, so whenever the broker freezes there are some in flight (with
    # the default 5 ms, at times there were none and nothing timed out).
    env = GateEnv(broker.bootstrap, tmp_path, workers=1, partitions=2, extra_toml="""
[kafka.producer]
"message.timeout.ms" = 2000
"request.timeout.ms" = 1000
"linger.ms" = 500
""")
    events = list(env.generate(GenSpec(count=30000, seed=12, id_prefix="f")).events())
    try:
        broker("start")
        env.create_topics()
        gate = env.start()
        # The feeder keeps the default (long) message timeout: only the gate's
        # outputs are meant to time out.
        cfg = env.cfg
        feeder_cfg = dataclasses.replace(cfg, kafka=dataclasses.replace(cfg.kafka, producer={}))
        feeder = threading.Thread(target=produce_events,
                                  args=(feeder_cfg, cfg.kafka.input_topic, events),
                                  kwargs={"rate": 6000}, daemon=True)
        feeder.start()
        wait_until(lambda: sum(max(0, o) for o in env.committed().values()) > 3000, 60,
                   "the gate to commit part of the stream")
        broker.signal(signal.SIGSTOP)
        time.sleep(6)  # > message.timeout.ms: what is in flight fails
        broker.signal(signal.SIGCONT)
        feeder.join(120)
        wait_until(env.all_committed, 180, "the gate to finish after the freeze")
        env.stop_all()
        assert gate.returncode == 0, env.logs()
        assert "rewound partitions" in env.logs(), env.logs()[-3000:]
        got = _ids(env.read())
        expected = _expected_ids(expected_by_replay(env, events, tmp_path))
        assert not expected - set(got), f"{len(expected - set(got))} events lost"
    finally:
        env.stop_all()
