"""etl_gate/fastpath, the C loop of kafka.engine = "native": it decides as the
Python core does (SPEC section 3) event by event, leaves to Python exactly the
events it cannot be sure of, and its route() counts, queues and stops as the
worker expects. No broker: outputs are only queued here (a producer whose
bootstrap is unreachable queues them); the Kafka side is the integration suite,
which scripts/test.sh runs with both engines. Needs a C compiler, Python's and
librdkafka's headers (scripts/test.sh installs them)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from etl_gate.core import OUTCOMES, build_decider, parse_snapshot
from etl_gate.core.decide import MALFORMED, PASSED, UNREGISTERED, DecisionSettings
from etl_gate.fastpath import FastpathUnsupported, build_table, check_settings, load
from etl_gate.gen import Generator, GenSpec
from etl_gate.kafka.telemetry import PRIO, merge_rows
from tests.edge_events import EDGE_CASES, RULES
from tests.messages import message

fp = load()


def _decider(rules: dict, **settings: Any) -> Any:
    return build_decider(parse_snapshot(rules), DecisionSettings(**settings))


def _compare(rules: dict, lines: list[bytes], **settings: Any) -> tuple[int, list[Any]]:
    """(events left to Python, differences from the core)."""
    d = _decider(rules, **settings)
    table = build_table(d)
    slow, diffs = 0, []
    for raw in lines:
        v = d.decide(raw, 0)
        got = table.decide(raw)
        if got is None:
            slow += 1
            continue
        want = (v.outcome, v.priority, v.reason, v.quarantine)
        if got != want:
            diffs.append((raw[:80], want, got))
    return slow, diffs


@pytest.mark.parametrize("seed", [0, 42])
@pytest.mark.parametrize("quarantine", [0.0, 0.5])
def test_edge_cases_decide_as_the_core(seed: int, quarantine: float) -> None:
    slow, diffs = _compare(RULES, EDGE_CASES, seed=seed, quarantine_rate=quarantine)
    assert not diffs, diffs[:5]
    # Only the 40 sample keys that are arrays are left to Python.
    assert slow == 40


def test_generated_traffic_decides_as_the_core() -> None:
    gen = Generator(GenSpec(count=30_000, seed=3, malformed_share=0.02, sampled_share=0.3))
    lines = [payload for payload, _key, _ts in gen.events()]
    slow, diffs = _compare(gen.rules(), lines, seed=7, quarantine_rate=0.3)
    assert not diffs, diffs[:5]
    assert slow == 0


SLOW_RULES = {"version": 3, "apps": {"m": {"mode": "monitor", "default_priority": "P2"}}, "rules": [
    {"app": "1", "event": "capped", "priority": "P0", "max_rate": 5},
    {"app": "1", "event": "dotted", "priority": "P1", "sample_rate": 0.5, "sample_key": "u.id"},
    {"app": "1", "event": "keyed", "priority": "P1", "sample_rate": 0.5, "sample_key": "dev"},
    {"app": "1", "event": "play", "priority": "P0"},
    {"app": "m", "event": "known", "priority": "P1"},
]}


@pytest.mark.parametrize("raw", [
    b'{"app_id":"1","event":"capped"}',            # a rate cap's bucket is Python's
    b'{"app_id":"1","event":"dotted","u":{"id":1}}',
    b'{"app_id":"m","event":"unknown"}',           # monitor mode
    b'{"app_id":1.0,"event":"play"}',              # numbers whose text Python rewrites
    b'{"app_id":-0,"event":"play"}',
    b'{"app_id":1E0,"event":"play"}',
    b'{"app_id":1234567890123456789,"event":"play"}',
    b'{"app_id":"1","event":"keyed","dev":1.5}',
    b'{"app_id":"1","event":"keyed","dev":{"a":1}}',
])
def test_what_it_cannot_be_sure_of_is_left_to_python(raw: bytes) -> None:
    assert build_table(_decider(SLOW_RULES)).decide(raw) is None


@pytest.mark.parametrize("raw,want", [
    (b'{"app_id":"1","event":"play"}', (PASSED, 0, None, False)),
    (b'{"app_id":1,"event":"play"}', (PASSED, 0, None, False)),
    (b'{"app_id":-12,"event":"play"}', (UNREGISTERED, -1, None, False)),
    (b'{"app_id":"m","event":"known"}', (PASSED, 1, None, False)),  # registered in a monitor app
    (b'{"app_id":"\\ud83d\\ude00","event":"play"}', (UNREGISTERED, -1, None, False)),
    (b'{"app_id":"1","event":"keyed","dev":true}', None),  # checked against the core below
    (b'{"app_id":"1","event":"keyed","dev":123}', None),
    # A lone surrogate is invalid JSON to orjson, wherever it is.
    (b'{"app_id":"1","event":"play","x":"\\ud800"}', (MALFORMED, -1, "invalid_json", False)),
    (b'{"app_id":"\\ud800","event":"play"}', (MALFORMED, -1, "invalid_json", False)),
    (b'{"app_id":"1","event":"pl\\udc00ay"}', (MALFORMED, -1, "invalid_json", False)),
    (b'{"app_id":"1","event":"keyed","dev":"\\ud800\\u0041"}', (MALFORMED, -1, "invalid_json", False)),
])
def test_what_it_decides_itself(raw: bytes, want: Any) -> None:
    d = _decider(SLOW_RULES)
    got = build_table(d).decide(raw)
    v = d.decide(raw, 0)
    assert got == (v.outcome, v.priority, v.reason, v.quarantine)
    if want is not None:
        assert got == want


def test_surge_guards_send_their_events_to_python_until_lifted() -> None:
    table = build_table(_decider(SLOW_RULES))
    raw = b'{"app_id":"1","event":"play"}'
    table.guard([("1", "play"), ("nobody", "nothing")])
    assert table.decide(raw) is None
    table.guard([])
    assert table.decide(raw) == (PASSED, 0, None, False)


def test_settings_it_cannot_follow_are_refused() -> None:
    check_settings(DecisionSettings())
    for settings, tag_field in ((DecisionSettings(app_path="meta.app"), ""),
                                (DecisionSettings(sample_keys=("a", "u.id")), ""),
                                (DecisionSettings(seed=1 << 32), ""),
                                (DecisionSettings(), "priority")):
        with pytest.raises(FastpathUnsupported):
            check_settings(settings, tag_field)


def _producer() -> Any:
    # Nothing listens on port 9: outputs stay queued, which is all these tests read.
    return fp.Producer({"bootstrap.servers": "127.0.0.1:9", "log_level": 0,
                        "message.timeout.ms": 600_000}, lambda *a: None)


def test_route_counts_queues_and_stops_where_python_must_take_over() -> None:
    gen = Generator(GenSpec(count=3000, seed=5, malformed_share=0.05, sampled_share=0.3,
                            unregistered_share=0.2))
    rules = gen.rules()
    d = build_decider(parse_snapshot(rules), DecisionSettings(quarantine_rate=0.5))
    events = list(gen.events())
    msgs = [message("in", i % 3, 100 + i, payload, key, (1, ts))
            for i, (payload, key, ts) in enumerate(events)]
    slow_at = 1234  # a consumer error, which Python handles
    msgs.insert(slow_at, message("in", 0, -1, None, None, (0, 0), error=fp_error()))
    producer = _producer()
    producer.set_outputs(["p0", "p1", "p2", "dlq", "q"], [6, 6, 6, 1, 1])
    table = build_table(d)
    last: dict[int, Any] = {}
    assert producer.route(msgs, 0, table, last) == slow_at
    assert producer.route(msgs, slow_at + 1, table, last) == len(msgs)

    want: Counter[int] = Counter()
    outputs = 0
    rows: dict[tuple[str, str], list[int]] = {}
    for payload, _key, _ts in events:
        v = d.decide(payload, 0)
        want[v.outcome] += 1
        outputs += v.priority >= 0 or v.outcome == MALFORMED or v.quarantine
        key = ("", v.reason) if v.outcome == MALFORMED else (d.seen.app, d.seen.event)
        row = rows.setdefault(key, [0] * (PRIO + 1))
        row[v.outcome] += 1
        row[len(OUTCOMES) + v.outcome] += len(payload)
    n, nbytes, outcomes, out_events, out_bytes = producer.counts()
    assert n == len(events)
    assert nbytes == sum(len(p) for p, _k, _t in events)
    assert outcomes == [want[i] for i in range(len(OUTCOMES))]
    producer.poll(0)  # serves the client's own events (connection errors), not outputs
    assert sum(out_events) == outputs == len(producer)
    assert out_events[3] == want[MALFORMED] > 0 and out_events[4] > 0
    assert producer.counts()[0] == 0  # counts() zeroes
    assert {p: m.offset() for p, m in last.items()} == {
        p: max(m.offset() for m in msgs if m.partition() == p and m.error() is None) for p in range(3)}

    stats: dict[str, dict[str, list[int]]] = {}
    merge_rows(stats, table.drain())
    got = {(a, e): row[:PRIO] for a, events_ in stats.items() for e, row in events_.items()}
    assert got == {k: r[:PRIO] for k, r in rows.items()}
    assert table.drain() == []  # drained: zero again
    producer.close()


def fp_error() -> Any:
    from confluent_kafka import KafkaError

    return KafkaError(KafkaError._PARTITION_EOF)


def test_produce_takes_the_worker_python_path_arguments() -> None:
    producer = _producer()
    producer.produce("t", b"v", b"k", 0, None, None, 123, [("error", b"x"), ("n", b"1")])
    producer.produce("t", b"v")
    producer.poll(0)
    assert len(producer) == 2
    with pytest.raises(ValueError, match="callbacks"):
        producer.produce("t", b"v", None, -1, print)
    with pytest.raises(TypeError):
        producer.produce("t", b"v", None, -1, None, None, 0, [("name", "not bytes")])
    producer.poll(0)
    assert len(producer) == 2
    producer.close()
    with pytest.raises(RuntimeError, match="closed"):
        producer.poll(0)
