"""The dump stage on the real broker: partitions and fields, exactly once
across SIGKILL, and the TTL janitor per priority."""

from __future__ import annotations

import re
import signal
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etl_gate.gen import Generator, GenSpec

from .dump_helpers import (
    Routed,
    committed,
    dump_toml,
    fully_committed,
    produce_routed,
    read_dump,
    start_dump,
    stop_dump,
    temp_files,
    visible_files,
)
from .helpers import GateEnv, wait_until

pytestmark = pytest.mark.integration
HOUR = 3_600_000
DAY = 24 * HOUR
_PART = re.compile(r"^part-(.+)-(\d+)-(\d+)-(\d+)\.parquet$")


def now_ms() -> int:
    return int(time.time() * 1000)


def partition_dir(ms: int) -> tuple[str, str]:
    t = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return f"{t:%Y-%m-%d}", f"{t:%H}"


def routed(payload: bytes, key: bytes, kafka_ts: int, partition: int, prio: str,
           rate: str | None = None) -> Routed:
    headers = [("priority", prio.encode()), ("rules-version", b"5")]
    if rate is not None:
        headers.append(("sample-rate", rate.encode()))
    return Routed(payload, key, kafka_ts, partition, headers)


def ids(table: pa.Table) -> list[str]:
    return [orjson.loads(r)["id"] for r in table.column("raw").to_pylist()]


def check_file_names(root: Path, priority: str, topic: str) -> None:
    """Every visible file is named by its roll's offset range, and holds only
    that partition's offsets in it (the name pattern checked independently of
    etl_gate.dump.layout)."""
    for f in visible_files(root, priority):
        m = _PART.match(f.name)
        assert m and m[1] == topic, f.name
        part, first, last = int(m[2]), int(m[3]), int(m[4])
        t = pq.read_table(f, columns=["kafka_partition", "kafka_offset"])
        assert set(t.column("kafka_partition").to_pylist()) == {part}
        offs = t.column("kafka_offset").to_pylist()
        assert first <= min(offs) and max(offs) <= last, f.name


