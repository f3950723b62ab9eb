"""Factories for integration tests on the real broker: a unique set of topics
per test, gate configs, gate processes, and readers of what landed."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition

from etl_gate.config import GateConfig, load_config
from etl_gate.control.client import ClientOptions, ControlClient
from etl_gate.gen import Generator, GenSpec
from etl_gate.kafka.loader import produce_events
from etl_gate.kafka.topics import create_topics
from tests.checkout import ROOT


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
_ID = re.compile(rb'"id":"([^"]+)"')
STARTED: list[subprocess.Popen[bytes]] = []  # every gate a test started (cleanup in conftest)


@dataclass
class Out:
    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None
    headers: dict[str, bytes]
    timestamp: int

    @property
    def id(self) -> str:
        m = _ID.search(self.value)
        assert m, self.value
        return m.group(1).decode()


def wait_until(pred: Callable[[], bool], timeout: float, what: str, every: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class GateEnv:
    """One test's gate: its own topics, group, config and rules files."""

    bootstrap: str
    dir: Path
    workers: int = 2
    partitions: int = 4
    extra_toml: str = ""
    rules_file: bool = True  # False: rules come only from control-plane pushes
    # kafka.engine: scripts/test.sh runs the gate's tests with both.
    engine: str = field(default_factory=lambda: os.environ.get("ETL_GATE_TEST_ENGINE", "native"))
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rules_path = self.dir / "rules.json"
        self.config_path = self.write_config("gate")
        self.control_ports: dict[str, int] = {}

    def write_config(self, name: str, control_port: int = 0) -> Path:
        """A config per daemon: its own state dir and control port."""
        path = self.dir / f"{name}.toml"
        control = (f'enabled = true\nlisten = "127.0.0.1:{control_port}"' if control_port
                   else "enabled = false")
        # No metrics endpoint unless the test configures one (ports collide).
        observe = "" if "[observe]" in self.extra_toml else '[observe]\nmetrics_listen = ""'

        path.write_text(f"""
workers = {self.workers}
{'rules_file = "rules.json"' if self.rules_file else ""}
rules_reload_s = 0.5
log_level = "INFO"
quarantine_sample_rate = 0.5
[kafka]
bootstrap_servers = "{self.bootstrap}"
group_id = "{self.prefix}-gate"
input_topic = "{self.prefix}.raw"
session_timeout_ms = 6000
batch_size = 500
commit_interval_ms = 200
engine = "{self.engine}"
[topics]
p0 = "{self.prefix}.p0"
p1 = "{self.prefix}.p1"
p2 = "{self.prefix}.p2"
dlq = "{self.prefix}.dlq"
quarantine = "{self.prefix}.quarantine"
partitions = {self.partitions}
{observe}
[control]
{control}
state_dir = "state-{name}"
{self.extra_toml}
""")
        return path

    @property
    def cfg(self) -> GateConfig:
        return load_config(self.config_path)

    @property
    def output_topics(self) -> list[str]:
        t = self.cfg.topics
        return [t.p0, t.p1, t.p2, t.dlq, t.quarantine]

    def create_topics(self) -> None:
        self.write_config("gate")  # extra_toml may have changed since
        create_topics(self.cfg)

    def write_rules(self, rules: dict[str, Any]) -> None:
        tmp = self.rules_path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(rules))
        os.replace(tmp, self.rules_path)

    def generate(self, spec: GenSpec) -> Generator:
        gen = Generator(spec)
        if not self.rules_path.exists():
            self.write_rules(gen.rules())
        return gen

    def produce(self, events: Iterable[tuple[bytes, bytes, int]], rate: float = 0.0) -> int:
        return produce_events(self.cfg, self.cfg.kafka.input_topic, events, rate=rate)

    def start(self, *args: str, name: str = "gate", control: bool = False,
              config: Path | None = None) -> subprocess.Popen[bytes]:
        """Start a daemon. Each name gets its own config (state dir); with
        ``control`` its gRPC control plane listens on ``control_ports[name]``."""
        if config is None:
            port = 0
            if control:
                port = self.control_ports.setdefault(name, _free_port())
            config = self.write_config(name, port)
        log = open(self.dir / f"{name}-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "etl_gate", "run", "--config",
                                 str(config), *args],
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs.append(proc)
        STARTED.append(proc)
        return proc

    def client(self, name: str = "gate", **options: object) -> ControlClient:
        return ControlClient(f"127.0.0.1:{self.control_ports[name]}", ClientOptions(**options))

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.dir.glob("*.log")))

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    # -- reading back ------------------------------------------------------

    def end_offsets(self, topic: str) -> dict[int, int]:
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "probe"})
        try:
            md = c.list_topics(topic, timeout=10)
            return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                    for p in md.topics[topic].partitions}
        finally:
            c.close()

    def committed(self, group: str | None = None, topic: str | None = None) -> dict[int, int]:
        """Committed offsets of a group (default: the gate's) on a topic (default: the input)."""
        cfg = self.cfg
        topic = topic or cfg.kafka.input_topic
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group or cfg.kafka.group_id})
        try:
            parts = [TopicPartition(topic, p) for p in range(self.partitions)]
            for attempt in range(20):
                try:
                    return {tp.partition: tp.offset for tp in c.committed(parts, timeout=10)}
                except KafkaException:
                    # A new group's coordinator may still be loading (NOT_COORDINATOR).
                    if attempt == 19:
                        raise
                    time.sleep(0.25)
            raise AssertionError("unreachable")
        finally:
            c.close()

    def all_committed(self) -> bool:
        ends = self.end_offsets(self.cfg.kafka.input_topic)
        committed = self.committed()
        return all(committed.get(p, -1) >= end for p, end in ends.items() if end > 0)

    def read(self, topics: Iterable[str] | None = None) -> list[Out]:
        """Every message now in the topics, in partition order."""
        out: list[Out] = []
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"reader-{uuid.uuid4()}",
                      "enable.auto.commit": False})
        try:
            for topic in topics or self.output_topics:
                for p, end in self.end_offsets(topic).items():
                    if end == 0:
                        continue
                    c.assign([TopicPartition(topic, p, 0)])
                    got = 0
                    deadline = time.monotonic() + 30
                    while got < end and time.monotonic() < deadline:
                        for m in c.consume(1000, 1.0):
                            if m.error():
                                continue
                            got = m.offset() + 1
                            out.append(Out(m.topic(), m.partition(), m.offset(), m.value(),
                                           m.key(), dict(m.headers() or []), m.timestamp()[1]))
                    assert got >= end, f"could not read {topic}[{p}] to {end}"
                    c.unassign()
        finally:
            c.close()
        return out


def expected_by_replay(env: GateEnv, events: list[tuple[bytes, bytes, int]],
                       tmp: Path) -> dict[str, list[bytes]]:
    """Run the file replay path on the same events: topic -> payloads in order."""
    src = tmp / "events.jsonl"
    src.write_bytes(b"".join(e[0] + b"\n" for e in events))
    out_dir = tmp / "replay"
    subprocess.run([sys.executable, "-m", "etl_gate", "replay", "--rules", str(env.rules_path),
                    "--input", str(src), "--output-dir", str(out_dir),
                    "--config", str(env.config_path)], check=True, capture_output=True)
    result: dict[str, list[bytes]] = {}
    for f in out_dir.glob("*.jsonl"):
        result[f.name[:-len(".jsonl")]] = f.read_bytes().splitlines()
    return result
