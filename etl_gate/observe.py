"""The supervisor's side of observability: takes the workers' interval
reports (``kafka/telemetry.py``) and turns them into Prometheus metrics,
per-event statistics, surge detection and stats-topic records.

One thread drains the telemetry queue; everything here runs once per worker
interval or per stats interval, never per event.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

from .config import GateConfig
from .control.authority import RulesAuthority
from .core import MALFORMED, OUTCOMES, PRIORITIES
from .core.surge import SurgeDetector, SurgeSettings
from .metrics import GateMetrics
from .stats import EventStatsTable, merge_intervals

log = logging.getLogger(__name__)
N_OUT = len(OUTCOMES)
_OUTPUTS = ("P0", "P1", "P2", "dlq", "quarantine")
_LAG_STALE_S = 10.0


class Observer:
    def __init__(self, cfg: GateConfig, authority: RulesAuthority,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        o = cfg.observe
        self.cfg = cfg
        self.authority = authority
        self.clock = clock
        self.wall = wall
        self.metrics = GateMetrics()
        self.top_apps = frozenset(o.top_apps)
        prices = o.unit_price
        self.prices = tuple(float(prices.get(p, 0.0)) for p in PRIORITIES)
        self.table = EventStatsTable(o.stats_max_keys, o.stats_window_minutes, self.prices)  # type: ignore[arg-type]
        self.detector = SurgeDetector(SurgeSettings(
            factor=o.surge_factor, floor=o.surge_floor, calm_intervals=o.surge_calm_intervals,
            action=o.surge_action))
        self.queue: Any = None
        self.lock = threading.Lock()  # the table and detector are read by gRPC threads
        self._pending: list[dict[str, Any]] = []
        self._pending_since = clock()
        self._minute = clock()
        self._lag: dict[int, tuple[float, int]] = {}
        self._children: dict[tuple[str, ...], Any] = {}
        self._seen_changes = 0
        self._seen_rejections = 0
        self.publish: Callable[[str, bytes], None] = lambda kind, blob: None
        self.producer: Any = None
        self.stats_errors = 0
        self._stop = threading.Event()

    # -- wiring -------------------------------------------------------------

    def start(self, telemetry_queue: Any, publish: Callable[[str, bytes], None]) -> None:
        self.queue = telemetry_queue
        self.publish = publish
        if self.cfg.observe.stats_topic:
            from confluent_kafka import Producer

            from .kafka.clients import producer_config

            self.producer = Producer(producer_config(self.cfg, "stats"))
        threading.Thread(target=self._drain, name="telemetry", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self.producer is not None:
            self.producer.flush(10)

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.queue.get(timeout=0.5)
            except queue.Empty:
                msg = None
            except (EOFError, OSError):
                return
            try:
                if msg is not None:
                    self.ingest(msg)
                self.maybe_close_interval()
            except Exception:
                log.exception("telemetry: report dropped")

    # -- per worker report -------------------------------------------------------

    def app_label(self, app: str) -> str:
        return app if app in self.top_apps else "other"

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def ingest(self, msg: dict[str, Any]) -> None:
        m = self.metrics
        stats: dict[str, dict[str, list[int]]] = msg["stats"]
        events: dict[tuple[str, str, str], int] = {}
        nbytes: dict[tuple[str, str, str], int] = {}
        cost: dict[tuple[str, str], float] = {}
        for app, rows in stats.items():
            label = self.app_label(app) if app else "none"
            for event, row in rows.items():
                prio = row[-1]
                for o in range(N_OUT):
                    if row[o]:
                        # Routed decisions carry their priority; drops carry none.
                        p = PRIORITIES[prio] if prio >= 0 and o in (0, 2) else "none"
                        k = (OUTCOMES[o], p, label)
                        events[k] = events.get(k, 0) + row[o]
                        nbytes[k] = nbytes.get(k, 0) + row[N_OUT + o]
                        if p != "none" and self.prices[prio]:
                            ck = (p, label)
                            cost[ck] = cost.get(ck, 0.0) + row[o] * self.prices[prio]
                if not app and row[MALFORMED]:
                    self._child(m.dead_letters, event).inc(row[MALFORMED])
        for k, n in events.items():
            self._child(m.events, *k).inc(n)
            self._child(m.bytes, *k).inc(nbytes[k])
        for ck, c in cost.items():
            self._child(m.cost, *ck).inc(c)
        for i, out in enumerate(_OUTPUTS):
            if msg["out_events"][i]:
                out_prio = out if i < 3 else "none"
                kind = "priority" if i < 3 else out
                self._child(m.output_events, kind, out_prio).inc(msg["out_events"][i])
                self._child(m.output_bytes, kind, out_prio).inc(msg["out_bytes"][i])
        m.latency.add(msg["latency"], msg["latency_sum_ms"] / 1000.0)
        m.batch_seconds.add(msg["batch"], msg["batch_sum"])
        worker = str(msg["worker"])
        self._child(m.producer_queue, worker).set(msg["queue_depth"])
        self._child(m.worker_rules_version, worker).set(msg["rules_version"])
        now = self.clock()
        for part, lag in msg["lag"].items():
            self._lag[int(part)] = (now, lag)
        with self.lock:
            self.table.add(stats)
            self._pending.append(stats)

    # -- per stats interval -------------------------------------------------------

    def maybe_close_interval(self) -> None:
        now = self.clock()
        m = self.metrics
        for part, (seen, lag) in list(self._lag.items()):
            if now - seen > _LAG_STALE_S:
                del self._lag[part]  # no worker owns it any more
                m.consumer_lag.remove(str(part))
            else:
                self._child(m.consumer_lag, str(part)).set(lag)
        if now - self._minute >= 60.0:
            self._minute = now
            with self.lock:
                self.table.rotate()
        seconds = now - self._pending_since
        if seconds < self.cfg.observe.stats_interval_s:
            return
        with self.lock:
            pending, self._pending = self._pending, []
            self._pending_since = now
            merged = merge_intervals(pending)
            changes = self.detector.observe(self.table.interval_counts(merged), seconds)
            surging = self.detector.surging()
        self._report_surges(changes, surging)
        per_app: dict[str, list[int]] = {}
        for a in self.table.app_stats():
            per_app[a.app] = [a.events, a.unregistered + a.blocked]
        for app, (total, useless) in per_app.items():
            if app and (app in self.top_apps):
                self._child(m.unregistered_ratio, app).set(useless / total if total else 0.0)
        if self.producer is not None:
            self._publish_stats(merged, seconds, surging)

    def _report_surges(self, changes: list[Any], surging: dict[tuple[str, str], float]) -> None:
        action = self.cfg.observe.surge_action
        m = self.metrics
        for ch in changes:
            log.warning("%s", orjson.dumps({
                "surge": "started" if ch.started else "ended", "app": ch.app, "event": ch.event,
                "rate_per_s": round(ch.rate, 1), "baseline_per_s": round(ch.baseline, 1),
                "action": action}).decode())
            if ch.started:
                self._child(m.surges_started, self.app_label(ch.app), action).inc()
        per_app: dict[str, int] = {}
        for app, _event in surging:
            label = self.app_label(app)
            per_app[label] = per_app.get(label, 0) + 1
        for label in {k[1] for k in self._children if k[0] == m.surges._name} | set(per_app):
            self._child(m.surges, label).set(per_app.get(label, 0))
        if changes and action != "flag":
            guards = [[app, event, action, baseline] for (app, event), baseline in surging.items()]
            self.publish("surge", orjson.dumps(guards))

    def surge_blob(self) -> bytes | None:
        """The protections in force, for a worker that (re)starts."""
        action = self.cfg.observe.surge_action
        if action == "flag":
            return None
        with self.lock:
            surging = self.detector.surging()
        return orjson.dumps([[a, e, action, b] for (a, e), b in surging.items()])

    def _publish_stats(self, merged: dict[str, dict[str, list[int]]], seconds: float,
                       surging: dict[tuple[str, str], float]) -> None:
        topic = self.cfg.observe.stats_topic
        ts = self.wall()
        version = self.authority.version
        for app, rows in merged.items():
            for event, row in rows.items():
                prio = row[-1]
                for o in range(N_OUT):
                    if not row[o]:
                        continue
                    routed = prio >= 0 and o in (0, 2)
                    record = {
                        "ts": round(ts, 3), "interval_s": round(seconds, 3), "app": app,
                        "event": event, "decision": OUTCOMES[o], "count": row[o],
                        "bytes": row[N_OUT + o], "priority": PRIORITIES[prio] if routed else None,
                        "cost": row[o] * self.prices[prio] if routed else 0.0,
                        "surge": (app, event) in surging, "rules_version": version,
                    }
                    self._produce(topic, orjson.dumps(record), f"{app}/{event}".encode())
        self.producer.poll(0)

    def _on_stats_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.stats_errors += 1
            if self.stats_errors in (1, 10, 100) or self.stats_errors % 1000 == 0:
                log.error("stats topic %s: delivery failed (%d so far): %s",
                          self.cfg.observe.stats_topic, self.stats_errors, err)

    def _produce(self, topic: str, value: bytes, key: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, on_delivery=self._on_stats_delivery)
                return
            except BufferError:
                self.producer.poll(0.1)

    # -- per supervisor tick -------------------------------------------------------

    def tick(self, slots: list[Any], running: Callable[[Any], bool]) -> None:
        m = self.metrics
        for s in slots:
            self._child(m.worker_up, str(s.index)).set(1 if running(s) else 0)
        info = self.authority.info()
        if info is not None:
            m.rules_version.set(info.version)
            m.rules_applied.set(info.applied_at)
            m.rules_count.set(info.rule_count)
        changes, rejections = self.authority.pushes, self.authority.rejections
        if changes > self._seen_changes:
            m.rule_changes.inc(changes - self._seen_changes)
            self._seen_changes = changes
        if rejections > self._seen_rejections:
            m.rule_rejections.inc(rejections - self._seen_rejections)
            self._seen_rejections = rejections

    # -- StatsSource for the control plane -----------------------------------------

    def top(self, n: int, by: str, app: str | None, decision: str | None,
            window_minutes: int) -> list[Any]:
        with self.lock:
            return self.table.top(n, by, app, decision, window_minutes)

    def app_stats(self) -> list[Any]:
        with self.lock:
            return self.table.app_stats()

    @property
    def approximate(self) -> bool:
        return self.table.approximate

    def surging(self) -> dict[tuple[str, str], float]:
        with self.lock:
            return self.detector.surging()
