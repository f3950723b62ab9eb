"""What a worker measures, accumulated in plain Python containers and shipped
to the supervisor once per interval (one queue message), never per event.

The hot loop adds to ``stats`` (per app, per event: counts and bytes per
outcome, the priority it was routed with) and to the latency histogram; the
supervisor turns intervals into Prometheus counters, per-event statistics and
surge checks (``etl_gate/observe.py``).
"""

from __future__ import annotations

import logging
import queue
import time
from bisect import bisect_left
from typing import Any

from ..core import OUTCOMES
from ..metrics import BATCH_BUCKETS, LATENCY_BUCKETS

log = logging.getLogger(__name__)
N_OUT = len(OUTCOMES)
ROW = 2 * N_OUT + 1  # counts per outcome, bytes per outcome, last routed priority (-1)
PRIO = 2 * N_OUT
LATENCY_BOUNDS_MS = [b * 1000 for b in LATENCY_BUCKETS]  # ms; latencies are whole ms
LATENCY_STRIDE = 8
LATENCY_EXACT_UP_TO = 64  # inputs per batch measured one by one


def new_row() -> list[int]:
    row = [0] * ROW
    row[PRIO] = -1
    return row


def merge_rows(stats: dict[str, dict[str, list[int]]],
               rows: list[tuple[str, str, list[int]]]) -> None:
    """Adds (app, event, row) statistics (the C fast path's) into ``stats``."""
    for app, event, row in rows:
        events = stats.get(app)
        if events is None:
            events = stats[app] = {}
        cur = events.get(event)
        if cur is None:
            events[event] = row
            continue
        for i in range(PRIO):
            cur[i] += row[i]
        if row[PRIO] >= 0:
            cur[PRIO] = row[PRIO]


class WorkerTelemetry:
    def __init__(self, worker: int, queue: Any, interval_s: float = 1.0,
                 clock: Any = time.monotonic) -> None:
        self.worker = worker
        self.queue = queue
        self.interval_s = interval_s
        self.clock = clock
        self._last = clock()
        self.dropped = 0
        self.reset()

    def reset(self) -> None:
        # stats[app][event] -> row; malformed events under app "" by reason.
        self.stats: dict[str, dict[str, list[int]]] = {}
        self.out_bytes = [0, 0, 0, 0, 0]  # P0, P1, P2, DLQ, quarantine
        self.out_events = [0, 0, 0, 0, 0]
        self.latency = [0] * (len(LATENCY_BOUNDS_MS) + 1)  # count per bucket (+Inf last)
        self.latency_sum_ms = 0
        self.batch = [0] * (len(BATCH_BUCKETS) + 1)
        self.batch_sum = 0.0

    def observe_batch(self, seconds: float, now_ms: int, msgs: list[Any]) -> None:
        """Per batch: its duration, and each input's end-to-end latency from
        its Kafka timestamp (``msgs``: the batch's messages; one without a
        timestamp, an error for instance, is skipped)."""
        self.batch[bisect_left(BATCH_BUCKETS, seconds)] += 1
        self.batch_sum += seconds
        hist = self.latency
        bounds = LATENCY_BOUNDS_MS
        total = 0
        n = len(msgs)
        # A big batch is sampled (every LATENCY_STRIDE-th input stands for
        # the ones after it): a Python step per event cost 3% of a worker.
        # The inputs of one batch arrived together, so little is lost. The
        # timestamps are read here, for the sampled inputs only, not
        # collected by the per-event loop.
        step = LATENCY_STRIDE if n > LATENCY_EXACT_UP_TO else 1
        for i in range(0, n, step):
            ts = msgs[i].timestamp()[1]
            if ts > 0:
                weight = step if i + step <= n else n - i
                lat = now_ms - ts
                if lat < 0:
                    lat = 0
                hist[bisect_left(bounds, lat)] += weight
                total += lat * weight
        self.latency_sum_ms += total

    def due(self) -> bool:
        return self.clock() - self._last >= self.interval_s

    def flush(self, lag: dict[int, int], queue_depth: int, rules_version: int) -> None:
        now = self.clock()
        if self.queue is not None:
            report = {
                "worker": self.worker, "seconds": now - self._last, "stats": self.stats,
                "out_bytes": self.out_bytes, "out_events": self.out_events,
                "latency": self.latency, "latency_sum_ms": self.latency_sum_ms,
                "batch": self.batch, "batch_sum": self.batch_sum, "lag": lag,
                "queue_depth": queue_depth, "rules_version": rules_version,
            }
            try:
                # Never block the hot loop on a slow supervisor: drop the
                # report (metrics lose one interval) and say so.
                self.queue.put_nowait(report)
            except queue.Full:
                self.dropped += 1
                if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                    log.warning("worker %d: telemetry queue full; %d reports dropped",
                                self.worker, self.dropped)
        self._last = now
        self.reset()
