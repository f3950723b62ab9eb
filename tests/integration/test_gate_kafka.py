"""The gate end to end on the real broker (started by tests/conftest.py)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from etl_gate.core import MALFORMED_REASONS, parse_snapshot
from etl_gate.gen import Generator, GenSpec

from .helpers import GateEnv, Out, expected_by_replay, wait_until

pytestmark = pytest.mark.integration


def _worker_pids(gate_pid: int) -> list[int]:
    """The gate's worker processes (spawned children running a worker)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == gate_pid and b"spawn_main" in cmd:
            pids.append(int(d.name))
    return pids


def _ids(outs: list[Out]) -> Counter[str]:
    return Counter(o.id for o in outs)


def _expected_ids(expected: dict[str, list[bytes]]) -> set[str]:
    return {Out("", 0, 0, v, None, {}, 0).id for vals in expected.values() for v in vals}


@pytest.fixture(scope="module")
def routed(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory):
    """One gate run over a generated mix; several tests read its outputs."""
    tmp = tmp_path_factory.mktemp("routed")
    env = GateEnv(kafka_bootstrap, tmp, workers=2, partitions=4)
    env.create_topics()
    gen = env.generate(GenSpec(count=6000, monitor_apps=1, malformed_share=0.02, seed=3))
    events = list(gen.events())
    env.produce(events)
    env.start()
    try:
        wait_until(env.all_committed, 90, "the gate to commit every input offset")
    finally:
        env.stop_all()
    assert env.procs[0].returncode == 0, env.logs()
    assert f"engine {env.engine})" in env.logs()  # the engine asked for is the one that ran
    outs = env.read()
    raw = env.read([env.cfg.kafka.input_topic])
    return env, events, outs, raw, expected_by_replay(env, events, tmp)


def test_kafka_outputs_equal_replay_outputs(routed) -> None:
    env, events, outs, _raw, expected = routed
    by_topic: dict[str, list[bytes]] = defaultdict(list)
    for o in outs:
        by_topic[o.topic].append(o.value)
    assert set(by_topic) == set(expected)
    for topic, values in expected.items():
        # A clean run (no crash) produces each output exactly once.
        assert Counter(by_topic[topic]) == Counter(values), topic
    assert len(expected[env.cfg.topics.dlq]) > 0
    assert len(expected[env.cfg.topics.quarantine]) > 0


def test_routed_events_carry_priority_headers_key_and_timestamp(routed) -> None:
    env, events, outs, _raw, _expected = routed
    rules = parse_snapshot(orjson.loads(env.rules_path.read_bytes()))
    by_id = {Out("", 0, 0, v, None, {}, 0).id: (k, ts) for v, k, ts in events}
    topics = env.cfg.topics.priority_topics
    seen_sampled = 0
    for o in outs:
        if o.topic not in topics:
            continue
        prio = f"P{topics.index(o.topic)}"
        assert o.headers["priority"] == prio.encode()
        assert o.headers["rules-version"] == str(rules.version).encode()
        ev = orjson.loads(o.value)
        rule = rules.rules.get((str(ev["app_id"]), ev["event"]))
        if rule is None:  # monitor-mode app: its default priority, no sample rate
            assert rules.apps[str(ev["app_id"])].monitor and prio == "P2"
            assert "sample-rate" not in o.headers
        elif rule.sample_rate < 1:
            assert o.headers["sample-rate"] == repr(rule.sample_rate).encode()
            seen_sampled += 1
        else:
            assert "sample-rate" not in o.headers
        key, ts = by_id[o.id]
        assert o.key == key and o.timestamp == ts
    assert seen_sampled > 0


def test_order_per_input_partition_is_kept(routed) -> None:
    env, _events, outs, raw, _expected = routed
    input_pos = {o.id: (o.partition, o.offset) for o in raw}
    streams: dict[tuple[str, int], list[tuple[int, int]]] = defaultdict(list)
    for o in outs:
        streams[(o.topic, o.partition)].append(input_pos[o.id])
    for (topic, part), positions in streams.items():
        by_input: dict[int, list[int]] = defaultdict(list)
        for in_part, in_off in positions:
            by_input[in_part].append(in_off)
        for in_part, offs in by_input.items():
            assert offs == sorted(offs), f"{topic}[{part}] reorders input partition {in_part}"


