"""One worker process: consume a batch, decide it, route it, commit what is safe.

The loop is the canonical at-least-once loop (confluent-kafka's
examples/consumer.py) with one change: an offset is committed only at a
checkpoint that proved every output produced before it acknowledged (see
``ledger.py``). Everything per event is in ``_route_batch``; everything else
runs per batch.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from ..config import GateConfig
from ..control.model import WorkerState
from ..core import MALFORMED, OUTCOMES, PRIORITIES, FieldTagger
from ..core.surge import SurgeGuard
from ..fastpath import FastpathUnavailable, FastpathUnsupported, build_table, check_settings, load
from ..rules_source import RulesHolder
from .clients import consumer_config, producer_config
from .collector import tune_for_batches
from .ledger import Checkpoints
from .rules_feed import RulesFeed
from .telemetry import PRIO, WorkerTelemetry, merge_rows, new_row

log = logging.getLogger(__name__)

# Indices into the worker's shared counter row (see pool.py): the outcomes,
# then these.
N_OUT = len(OUTCOMES)
(C_IN, C_ROUTED, C_DLQ, C_QUARANTINE, C_BYTES_IN, C_RULES_VERSION, C_STATE,
 C_LAG) = range(N_OUT, N_OUT + 8)
N_COUNTERS = N_OUT + 8


class SurgeTable:
    """Surge guards by (app, event); replaced whole by the rules feed thread."""

    def __init__(self) -> None:
        self.table: dict[tuple[str, str], SurgeGuard] = {}

_RETRY_BACKOFF_S = 0.5
_POLL_INTERVAL_S = 0.02
# When the input has been dry this long, what was consumed is committed at
# once, without waiting for the commit interval: a drained backlog is
# committed when it drains (not up to an interval later), and so is each
# trickle at low rates. Once per dry spell, so a failing checkpoint (outputs
# unacknowledged) is retried on the interval, as before.
_DRY_COMMIT_S = 0.1


class Worker:
    def __init__(self, cfg: GateConfig, index: int, conn: Any, counters: Any = None,
                 rate_share: float = 1.0, telemetry: Any = None) -> None:
        self.cfg = cfg
        self.index = index
        self.counters = counters if counters is not None else [0] * N_COUNTERS
        self.running = True
        self.holder = RulesHolder(cfg.decision_settings(rate_share))
        self.feed = RulesFeed(conn, self.holder, on_applied=self._on_rules_applied,
                              on_closed=self._on_supervisor_gone, on_surge=self._on_surge)
        self.rate_share = rate_share
        self.telemetry = WorkerTelemetry(index, telemetry, cfg.observe.telemetry_interval_s)
        self.stats_on = cfg.observe.stats_enabled
        self.surge = SurgeTable()
        self.tagger = FieldTagger(cfg.tag.field) if cfg.tag.field else None
        self.topics = cfg.topics.priority_topics
        self.input_topic = cfg.kafka.input_topic
        self.checkpoints = Checkpoints()
        self.consumer: Consumer | None = None
        self.producer: Any = None  # confluent_kafka.Producer, or the fast path's
        self._last_commit = 0.0
        # kafka.engine = "native": the C fast path routes the common events
        # (etl_gate/fastpath); its table follows the decider in force.
        self.native = False
        self._table: Any = None
        self._table_of: Any = None  # the decider the table was built from
        self._guarded: Any = None  # the surge table the table's guards follow

    # -- lifecycle ---------------------------------------------------------

    def stop(self, *_: Any) -> None:
        self.running = False

    def _on_rules_applied(self, version: int) -> None:
        self.counters[C_RULES_VERSION] = version

    def _on_surge(self, guards: list[tuple[str, str, str, float]]) -> None:
        """The surging events to protect (the whole set, replaced at once)."""
        self.surge.table = {(app, event): SurgeGuard(action, rate * self.rate_share)
                            for app, event, action, rate in guards}

    def _on_supervisor_gone(self) -> None:
        if self.running:
            log.error("worker %d: supervisor gone; draining and exiting", self.index)
            self.running = False

    def _set_state(self, state: WorkerState) -> None:
        self.counters[C_STATE] = int(state)

    def run(self) -> None:
        tune_for_batches(self.cfg.kafka.batch_size)  # before the rules feed builds a decider
        self._set_state(WorkerState.STARTING)
        self.counters[C_LAG] = -1
        self.feed.start()
        self.producer = self._native_producer() if self.cfg.kafka.engine == "native" else None
        if self.producer is None:
            self.producer = Producer({**producer_config(self.cfg, self.index),
                                      # One callback, for failed deliveries only (ledger.py).
                                      "on_delivery": self.checkpoints.on_delivery_error,
                                      "delivery.report.only.error": True})
        self._set_state(WorkerState.WAITING)
        self._partitions = self._output_partitions()
        # A gate that has no rules yet does not consume: its events wait in Kafka.
        while self.holder.decider is None and self.running:
            time.sleep(0.05)
        if not self.running:
            self._set_state(WorkerState.STOPPING)
            return
        self.consumer = Consumer({**consumer_config(self.cfg, self.index),
                                  "on_commit": self._on_commit})
        self.consumer.subscribe([self.input_topic], on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_lost)
        log.info("worker %d consuming %s (rules version %s, engine %s)", self.index,
                 self.input_topic, self.holder.version, "native" if self.native else "python")
        self._set_state(WorkerState.RUNNING)
        try:
            self._loop()
        finally:
            self._set_state(WorkerState.STOPPING)
            self._shutdown()

    def _native_producer(self) -> Any:
        """The fast path's producer, or None (logged) where it cannot run: the
        worker then routes every event in Python, as with engine "python"."""
        try:
            check_settings(self.cfg.decision_settings(), self.cfg.tag.field)
            fp = load()
        except (FastpathUnavailable, FastpathUnsupported) as e:
            log.warning("worker %d: kafka.engine native unavailable, using python: %s",
                        self.index, e)
            return None
        self.native = True
        failed = self.checkpoints.on_delivery_error

        def on_error(code: int, reason: str, topic: str, partition: int, value: bytes | None,
                     key: bytes | None, ts: int) -> None:
            # As confluent-kafka reports a failed delivery (ledger.py).
            failed(KafkaError(code, reason), FailedOutput(topic, partition, value, key, ts))

        return fp.Producer(producer_config(self.cfg, self.index), on_error)

    def _loop(self) -> None:
        assert self.consumer is not None and self.producer is not None
        consume = self.consumer.consume
        poll = self.producer.poll
        batch_size = self.cfg.kafka.batch_size
        timeout = self.cfg.kafka.batch_timeout_ms / 1000.0
        max_queued = self.cfg.kafka.max_inflight_batches * batch_size
        producer = self.producer
        last_poll = 0.0
        dry_since: float | None = None  # since when consume() returns nothing
        dry_committed = False
        while self.running:
            # A batch: batch_size messages, or what arrived within timeout.
            # The timeout is short (5 ms): it bounds the latency a batch adds
            # at low rates, and still spares the loop from running per
            # message (taking whatever is there at once doubled the gate's
            # CPU at 20k events/s; bench/RESULTS.md).
            msgs = consume(batch_size, timeout)
            if msgs:
                self._route_batch(msgs)
                dry_since, dry_committed = None, False
            now = time.monotonic()
            if dry_since is None and not msgs:
                dry_since = now
            elif (dry_since is not None and not dry_committed and now - dry_since >= _DRY_COMMIT_S
                  and self.checkpoints.dirty):
                dry_committed = True
                self._last_commit = now
                self._checkpoint(asynchronous=True, timeout_s=30.0)
            if now - last_poll >= _POLL_INTERVAL_S:
                # Serves delivery errors (the only reports) and client logs;
                # every loop, it cost 7% of a worker.
                poll(0)
                last_poll = now
            self._settle()
            while len(producer) > max_queued and self.running:
                poll(0.05)  # backpressure: wait for the broker to acknowledge
                self._settle()
            if self.telemetry.due():
                self._drain_table()
                lag = self._input_lag()
                self.counters[C_LAG] = sum(lag.values()) if lag is not None else -1
                self.telemetry.flush(lag or {}, len(self.producer), self.holder.version or 0)

    def _input_lag(self) -> dict[int, int] | None:
        """Messages behind the high watermark per assigned partition, from
        librdkafka's cached watermarks (no broker round trip); None: unknown."""
        assert self.consumer is not None
        try:
            assigned = self.consumer.assignment()
            lag: dict[int, int] = {}
            for tp in self.consumer.position(assigned) if assigned else []:
                high = self.consumer.get_watermark_offsets(tp, cached=True)[1]
                if high < 0:
                    return None
                # No position yet (nothing consumed): everything up to high.
                lag[tp.partition] = max(0, high - tp.offset) if tp.offset >= 0 else high
            return lag
        except KafkaException:
            return None

    def _output_partitions(self) -> list[int]:
        """Partition count of each output topic (priority topics, DLQ, quarantine).

        An event goes to output partition ``input partition % count``, so the
        events of one input partition stay in one output partition per topic
        and keep their order there (SPEC section 4). Waits for the broker.
        """
        assert self.producer is not None
        t = self.cfg.topics
        names = [*self.topics, t.dlq] + ([t.quarantine] if t.quarantine else [])
        counts: list[int] = []
        while self.running:
            try:
                found = self._partition_counts(names)
                missing = [n for n, c in zip(names, found, strict=True) if c is None]
                if not missing:
                    counts = [c for c in found if c is not None]
                    if self.native:
                        self.producer.set_outputs([*names, None][:5], [*counts, 1][:5])
                    return counts
                log.warning("worker %d: output topics %s missing (run `etl-gate topics`); "
                            "waiting", self.index, missing)
            except KafkaException as e:
                log.warning("worker %d: broker not reachable yet (%s); waiting", self.index, e)
            time.sleep(1.0)
        return counts

    def _partition_counts(self, names: list[str]) -> list[int | None]:
        """Each topic's partition count (None: missing); KafkaException when
        the broker cannot be reached."""
        if self.native:
            return self.producer.partition_counts(names, 5.0)  # type: ignore[no-any-return]
        md = self.producer.list_topics(timeout=5.0)
        return [len(md.topics[n].partitions) if n in md.topics and not md.topics[n].error
                else None for n in names]

    def _shutdown(self) -> None:
        """Drain: every produced output acknowledged, safe offsets committed."""
        if self.consumer is not None:
            self._checkpoint(asynchronous=False, timeout_s=60.0)
            self.consumer.close()
        elif self.producer is not None:
            self.producer.flush(60.0)
        if self.native:
            self.producer.close()
        log.info("worker %d stopped", self.index)

    # -- per batch ---------------------------------------------------------

    def _route_batch(self, msgs: list[Any]) -> None:
        started = time.perf_counter()
        decider = self.holder.decider  # one version decides the whole batch
        assert decider is not None and self.producer is not None
        last: dict[int, Any] = {}
        if self.native:
            table = self._table_for(decider)
            route = self.producer.route
            i, n = 0, len(msgs)
            while i < n:
                # C routes up to the first event it leaves to Python (see
                # fastpath/_fastpath.c); Python routes that one, in order.
                i = route(msgs, i, table, last)
                if i < n:
                    self._route_events(msgs[i:i + 1], decider, last)
                    i += 1
            self._count_native()
        else:
            self._route_events(msgs, decider, last)
        self.checkpoints.note({p: m.offset() + 1 for p, m in last.items()}, msgs)
        self.telemetry.observe_batch(time.perf_counter() - started, int(time.time() * 1000), msgs)

    def _route_events(self, msgs: list[Any], decider: Any, last: dict[int, Any]) -> None:
        """Decides and routes msgs in Python; last[partition]: the last message
        of each partition."""
        decide = decider.decide
        seen = decider.seen
        produce: Callable[..., None] = self.producer.produce
        topics = self.topics
        tagger = self.tagger
        counts = [0] * N_OUT
        nparts = self._partitions
        tel = self.telemetry
        stats = tel.stats if self.stats_on else None
        out_bytes, out_events = tel.out_bytes, tel.out_events
        routed_before = out_events[0] + out_events[1] + out_events[2]
        surge = self.surge.table
        malformed, n_out, prio_col = MALFORMED, N_OUT, PRIO
        dlq = quarantined = nbytes = 0
        n = len(msgs)  # events: less the consumer errors, counted below
        for m in msgs:
            if m.error() is not None:
                self._consumer_error(m.error())
                n -= 1
                continue
            raw = m.value()
            if raw is None:  # a tombstone is not an event: malformed, kept in the DLQ
                raw = b""
            size = len(raw)
            nbytes += size
            ts = m.timestamp()[1]
            if ts < 0:
                ts = 0  # none: the producer stamps the output with its own clock
            # The input's timestamp is the clock of rate caps; a decider
            # without caps ignores it.
            v = decide(raw, ts)
            outcome = v.outcome
            prio = v.priority
            headers = v.headers
            if stats is not None or surge:
                if outcome != malformed:
                    app, event = seen.app, seen.event
                else:
                    app, event = "", v.reason or ""
                if surge and prio >= 0:
                    guard = surge.get((app, event))
                    if guard is not None:
                        outcome, prio, headers = guard.apply(outcome, prio, headers, ts)
                if stats is not None:
                    # Subscripts, not .get(): a miss is once per event name
                    # and telemetry interval.
                    try:
                        row = stats[app][event]
                    except KeyError:
                        row = stats.setdefault(app, {}).setdefault(event, new_row())
                    row[outcome] += 1
                    row[n_out + outcome] += size
                    if prio >= 0:
                        row[prio_col] = prio
            counts[outcome] += 1
            part = m.partition()
            last[part] = m
            if prio >= 0:
                payload = tagger.tag(raw, PRIORITIES[prio]) if tagger is not None else raw
                try:
                    # Positional: keyword arguments cost 0.35 us per call (bench/RESULTS.md).
                    produce(topics[prio], payload, m.key(), part % nparts[prio], None, None, ts,
                            headers)
                except BufferError:
                    self._produce(produce, topics[prio], part % nparts[prio], payload, m.key(),
                                  headers, ts)
                out_events[prio] += 1
                out_bytes[prio] += len(payload)
            elif outcome == malformed:
                hdrs = self._source_headers(m, v.reason or "malformed", decider.version)
                self._produce(produce, self.cfg.topics.dlq, part % nparts[3], raw, m.key(),
                              hdrs, ts)
                dlq += 1
                out_events[3] += 1
                out_bytes[3] += size
            elif v.quarantine:
                hdrs = self._source_headers(m, "unregistered", decider.version)
                self._produce(produce, self.cfg.topics.quarantine, part % nparts[4], raw,
                              m.key(), hdrs, ts)
                quarantined += 1
                out_events[4] += 1
                out_bytes[4] += size
        c = self.counters
        for i in range(N_OUT):
            if counts[i]:
                c[i] += counts[i]
        c[C_IN] += n
        c[C_ROUTED] += out_events[0] + out_events[1] + out_events[2] - routed_before
        c[C_DLQ] += dlq
        c[C_QUARANTINE] += quarantined
        c[C_BYTES_IN] += nbytes

    # -- the C fast path ---------------------------------------------------

    def _table_for(self, decider: Any) -> Any:
        """The C table of the decider in force, built when the rules change
        (the statistics of the table it replaces are kept first)."""
        if decider is not self._table_of:
            self._drain_table()
            self._table = build_table(decider, stats=self.stats_on)
            self._table_of = decider
            self._guarded = None
        if self.surge.table is not self._guarded:
            self._guarded = self.surge.table
            self._table.guard(list(self._guarded))  # guarded events take the Python path
        return self._table

    def _count_native(self) -> None:
        """What the C loop routed since the last call, into the worker's counters."""
        n, nbytes, outcomes, out_events, out_bytes = self.producer.counts()
        c = self.counters
        for i in range(N_OUT):
            if outcomes[i]:
                c[i] += outcomes[i]
        c[C_IN] += n
        c[C_ROUTED] += out_events[0] + out_events[1] + out_events[2]
        c[C_DLQ] += out_events[3]
        c[C_QUARANTINE] += out_events[4]
        c[C_BYTES_IN] += nbytes
        tel = self.telemetry
        for i in range(5):
            tel.out_events[i] += out_events[i]
            tel.out_bytes[i] += out_bytes[i]

    def _drain_table(self) -> None:
        """The C table's per-(app, event) statistics into this interval's."""
        if self._table is not None and self.stats_on:
            merge_rows(self.telemetry.stats, self._table.drain())

    def _produce(self, produce: Callable[..., None], topic: str, partition: int, value: bytes,
                 key: Any, headers: Any, ts: int) -> None:
        # produce(topic, value, key, partition, on_delivery, callback, timestamp, headers);
        # timestamp 0: the producer's clock.
        ts = max(ts, 0)
        while True:
            try:
                produce(topic, value, key, partition, None, None, ts, headers)
                return
            except BufferError:
                # Producer queue full: let it drain until there is room.
                assert self.producer is not None
                self.producer.poll(0.05)

    @staticmethod
    def _source_headers(m: Any, why: str, version: int) -> list[tuple[str, bytes]]:
        return [("error", why.encode()), ("source-topic", m.topic().encode()),
                ("source-partition", str(m.partition()).encode()),
                ("source-offset", str(m.offset()).encode()),
                ("rules-version", str(version).encode())]

    def _consumer_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._PARTITION_EOF:
            return
        if err.fatal():
            raise KafkaException(err)
        log.warning("worker %d consumer error: %s", self.index, err)

    # -- acknowledgements and commits -------------------------------------

    def _settle(self) -> None:
        """Act on delivery errors; checkpoint on interval."""
        if self.checkpoints.failures:
            self._on_failures()
        now = time.monotonic()
        if now - self._last_commit >= self.cfg.kafka.commit_interval_ms / 1000:
            self._last_commit = now
            if self.checkpoints.dirty:
                self._checkpoint(asynchronous=True, timeout_s=30.0)

    def _checkpoint(self, asynchronous: bool, timeout_s: float) -> bool:
        """Flush the producer; if every output produced so far was
        acknowledged, commit what was consumed before them. False: nothing
        committed (outputs still unacknowledged, or a delivery error)."""
        assert self.producer is not None and self.consumer is not None
        ck = self.checkpoints
        offsets = ck.pending()  # before the flush: its outputs are all queued
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = self.producer.flush(max(0.0, deadline - time.monotonic()))
            if ck.failures:
                if not self._on_failures():
                    return False  # rewound: those offsets are not safe
                continue  # outputs moved to the DLQ: flush them too
            if remaining:
                log.warning("worker %d: %d outputs still unacknowledged after %.0fs; their "
                            "inputs stay uncommitted", self.index, remaining, timeout_s)
                return False
            break
        if not offsets:
            return True
        return self._commit(offsets, asynchronous)

    def _on_failures(self) -> bool:
        """Delivery errors: an output the broker refuses for good goes to the
        DLQ; any other error rewinds the partitions to their last commit.
        True when nothing had to be rewound."""
        assert self.producer is not None
        transient: Counter[tuple[str, str]] = Counter()
        for err, msg in self.checkpoints.take_failures():
            topic = msg.topic()
            if err.retriable() or err.code() == KafkaError._MSG_TIMED_OUT \
                    or topic == self.cfg.topics.dlq:
                transient[(topic, str(err))] += 1
                continue
            # Permanent for this topic (e.g. too large): keep it in the DLQ.
            log.error("worker %d: output to %s failed permanently (%s); sending to %s",
                      self.index, topic, err, self.cfg.topics.dlq)
            headers = None
            decider = self.holder.decider
            if topic in self.topics and decider is not None:
                headers = decider.headers_for(msg.value(), self.topics.index(topic))
            headers = [("error", b"produce_failed"), ("error-detail", str(err).encode()),
                       ("target-topic", topic.encode())] + list(headers or [])
            self._produce(self.producer.produce, self.cfg.topics.dlq, -1, msg.value(),
                          msg.key(), headers, msg.timestamp()[1])
        if transient:
            for (topic, err), n in sorted(transient.items()):
                log.warning("worker %d: %d deliveries to %s failed (%s)", self.index, n, topic, err)
            self._rewind()
        return not transient

    def _rewind(self) -> None:
        """Consume every partition again from its last commit: the outputs
        of a failed delivery are produced again (duplicates, never loss)."""
        assert self.consumer is not None
        time.sleep(_RETRY_BACKOFF_S)
        targets = self.checkpoints.rewind_targets()
        assigned = {tp.partition for tp in self.consumer.assignment()}
        done: dict[int, int] = {}
        for p, offset in targets.items():
            if p not in assigned:
                continue
            try:
                self.consumer.seek(TopicPartition(self.input_topic, p, offset))
                done[p] = offset
            except KafkaException as e:
                # Not fetching it yet: the next failure or rebalance retries.
                log.warning("worker %d: rewind of partition %d failed: %s", self.index, p, e)
        self.checkpoints.rewound(done)
        log.warning("worker %d: rewound partitions %s to their last commit", self.index,
                    sorted(done.items()))

    def _commit(self, offsets: dict[int, int], asynchronous: bool) -> bool:
        assert self.consumer is not None
        tps = [TopicPartition(self.input_topic, p, o) for p, o in offsets.items()]
        try:
            if asynchronous:
                self.consumer.commit(offsets=tps, asynchronous=True)
            else:
                # A synchronous commit reports errors per partition.
                failed = [tp for tp in self.consumer.commit(offsets=tps, asynchronous=False)
                          if tp.error is not None]
                if failed:
                    log.warning("worker %d: commit failed for %s", self.index,
                                [(tp.partition, str(tp.error)) for tp in failed])
                    self.checkpoints.mark_committed(offsets)
                    self.checkpoints.commit_failed([tp.partition for tp in failed])
                    return False
        except KafkaException as e:
            # Not fatal: the offsets are safe and are committed next time;
            # a partition we lost is consumed again by its new owner.
            log.warning("worker %d: commit failed: %s", self.index, e)
            self.checkpoints.mark_committed(offsets)
            self.checkpoints.commit_failed(list(offsets))
            return False
        self.checkpoints.mark_committed(offsets)
        return True

    def _on_commit(self, err: Any, partitions: list[TopicPartition]) -> None:
        failed = [tp.partition for tp in partitions if tp.error is not None]
        if err is not None or failed:
            # Sent again at the next checkpoint; the offsets are still safe.
            self.checkpoints.commit_failed(failed or [tp.partition for tp in partitions])
            if err is None or err.code() != KafkaError._NO_OFFSET:
                log.warning("worker %d: async commit failed: %s", self.index, err or failed)

    # -- rebalance ---------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("worker %d assigned %s", self.index, sorted(p.partition for p in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Before partitions go: finish their outputs and commit what is safe."""
        self._checkpoint(asynchronous=False, timeout_s=30.0)
        self.checkpoints.forget({p.partition for p in partitions})
        log.info("worker %d revoked %s", self.index, sorted(p.partition for p in partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Already owned by someone else: committing would fail; they re-consume
        # from the last commit (duplicates, never loss).
        self.checkpoints.forget({p.partition for p in partitions})
        log.warning("worker %d lost %s", self.index, sorted(p.partition for p in partitions))


class FailedOutput:
    """A failed delivery of the fast path's producer, with the methods of the
    confluent_kafka.Message that _on_failures reads."""

    __slots__ = ("_topic", "_partition", "_value", "_key", "_ts")

    def __init__(self, topic: str, partition: int, value: bytes | None, key: bytes | None,
                 ts: int) -> None:
        self._topic, self._partition, self._value, self._key, self._ts = (
            topic, partition, value, key, ts)

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)  # TIMESTAMP_CREATE_TIME


def worker_main(cfg: GateConfig, index: int, conn: Any, counters: Any, rate_share: float,
                telemetry: Any = None) -> None:
    """Entry point of a worker process (spawned by the pool)."""
    from ..logs import setup_logging

    setup_logging(cfg.log_level, cfg.log_format)
    worker = Worker(cfg, index, conn, counters, rate_share, telemetry)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides on Ctrl-C
    worker.run()
