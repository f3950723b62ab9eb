"""The worker's per-batch accounting (``Worker._route_batch``): counters,
per-event statistics, checkpoint offsets and what is queued for produce.

Consumed messages from tests/messages.py (real confluent-kafka Message objects
where the client can build them), a consumer error among them, and a real
Producer whose broker is unreachable: produce() only queues, which is all
this test reads from it. What reaches Kafka is tested against the broker in
tests/integration.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import orjson
import pytest
from confluent_kafka import KafkaError, Producer

from etl_gate.config import GateConfig
from etl_gate.core import BLOCKED, MALFORMED, PASSED, SAMPLED_OUT, UNREGISTERED, Decider, parse_snapshot
from etl_gate.kafka.telemetry import N_OUT, PRIO
from etl_gate.kafka.worker import C_BYTES_IN, C_DLQ, C_IN, C_ROUTED, Worker
from tests.messages import message

RULES = {"version": 7, "apps": {}, "rules": [
    {"app": "1128", "event": "play", "priority": "P0"},
    {"app": "1128", "event": "scroll", "priority": "P2"},
    {"app": "1128", "event": "debug", "priority": "P2", "sample_rate": 0.0},
    {"app": "1128", "event": "old", "priority": "P1", "state": "offline"},
]}


def ev(event: str, user: str = "u1") -> bytes:
    return orjson.dumps({"app_id": "1128", "event": event, "user_id": user})


@pytest.fixture(params=["python", "native"])
def worker(request: pytest.FixtureRequest) -> Iterator[Worker]:
    """A worker of each engine (kafka.engine); the native one's producer is the C
    fast path's, made as Worker.run makes it."""
    cfg = GateConfig()
    cfg = replace(cfg, kafka=replace(cfg.kafka, bootstrap_servers="127.0.0.1:1",
                                     producer={"log_level": 0}))
    w = Worker(cfg, 0, conn=None)
    w.holder.swap(Decider(parse_snapshot(RULES), cfg.decision_settings()))
    w._partitions = [6] * 5
    if request.param == "native":
        w.producer = w._native_producer()
        assert w.native
        w.producer.set_outputs([*cfg.topics.priority_topics, cfg.topics.dlq, None], [6] * 4 + [1])
    else:
        w.producer = Producer({"bootstrap.servers": "127.0.0.1:1", "log_level": 0,
                               "on_delivery": w.checkpoints.on_delivery_error,
                               "delivery.report.only.error": True})
    yield w
    w.producer.purge()


def stats(worker: Worker) -> dict:
    worker._drain_table()  # the C fast path's counts, as each telemetry interval drains them
    return worker.telemetry.stats


def test_a_batch_is_counted_per_outcome_per_event_and_per_partition(worker: Worker) -> None:
    values = [(0, ev("play")), (0, ev("play")), (1, ev("scroll")), (1, ev("nope")),
              (2, ev("debug")), (2, ev("old")), (0, b"{not json")]
    msgs = [message(topic="events.raw", partition=p, offset=100 + i, value=v, key=b"k",
                    timestamp=(1, 1_700_000_000_000)) for i, (p, v) in enumerate(values)]
    # A consumer error in the middle: not an event, not counted, no offset.
    msgs.insert(3, message(topic="events.raw", partition=5, offset=999,
                           error=KafkaError(KafkaError._TRANSPORT)))
    worker._route_batch(msgs)

    c = worker.counters
    assert c[C_IN] == len(values)
    assert c[C_BYTES_IN] == sum(len(v) for _, v in values)
    assert [c[o] for o in (PASSED, UNREGISTERED, SAMPLED_OUT, BLOCKED, MALFORMED)] == [3, 1, 1, 1, 1]
    assert c[C_ROUTED] == 3 and c[C_DLQ] == 1
    assert worker.telemetry.out_events[:4] == [2, 0, 1, 1]  # P0, P1, P2, DLQ
    # What was queued: purged, each comes back as a failed delivery report.
    worker.producer.purge()
    worker.producer.flush(5)
    queued = sorted((m.topic(), m.partition(), m.value()) for _, m in worker.checkpoints.take_failures())
    assert queued == sorted([("events.p0", 0, ev("play")), ("events.p0", 0, ev("play")),
                             ("events.p2", 1, ev("scroll")), ("events.dlq", 0, b"{not json")])

    stats_ = stats(worker)
    play = stats_["1128"]["play"]
    assert play[PASSED] == 2 and play[N_OUT + PASSED] == 2 * len(ev("play")) and play[PRIO] == 0
    assert stats_["1128"]["scroll"][PRIO] == 2
    assert stats_["1128"]["nope"][UNREGISTERED] == 1 and stats_["1128"]["nope"][PRIO] == -1
    assert stats_["1128"]["debug"][SAMPLED_OUT] == 1
    assert stats_["1128"]["old"][BLOCKED] == 1
    assert stats_[""]["invalid_json"][MALFORMED] == 1  # malformed: under app "" by reason

    # The next offset of each partition's last event; none for the error's partition.
    assert worker.checkpoints.pending() == {0: 107, 1: 104, 2: 106}


def test_statistics_add_up_over_batches(worker: Worker) -> None:
    def batch(start: int, n: int) -> list:
        return [message(topic="events.raw", partition=0, offset=start + i, value=ev("play"),
                        timestamp=(1, 1)) for i in range(n)]

    worker._route_batch(batch(0, 3))
    worker._route_batch(batch(3, 4))
    assert stats(worker)["1128"]["play"][PASSED] == 7
    assert worker.counters[C_IN] == worker.counters[PASSED] == 7
    worker.stats_on = False  # statistics off: the counters still count
    worker._route_batch(batch(7, 2))
    assert stats(worker)["1128"]["play"][PASSED] == 7
    assert worker.counters[C_IN] == 9