def test_dead_letters_say_why_and_where_from(routed) -> None:
    env, _events, outs, raw, _expected = routed
    by_pos = {(o.partition, o.offset): o.value for o in raw}
    dlq = [o for o in outs if o.topic == env.cfg.topics.dlq]
    assert dlq
    reasons = Counter()
    for o in dlq:
        reasons[o.headers["error"].decode()] += 1
        assert o.headers["error"].decode() in MALFORMED_REASONS
        assert o.headers["source-topic"] == env.cfg.kafka.input_topic.encode()
        pos = (int(o.headers["source-partition"]), int(o.headers["source-offset"]))
        assert by_pos[pos] == o.value
    assert {"invalid_json", "not_object", "missing_app", "bad_app"} <= set(reasons)
    quarantined = [o for o in outs if o.topic == env.cfg.topics.quarantine]
    assert quarantined and all(o.headers["error"] == b"unregistered" for o in quarantined)


def _produce_in_background(env: GateEnv, events: list, rate: float) -> threading.Thread:
    t = threading.Thread(target=env.produce, args=(events, rate), daemon=True)
    t.start()
    return t


def test_sigkill_of_a_worker_mid_stream_loses_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = GateEnv(kafka_bootstrap, tmp_path, workers=2, partitions=4)
    env.create_topics()
    events = list(env.generate(GenSpec(count=20000, seed=5, id_prefix="k")).events())
    gate = env.start()
    try:
        feeder = _produce_in_background(env, events, rate=8000)
        wait_until(lambda: len(_worker_pids(gate.pid)) == 2, 30, "two workers")
        time.sleep(1.5)  # mid-stream
        victim = _worker_pids(gate.pid)[0]
        os.kill(victim, signal.SIGKILL)
        feeder.join(60)
        wait_until(env.all_committed, 120, "every input offset committed after the kill")
        assert victim not in _worker_pids(gate.pid) and len(_worker_pids(gate.pid)) == 2
    finally:
        env.stop_all()
    assert "restarting" in env.logs()
    got = _ids(env.read())
    missing = _expected_ids(expected_by_replay(env, events, tmp_path)) - set(got)
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:5]}"


def test_sigterm_mid_stream_drains_and_restart_loses_nothing(kafka_bootstrap: str,
                                                             tmp_path: Path) -> None:
    env = GateEnv(kafka_bootstrap, tmp_path, workers=2, partitions=4)
    env.create_topics()
    events = list(env.generate(GenSpec(count=20000, seed=6, id_prefix="t")).events())
    gate = env.start()
    feeder = _produce_in_background(env, events, rate=8000)
    try:
        wait_until(lambda: sum(env.committed().values()) > 2000, 60, "the gate to be mid-stream")
        gate.send_signal(signal.SIGTERM)
        assert gate.wait(60) == 0, env.logs()
        feeder.join(60)
        env.start()  # the same group picks up where the drained gate committed
        wait_until(env.all_committed, 120, "the restarted gate to finish")
    finally:
        env.stop_all()
    got = _ids(env.read())
    expected = _expected_ids(expected_by_replay(env, events, tmp_path))
    assert not expected - set(got), f"{len(expected - set(got))} events lost"
    # A clean drain commits exactly what it delivered: nothing is delivered twice.
    dups = [i for i, n in got.items() if n > 1]
    assert not dups, f"{len(dups)} duplicates after a clean SIGTERM, e.g. {dups[:5]}"


