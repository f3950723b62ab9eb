"""A worker's interval report: what it carries, and that a full queue drops a
report instead of blocking the hot loop."""

from __future__ import annotations

import queue

from etl_gate.core import PASSED
from etl_gate.kafka.telemetry import N_OUT, PRIO, WorkerTelemetry, new_row
from tests.messages import message


def stamped(*timestamps_ms: int) -> list:
    """Consumed messages with these CreateTime timestamps."""
    return [message(topic="raw", partition=0, offset=i, value=b"{}", timestamp=(1, ts))
            for i, ts in enumerate(timestamps_ms)]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_report_carries_the_interval_and_resets() -> None:
    q: queue.Queue = queue.Queue()
    clock = Clock()
    tel = WorkerTelemetry(3, q, interval_s=1.0, clock=clock)
    row = tel.stats.setdefault("1128", {}).setdefault("play", new_row())
    row[PASSED] += 2
    row[N_OUT + PASSED] += 700
    row[PRIO] = 0
    tel.observe_batch(0.003, now_ms=10_000, msgs=[*stamped(9_999, 9_990, 9_000), message()])
    clock.t = 1.5
    assert tel.due()
    tel.flush({0: 5}, queue_depth=7, rules_version=42)
    report = q.get_nowait()
    assert report["worker"] == 3 and report["seconds"] == 1.5
    assert report["stats"] == {"1128": {"play": row}}
    # 1 ms, 10 ms and 1 s latencies land in their buckets; a message without a
    # timestamp is skipped.
    assert sum(report["latency"]) == 3 and report["latency_sum_ms"] == 1 + 10 + 1000
    assert report["lag"] == {0: 5} and report["queue_depth"] == 7
    assert tel.stats == {} and not tel.due()


def test_a_full_queue_drops_the_report_instead_of_blocking() -> None:
    q: queue.Queue = queue.Queue(maxsize=1)
    tel = WorkerTelemetry(0, q, interval_s=1.0, clock=Clock())
    tel.flush({}, 0, 1)
    tel.flush({}, 0, 1)  # would block with put()
    assert q.qsize() == 1 and tel.dropped == 1


def test_a_big_batch_is_sampled_but_every_input_is_counted() -> None:
    from etl_gate.kafka.telemetry import LATENCY_EXACT_UP_TO, LATENCY_STRIDE

    q: queue.Queue = queue.Queue()
    tel = WorkerTelemetry(0, q, interval_s=1.0, clock=Clock())
    n = LATENCY_EXACT_UP_TO * 3 + 5  # not a multiple of the stride
    assert n % LATENCY_STRIDE
    tel.observe_batch(0.01, now_ms=10_000, msgs=stamped(*[10_000 - 7] * n))
    tel.flush({}, 0, 1)
    report = q.get_nowait()
    assert sum(report["latency"]) == n
    assert report["latency_sum_ms"] == 7 * n
