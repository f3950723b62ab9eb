"""Every Prometheus metric the gate exports, declared in one place.

Served by the supervisor from its own registry. Workers never touch
prometheus_client: they ship counts per interval (``telemetry.py``) and the
supervisor adds them here, so a worker restart neither resets nor doubles a
counter. Labels are bounded: ``app`` is one of the configured top apps or
``other``; no label ever carries an event name.
Names follow ``etl_gate_<name>_<unit>[_total]``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 60.0)
BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class BucketHistogram(Collector):
    """A histogram fed whole bucket counts (workers bucket their own
    observations; prometheus_client's Histogram only takes one at a time)."""

    def __init__(self, name: str, doc: str, bounds: tuple[float, ...],
                 registry: CollectorRegistry) -> None:
        self.name, self.doc, self.bounds = name, doc, bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, +Inf last
        self.sum = 0.0
        registry.register(self)

    def add(self, counts: list[int], total: float) -> None:
        for i, c in enumerate(counts):
            self.counts[i] += c
        self.sum += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative, running = [], 0
        for bound, c in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += c
            cumulative.append((bound, running))
        yield HistogramMetricFamily(self.name, self.doc, buckets=cumulative, sum_value=self.sum)


class GateMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "etl_gate_events_total", "Input events by decision, priority (routed ones) and app.",
            ["decision", "priority", "app"], registry=r)
        self.bytes = Counter(
            "etl_gate_input_bytes_total", "Input payload bytes by decision, priority and app.",
            ["decision", "priority", "app"], registry=r)
        self.output_events = Counter(
            "etl_gate_output_events_total", "Events produced to each output kind.",
            ["output", "priority"], registry=r)
        self.output_bytes = Counter(
            "etl_gate_output_bytes_total", "Bytes produced to each output kind.",
            ["output", "priority"], registry=r)
        self.dead_letters = Counter(
            "etl_gate_dead_letters_total", "Malformed events sent to the DLQ, by reason.",
            ["reason"], registry=r)
        self.cost = Counter(
            "etl_gate_cost_total", "Events x unit price of their priority (cost.unit_price).",
            ["priority", "app"], registry=r)
        self.consumer_lag = Gauge(
            "etl_gate_consumer_lag_messages", "Messages behind the high watermark per input "
            "partition.", ["partition"], registry=r)
        self.batch_seconds = BucketHistogram(
            "etl_gate_batch_duration_seconds", "Time to decide and hand one batch to the producer.",
            BATCH_BUCKETS, r)
        self.latency = BucketHistogram(
            "etl_gate_end_to_end_latency_seconds", "Decision time minus the input's Kafka "
            "timestamp.", LATENCY_BUCKETS, r)
        self.producer_queue = Gauge(
            "etl_gate_producer_queue_messages", "Messages waiting in a worker's producer queue.",
            ["worker"], registry=r)
        self.rules_version = Gauge(
            "etl_gate_rules_version", "Version of the rules in force.", registry=r)
        self.rules_applied = Gauge(
            "etl_gate_rules_applied_timestamp_seconds", "When the rules in force were applied.",
            registry=r)
        self.rules_count = Gauge("etl_gate_rules_count", "Rules in force.", registry=r)
        self.worker_rules_version = Gauge(
            "etl_gate_worker_rules_version", "Rules version each worker decides with.",
            ["worker"], registry=r)
        self.rule_changes = Counter(
            "etl_gate_rule_changes_total", "Rules changes applied (pushes, deltas, file).",
            registry=r)
        self.rule_rejections = Counter(
            "etl_gate_rule_rejections_total", "Rules changes refused.", registry=r)
        self.worker_up = Gauge(
            "etl_gate_worker_up", "1 while a worker process is alive and running.", ["worker"],
            registry=r)
        self.worker_restarts = Counter(
            "etl_gate_worker_restarts_total", "Worker processes restarted.", registry=r)
        self.surges = Gauge(
            "etl_gate_surging_events", "Events currently flagged as surging, by app.", ["app"],
            registry=r)
        self.surges_started = Counter(
            "etl_gate_surges_total", "Surges detected, by app and the protection applied.",
            ["app", "action"], registry=r)
        self.unregistered_ratio = Gauge(
            "etl_gate_useless_event_ratio", "Share of an app's events that are unregistered or "
            "blocked, over the stats window.", ["app"], registry=r)