def test_events_across_hours_land_in_their_partitions_with_every_field(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    env = GateEnv(kafka_bootstrap, tmp_path, partitions=3)
    env.extra_toml = dump_toml(env, roll_mb=0.05, roll_seconds={"P0": 1.0, "P1": 1.0})
    env.create_topics()
    t0 = now_ms()
    n = 3000
    # Event times over the last 7 hours; Kafka timestamps within the last minute.
    gen = Generator(GenSpec(count=n, malformed_share=0.0, start_ms=t0 - 7 * HOUR,
                            step_ms=7 * HOUR // n, seed=5))
    sent: dict[str, dict[str, object]] = {}
    per_topic: dict[str, list[Routed]] = {"P0": [], "P1": []}
    for i, (payload, key, _t) in enumerate(gen.events()):
        ev = orjson.loads(payload)
        if i % 7 == 0:
            ev["time"] = ev["time"] // 1000  # seconds (SPEC 1): same hour
        if i % 11 == 0:
            del ev["time"]  # no event time: the Kafka timestamp decides
        payload = orjson.dumps(ev)
        prio = "P0" if i % 2 == 0 else "P1"
        kafka_ts = t0 - 60_000 + i * 20
        rate = "0.25" if i % 5 == 0 else None
        topic_events = per_topic[prio]
        r = routed(payload, key, kafka_ts, len(topic_events) % 3, prio, rate)
        topic_events.append(r)
        sent[ev["id"]] = {"ev": ev, "raw": payload, "prio": prio, "rate": rate, "r": r}
    topics = {"P0": env.cfg.topics.p0, "P1": env.cfg.topics.p1}
    where: dict[str, tuple[int, int]] = {}
    for prio, events in per_topic.items():
        for r, pos in zip(events, produce_routed(env, topics[prio], events), strict=True):
            where[orjson.loads(r.payload)["id"]] = pos

    proc = start_dump(env, "--priority", "P0", "P1")
    try:
        wait_until(lambda: fully_committed(env, f"{env.prefix}-dump", topics.values()), 90,
                   "the dump to commit everything")
        totals = stop_dump(proc)
    finally:
        env.stop_all()
    assert totals["events"] == totals["rows"] == n
    assert totals["time_fallbacks"] == len([i for i in range(n) if i % 11 == 0])
    assert totals["rolls"] > 12  # size rolls (0.05 MiB, ~3 per partition) and age rolls

    root = tmp_path / "dump"
    hours_seen = set()
    for prio in ("P0", "P1"):
        table = read_dump(root, prio)
        assert table.num_rows == len(per_topic[prio])
        assert sorted(ids(table)) == sorted(k for k, v in sent.items() if v["prio"] == prio)
        for row in table.to_pylist():
            s = sent[orjson.loads(row["raw"])["id"]]
            ev, r = s["ev"], s["r"]
            assert isinstance(ev, dict) and isinstance(r, Routed)
            t = ev.get("time")
            t_ms = None if t is None else (t * 1000 if t < 10**11 else t)
            part, off = where[ev["id"]]
            assert row == {
                "app": str(ev["app_id"]), "event": ev["event"], "user_id": ev["user_id"],
                "device_id": ev["device_id"],
                "event_time": None if t_ms is None else datetime.fromtimestamp(t_ms / 1000, UTC),
                "priority": prio, "rules_version": 5,
                "sample_rate": None if s["rate"] is None else 0.25,
                "kafka_topic": topics[prio], "kafka_partition": part, "kafka_offset": off,
                "kafka_timestamp": datetime.fromtimestamp(r.kafka_ts / 1000, UTC),
                "kafka_key": r.key, "raw": s["raw"].decode(),  # type: ignore[union-attr]
                "dt": partition_dir(t_ms if t_ms is not None else r.kafka_ts)[0],
                "hour": partition_dir(t_ms if t_ms is not None else r.kafka_ts)[1],
            }, ev["id"]
            hours_seen.add((row["dt"], row["hour"]))
        check_file_names(root, prio, topics[prio])
        assert temp_files(root, prio) == []
    assert len(hours_seen) >= 7


def _events(prefix: str, count: int, seed: int) -> list[tuple[bytes, bytes, int]]:
    return list(Generator(GenSpec(count=count, malformed_share=0.0, id_prefix=prefix, seed=seed,
                                  step_ms=500)).events())


def _routed_stream(events: list[tuple[bytes, bytes, int]], partitions: int) -> list[Routed]:
    t = now_ms()
    return [routed(p, k, t, i % partitions, "P0") for i, (p, k, _ts) in enumerate(events)]


def _assert_exactly_once(root: Path, topic: str, expected: list[str]) -> None:
    table = read_dump(root, "P0")
    counts = Counter(ids(table))
    dupes = [k for k, c in counts.items() if c > 1]
    missing = set(expected) - set(counts)
    assert not dupes and not missing, f"{len(dupes)} duplicated, {len(missing)} missing"
    assert table.num_rows == len(expected)
    pairs = list(zip(table.column("kafka_partition").to_pylist(),
                     table.column("kafka_offset").to_pylist(), strict=True))
    assert len(set(pairs)) == len(pairs)
    check_file_names(root, "P0", topic)


def test_sigkill_mid_file_then_restart_every_event_exactly_once(kafka_bootstrap: str,
                                                                 tmp_path: Path) -> None:
    env = GateEnv(kafka_bootstrap, tmp_path, partitions=4)
    # Small rolls (many commits) and row groups per batch (temporary files on
    # disk between rolls); the age roll lands each partition's tail.
    env.extra_toml = dump_toml(env, roll_mb=0.1, row_group_mb=0.01, roll_seconds={"P0": 3.0})
    env.create_topics()
    topic = env.cfg.topics.p0
    group = f"{env.prefix}-dump"
    root = tmp_path / "dump"
    first = _events("a", 10_000, 11)
    during = _events("b", 40_000, 12)  # produced while the dump runs and is killed
    produce_routed(env, topic, _routed_stream(first, 4))
    producer = threading.Thread(target=produce_routed,
                                args=(env, topic, _routed_stream(during, 4)),
                                kwargs={"rate": 8000.0})
    proc = start_dump(env, "--priority", "P0")
    try:
        producer.start()

        def in_flight() -> bool:
            done = sum(max(o, 0) for o in committed(env, group, topic).values())
            return done > len(first) and bool(temp_files(root, "P0"))

        wait_until(in_flight, 60, "commits and open temporary files", every=0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        at_kill = {"temps": len(temp_files(root, "P0")),
                   "committed": sum(committed(env, group, topic).values()),
                   "producing": producer.is_alive()}
        assert at_kill["temps"] > 0 and at_kill["producing"], at_kill
        producer.join(60)
        proc = start_dump(env, "--priority", "P0", name="dump-restarted")
        wait_until(lambda: fully_committed(env, group, [topic]), 90, "the restarted dump")
        totals = stop_dump(proc)
    finally:
        env.stop_all()
    assert totals["events"] >= len(first) + len(during) - at_kill["committed"]
    assert temp_files(root, "P0") == []
    _assert_exactly_once(root, topic, [orjson.loads(p)["id"] for p, _k, _t in first + during])


# A dump that kills itself right after it published a roll and before it
# commits: the narrowest window (files visible, offsets not committed).
CRASH_BEFORE_COMMIT = """
import os, signal, sys
from etl_gate.dump import consumer
commit, published = consumer.Dumper._commit, [0]
def crash_before_third_commit(self):
    if any(self.uncommitted.values()):
        published[0] += 1
        if published[0] == 3:
            os.kill(os.getpid(), signal.SIGKILL)
    return commit(self)
consumer.Dumper._commit = crash_before_third_commit
from etl_gate.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_crash_between_publish_and_commit_rewrites_the_same_files(kafka_bootstrap: str,
                                                                   tmp_path: Path) -> None:
    env = GateEnv(kafka_bootstrap, tmp_path, partitions=2)
    # Size rolls every ~700 events; the first three are published within a
    # second, long before the first age roll (which only lands the tails).
    env.extra_toml = dump_toml(env, roll_mb=0.25, roll_seconds={"P0": 5.0})
    env.create_topics()
    topic = env.cfg.topics.p0
    group = f"{env.prefix}-dump"
    root = tmp_path / "dump"
    events = _events("c", 20_000, 13)
    produce_routed(env, topic, _routed_stream(events, 2))
    proc = start_dump(env, "--priority", "P0", script=CRASH_BEFORE_COMMIT)
    try:
        assert proc.wait(60) == -signal.SIGKILL
        at_crash = {f.relative_to(root) for f in visible_files(root, "P0")}
        committed_at_crash = committed(env, group, topic)
        assert at_crash and sum(max(o, 0) for o in committed_at_crash.values()) < len(events)
        proc = start_dump(env, "--priority", "P0", name="dump-restarted")
        wait_until(lambda: fully_committed(env, group, [topic]), 90, "the restarted dump")
        totals = stop_dump(proc)
    finally:
        env.stop_all()
    assert totals["uncommitted_files_deleted"] > 0  # the journal named them
    after = {f.relative_to(root) for f in visible_files(root, "P0")}
    # Size rolls cut at the same offsets on replay: the same names come back.
    assert at_crash <= after
    _assert_exactly_once(root, topic, [orjson.loads(p)["id"] for p, _k, _t in events])


def test_janitor_deletes_exactly_the_expired_partitions_per_priority(kafka_bootstrap: str,
                                                                    tmp_path: Path) -> None:
    env = GateEnv(kafka_bootstrap, tmp_path, partitions=2)
    env.extra_toml = dump_toml(env, roll_seconds={"P0": 1.0, "P1": 1.0, "P2": 1.0})
    env.create_topics()
    ttl = {"P0": 400, "P1": 180, "P2": 90}
    ages_days = [0, 30, 89, 95, 179, 185, 399, 410]
    t0 = now_ms()
    topics = dict(zip(("P0", "P1", "P2"), env.cfg.topics.priority_topics, strict=True))
    for prio, topic in topics.items():
        batch = []
        for age in ages_days:
            for j in range(5):
                ev = {"id": f"{prio}-{age}-{j}", "app_id": "1", "event": "e",
                      "time": t0 - age * DAY - 2 * HOUR - j * 1000}
                batch.append(routed(orjson.dumps(ev), b"k", t0, j % 2, prio))
        produce_routed(env, topic, batch)
    # One dump process per priority, as deployed.
    procs = [start_dump(env, "--priority", p, name=f"dump-{p}") for p in topics]
    try:
        wait_until(lambda: fully_committed(env, f"{env.prefix}-dump", topics.values()), 90,
                   "three dumps to commit")
        for p in procs:
            stop_dump(p)
    finally:
        env.stop_all()
    root = tmp_path / "dump"

    def hours(prio: str) -> set[tuple[str, str]]:
        return {(f.parent.parent.name[3:], f.parent.name[5:]) for f in visible_files(root, prio)}

    expected_gone = {p: {partition_dir(t0 - a * DAY - 2 * HOUR) for a in ages_days if a > ttl[p]}
                     for p in topics}
    before = {p: hours(p) for p in topics}
    assert all(len(before[p]) == len(ages_days) for p in topics), before

    def janitor(*extra: str) -> dict[str, dict[str, object]]:
        proc = start_dump(env, "--janitor-once", *extra, name="janitor")
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        return {r["priority"]: r for r in orjson.loads(out)}

    dry = janitor("--dry-run")
    for p in topics:
        assert {tuple(x[3:].split("/hour=")) for x in dry[p]["would_delete"]} == expected_gone[p]
        assert hours(p) == before[p]  # dry run deletes nothing
    done = janitor()
    for p in topics:
        assert {tuple(x[3:].split("/hour=")) for x in done[p]["deleted"]} == expected_gone[p], p
        assert hours(p) == before[p] - expected_gone[p], p
        kept = read_dump(root, p)
        assert sorted(ids(kept)) == sorted(f"{p}-{a}-{j}" for a in ages_days if a <= ttl[p]
                                           for j in range(5))
    assert janitor()["P2"]["deleted"] == []  # nothing left to do


@pytest.mark.parametrize("strategy", ["range,roundrobin", "cooperative-sticky"])
def test_rebalances_between_dump_processes_keep_every_event_once(kafka_bootstrap: str,
                                                                 tmp_path: Path,
                                                                 strategy: str) -> None:
    """A second dump joins while the first writes, the first leaves, a third
    joins: revoked partitions are finished and committed before they move."""
    env = GateEnv(kafka_bootstrap, tmp_path, partitions=6)
    env.extra_toml = dump_toml(env, roll_mb=0.1, roll_seconds={"P0": 1.0})
    env.create_topics()
    # GateEnv writes [kafka] itself: add the strategy there, and keep the file.
    cfg_path = env.config_path
    cfg_path.write_text(cfg_path.read_text().replace(
        "commit_interval_ms = 200",
        f'commit_interval_ms = 200\nconsumer = {{"partition.assignment.strategy" = "{strategy}"}}'))
    topic = env.cfg.topics.p0
    assert env.cfg.kafka.consumer == {"partition.assignment.strategy": strategy}
    chunks = [_events(p, 15_000, s) for p, s in (("r", 21), ("s", 22), ("t", 23))]
    a = start_dump(env, "--priority", "P0", name="dump-a", rewrite_config=False)
    try:
        produce_routed(env, topic, _routed_stream(chunks[0], 6), rate=10_000)
        b = start_dump(env, "--priority", "P0", name="dump-b", rewrite_config=False)
        produce_routed(env, topic, _routed_stream(chunks[1], 6), rate=10_000)
        stop_dump(a)
        c = start_dump(env, "--priority", "P0", name="dump-c", rewrite_config=False)
        produce_routed(env, topic, _routed_stream(chunks[2], 6), rate=10_000)
        wait_until(lambda: fully_committed(env, f"{env.prefix}-dump", [topic]), 90,
                   "the dumps to commit everything")
        for proc in (b, c):
            stop_dump(proc)
    finally:
        env.stop_all()
    logs = env.logs()
    assert logs.count("dump revoked") >= 3, logs
    _assert_exactly_once(tmp_path / "dump", topic,
                         [orjson.loads(p)["id"] for chunk in chunks for p, _k, _t in chunk])