def test_two_daemons_in_one_group_split_partitions(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = GateEnv(kafka_bootstrap, tmp_path, workers=1, partitions=4)
    env.create_topics()
    events = list(env.generate(GenSpec(count=12000, seed=7, id_prefix="d")).events())
    a = env.start(name="a")
    b = env.start(name="b")
    try:
        # Both in the group with a share each before the stream starts.
        def has_partitions(log: str) -> bool:
            lines = [line for line in log.splitlines() if "assigned [" in line]
            return bool(lines) and not lines[-1].endswith("assigned []")

        def both_assigned() -> bool:
            logs = [p.read_text() for p in sorted(tmp_path.glob("[ab]-*.log"))]
            return len(logs) == 2 and all(map(has_partitions, logs))

        wait_until(both_assigned, 60, "both daemons to be assigned partitions")
        time.sleep(1)
        feeder = _produce_in_background(env, events, rate=6000)
        feeder.join(60)
        wait_until(env.all_committed, 120, "two gates to finish")
    finally:
        env.stop_all()
    assert a.returncode == 0 and b.returncode == 0
    logs = [p.read_text() for p in sorted(tmp_path.glob("[ab]-*.log"))]
    for log in logs:
        # Each daemon consumed a share: its final totals say so.
        totals = orjson.loads(log[log.rindex("{\n"):])
        assert totals["events_in"] > 0, log
    got = _ids(env.read())
    expected = _expected_ids(expected_by_replay(env, events, tmp_path))
    assert not expected - set(got)


def test_rate_caps_agree_with_replay_on_one_partition(kafka_bootstrap: str,
                                                      tmp_path: Path) -> None:
    env = GateEnv(kafka_bootstrap, tmp_path, workers=1, partitions=1)
    env.create_topics()
    # 1000 events per second of event time; each app's hottest event is capped.
    events = list(env.generate(GenSpec(count=5000, seed=8, max_rate=20.0,
                                       id_prefix="r")).events())
    env.produce(events)
    env.start()
    try:
        wait_until(env.all_committed, 90, "the gate to finish")
    finally:
        env.stop_all()
    log = env.logs()
    totals = orjson.loads(log[log.rindex("{\n"):])
    assert totals["throttled"] > 0
    expected = expected_by_replay(env, events, tmp_path)
    by_topic: dict[str, list[bytes]] = defaultdict(list)
    for o in env.read():
        by_topic[o.topic].append(o.value)
    for topic, values in expected.items():
        assert by_topic[topic] == values, topic  # one partition: same order too


def test_an_output_the_broker_refuses_for_good_goes_to_the_dlq(kafka_bootstrap: str,
                                                               tmp_path: Path) -> None:
    """P0 outputs too large for their topic (a permanent delivery error) are
    kept in the DLQ with the reason; everything else routes as usual."""
    env = GateEnv(kafka_bootstrap, tmp_path, workers=1, partitions=2)
    env.create_topics()
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    entry = ConfigEntry("max.message.bytes", "200",
                        incremental_operation=AlterConfigOpType.SET)
    res = ConfigResource(ConfigResource.Type.TOPIC, env.cfg.topics.p0,
                         incremental_configs=[entry])
    for f in admin.incremental_alter_configs([res]).values():
        f.result(30)
    events = list(env.generate(GenSpec(count=3000, seed=13, id_prefix="t")).events())
    env.produce(events)
    gate = env.start()
    try:
        wait_until(env.all_committed, 120, "every input offset committed")
    finally:
        env.stop_all()
    assert gate.returncode == 0, env.logs()
    expected = expected_by_replay(env, events, tmp_path)
    p0 = expected[env.cfg.topics.p0]
    assert p0, "the data has P0 events"
    assert not env.read([env.cfg.topics.p0])
    dlq = [o for o in env.read([env.cfg.topics.dlq])
           if o.headers.get("error") == b"produce_failed"]
    assert Counter(o.value for o in dlq) == Counter(p0)
    h = dlq[0].headers
    assert h["target-topic"] == env.cfg.topics.p0.encode()
    assert h["priority"] == b"P0" and b"MSG_SIZE_TOO_LARGE" in h["error-detail"]
    for topic in (env.cfg.topics.p1, env.cfg.topics.p2):
        assert Counter(o.value for o in env.read([topic])) == Counter(expected[topic])


def test_a_drained_input_is_committed_without_waiting_for_the_interval(kafka_bootstrap: str,
                                                                        tmp_path: Path) -> None:
    env = GateEnv(kafka_bootstrap, tmp_path, workers=1, partitions=2)
    env.create_topics()
    events = list(env.generate(GenSpec(count=3000, seed=11, id_prefix="d")).events())
    config = env.write_config("dry")
    # A commit interval of ten minutes: only the dry-input commit can commit in time.
    config.write_text(config.read_text().replace("commit_interval_ms = 200",
                                                 "commit_interval_ms = 600000"))
    env.start(config=config)
    try:
        env.produce(events)
        wait_until(env.all_committed, 60, "every input committed once the input ran dry")
        # And again for a second burst, after the first was committed.
        more = list(Generator(GenSpec(count=500, seed=12, id_prefix="e")).events())
        env.produce(more)
        wait_until(env.all_committed, 60, "the second burst committed once the input ran dry again")
    finally:
        env.stop_all()
    got = _ids(env.read())
    missing = _expected_ids(expected_by_replay(env, events + more, tmp_path)) - set(got)
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:5]}"
