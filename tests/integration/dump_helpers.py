"""Factories for the dump stage's integration tests: events produced straight
to a priority topic as the gate routes them, dump processes, their commits,
and the dump read back with pyarrow.dataset."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
from confluent_kafka import Producer

from .helpers import ROOT, STARTED, GateEnv

HIVE = ds.partitioning(pa.schema([("dt", pa.string()), ("hour", pa.string())]), flavor="hive")


def dump_toml(env: GateEnv, **dump: object) -> str:
    """A [dump] section for ``env``: its own root and group."""
    settings = {"root": "dump", "group_id": f"{env.prefix}-dump", "janitor_interval_s": 0, **dump}
    return "[dump]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in settings.items())


def _toml(v: object) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + "}"
    if isinstance(v, bool):
        return "true" if v else "false"
    return orjson.dumps(v).decode()


@dataclass
class Routed:
    """One event as the gate would route it."""

    payload: bytes
    key: bytes
    kafka_ts: int
    partition: int
    headers: list[tuple[str, bytes]]


def produce_routed(env: GateEnv, topic: str, events: Iterable[Routed],
                   rate: float = 0.0) -> list[tuple[int, int]]:
    """Produce in order, ``rate`` events/s (0: flat out); returns (partition,
    offset) of each event."""
    producer = Producer({"bootstrap.servers": env.bootstrap, "enable.idempotence": True,
                         "linger.ms": 5})
    where: list[tuple[int, int]] = []
    errors: list[str] = []

    def delivered(err: object, msg: object, i: int) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            where[i] = (msg.partition(), msg.offset())  # type: ignore[attr-defined]

    started = time.monotonic()
    for i, e in enumerate(events):
        where.append((-1, -1))
        if rate and i % 100 == 0:
            ahead = i / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        while True:
            try:
                producer.produce(topic, e.payload, e.key, partition=e.partition,
                                 timestamp=e.kafka_ts, headers=e.headers,
                                 on_delivery=lambda err, msg, i=i: delivered(err, msg, i))
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0 and not errors, errors[:3]
    return where


def start_dump(env: GateEnv, *args: str, name: str = "dump", script: str | None = None,
               rewrite_config: bool = True) -> subprocess.Popen[bytes]:
    """``etl-gate dump --config <env> ARGS``; with ``script``, that Python code
    runs instead of ``-m etl_gate`` (it gets the same argv). The config is
    written afresh from ``env`` unless ``rewrite_config`` is False."""
    if rewrite_config:
        env.write_config("gate")
    log = open(env.dir / f"{name}-{len(env.procs)}.log", "wb")  # noqa: SIM115
    head = ["-c", script] if script is not None else ["-m", "etl_gate"]
    proc = subprocess.Popen([sys.executable, *head, "dump", "--config", str(env.config_path),
                             *args], stdout=subprocess.PIPE, stderr=log, cwd=ROOT)
    env.procs.append(proc)
    STARTED.append(proc)
    return proc


def stop_dump(proc: subprocess.Popen[bytes], timeout: float = 60) -> dict[str, int]:
    """SIGTERM, wait, and the totals it printed."""
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"dump exited {proc.returncode}"
    return dict(orjson.loads(out))


def committed(env: GateEnv, group: str, topic: str) -> dict[int, int]:
    return env.committed(group, topic)


def fully_committed(env: GateEnv, group: str, topics: Iterable[str]) -> bool:
    for topic in topics:
        done = committed(env, group, topic)
        if any(done.get(p, -1) < end for p, end in env.end_offsets(topic).items() if end > 0):
            return False
    return True


def read_dump(root: Path, priority: str) -> pa.Table:
    """A priority's dump as a reader sees it (hive partitions dt/hour as strings)."""
    return ds.dataset(root / priority, format="parquet", partitioning=HIVE).to_table()


def visible_files(root: Path, priority: str) -> list[Path]:
    return sorted((root / priority).glob("dt=*/hour=*/*.parquet"))


def temp_files(root: Path, priority: str) -> list[Path]:
    return sorted(p for p in (root / priority / "_tmp").rglob("*") if p.is_file())
