"""The dump's Kafka loop: consume priority topics, roll Parquet files, commit.

At-least-once like the gate's worker (manual commits, no auto offset store),
plus the rule that makes a replay harmless: an offset is committed only after
the files holding it are durable and published, and only at a roll's end.

Per roll: (1) the roll's temporary files are closed and fsynced
(``FileGroup.roll``); (2) the roll is journaled (``journal.py``); (3) each
file is renamed to ``dt=/hour=/part-<topic>-<partition>-<first>-<last>.parquet``;
(4) ``last + 1`` is committed, synchronously. A crash before (4) leaves
published files whose offsets will be consumed again; on assignment the
journal names them and they are deleted before consuming, so every event is
in the dump exactly once. Rebalances: on revoke, the revoked partitions'
open files are rolled, published and committed before they go; on loss
(another consumer already owns them) they are dropped unpublished.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from ..config import GateConfig
from ..core import PRIORITIES
from ..kafka.clients import consumer_config
from .fs import Storage
from .janitor import Janitor, JanitorReport
from .journal import Journal
from .layout import Layout
from .metrics import DumpMetrics
from .schema import FieldPaths, MessageLike, RowExtractor
from .writer import FileGroup, RolledGroup, WriterSettings

log = logging.getLogger(__name__)

MIB = 1 << 20
TP = tuple[str, int]
_COMMIT_RETRY_S = 1.0


def dump_consumer_config(cfg: GateConfig, priorities: Sequence[str]) -> dict[str, Any]:
    """The gate's consumer settings (manual commits, fetch tuning, user
    overrides) with the dump's own group and client id."""
    conf = consumer_config(cfg, 0)
    tag = "-".join(priorities)
    conf["group.id"] = cfg.dump.group_id
    conf["client.id"] = f"etl-gate-dump-{tag}"
    if cfg.kafka.instance_id:
        conf["group.instance.id"] = f"{cfg.kafka.instance_id}-dump-{tag}"
    return conf


def _incremental(conf: dict[str, Any]) -> bool:
    """Whether the group hands out partitions incrementally (cooperative or
    the KIP-848 protocol): then on_assign must use incremental_assign."""
    return ("cooperative" in str(conf.get("partition.assignment.strategy", ""))
            or str(conf.get("group.protocol", "classic")) == "consumer")


class Dumper:
    def __init__(self, cfg: GateConfig, priorities: Sequence[str], storage: Storage, *,
                 metrics: DumpMetrics | None = None, janitor_dry_run: bool | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        d = cfg.dump
        self.cfg = cfg
        self.priorities = list(priorities)
        self.storage = storage
        self.metrics = metrics if metrics is not None else DumpMetrics()
        self.clock, self.wall = clock, wall
        topics = cfg.topics.priority_topics
        self.priority_of = {topics[PRIORITIES.index(p)]: p for p in self.priorities}
        self.layouts = {t: Layout(storage, p) for t, p in self.priority_of.items()}
        self.journal = Journal(self.layouts)
        self.paths = FieldPaths(cfg.fields.app, cfg.fields.event, d.user_id_field,
                                d.device_id_field, cfg.fields.time)
        self.settings = {p: WriterSettings(int(d.roll_mb * MIB), d.roll_seconds_for(p),
                                           int(d.row_group_mb * MIB), d.compression)
                         for p in self.priorities}
        ttl = cfg.ttl_days
        self.janitor = Janitor(storage, {"P0": ttl.P0, "P1": ttl.P1, "P2": ttl.P2},
                               dry_run=d.janitor_dry_run if janitor_dry_run is None
                               else janitor_dry_run, clock=wall, metrics=self.metrics)
        self.janitor_interval = d.janitor_interval_s
        self.conf = dump_consumer_config(cfg, self.priorities)
        self.consumer: Consumer | None = None
        self.running = True
        self.closing = False  # in consumer.close(): callbacks must not start work
        self.assigned: set[TP] = set()
        self.groups: dict[TP, FileGroup] = {}  # open rolls
        self.uncommitted: dict[TP, list[RolledGroup]] = {}  # published, commit not acknowledged
        self._retry_commit_at = 0.0
        self._next_janitor = 0.0
        self.consumed = 0
        self.totals = {"events": 0, "input_bytes": 0, "rolls": 0, "files": 0, "rows": 0,
                       "parquet_bytes": 0, "unparsed": 0, "time_fallbacks": 0,
                       "uncommitted_files_deleted": 0, "commit_failures": 0}
        self.janitor_reports: list[JanitorReport] = []

    def stop(self, *_: Any) -> None:
        self.running = False

    # -- lifecycle ---------------------------------------------------------

    def run(self, max_events: int = 0) -> dict[str, int]:
        """Consume until stopped (or ``max_events`` consumed); returns totals."""
        self.consumer = Consumer(self.conf)
        topics = sorted(self.priority_of)
        self.consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        log.info("dump %s: consuming %s into %s (group %s)", ",".join(self.priorities),
                 ",".join(topics), self.storage.root, self.conf["group.id"])
        ok = False
        try:
            self._loop(max_events)
            ok = True
        finally:
            self._shutdown(ok)
        return self.totals

    def _loop(self, max_events: int) -> None:
        assert self.consumer is not None
        consume = self.consumer.consume
        batch_size = self.cfg.kafka.batch_size
        timeout = max(self.cfg.kafka.batch_timeout_ms, 1) / 1000.0
        while self.running:
            msgs = consume(batch_size, timeout)
            rolled = self._add_batch(msgs) if msgs else []
            now = self.clock()
            rolled += [self._roll(tp, "age") for tp, g in list(self.groups.items()) if g.old(now)]
            if rolled:
                self._publish(rolled)
            if rolled or (self._has_uncommitted() and now >= self._retry_commit_at):
                self._commit()
            if self.janitor_interval > 0 and now >= self._next_janitor:
                self._next_janitor = now + self.janitor_interval
                self.run_janitor()
            if max_events and self.consumed >= max_events:
                log.info("dump: %d events consumed; stopping", self.consumed)
                break

    def _shutdown(self, ok: bool) -> None:
        """Clean stop: publish and commit what is open. After an error: drop the
        open rolls unpublished (their offsets are consumed again)."""
        try:
            if ok:
                rolled = [self._roll(tp, "shutdown") for tp in list(self.groups)]
                self._publish(rolled)
                for _ in range(5):
                    self._commit()
                    if not self._has_uncommitted():
                        break
                    time.sleep(_COMMIT_RETRY_S)
            else:
                self._abort(set(self.groups))
        finally:
            if self.consumer is not None:
                self.closing = True
                self.consumer.close()  # may call on_revoke: nothing is open any more
            self._set_open_files()
            log.info("dump stopped: %s", self.totals)

    # -- per batch ---------------------------------------------------------

    def _add_batch(self, msgs: list[Any]) -> list[RolledGroup]:
        by_tp: dict[TP, list[MessageLike]] = {}
        for m in msgs:
            err = m.error()
            if err is not None:
                self._consumer_error(err)
                continue
            tp = (m.topic(), m.partition())
            batch = by_tp.get(tp)
            if batch is None:
                batch = by_tp[tp] = []
            batch.append(m)
        now_ms = int(self.wall() * 1000)
        rolled: list[RolledGroup] = []
        for tp, batch in by_tp.items():
            if tp not in self.assigned:
                continue  # fetched before a revoke: its new owner consumes it from the commit
            i, n = 0, len(batch)
            while i < n:
                group = self._group(tp)
                j = group.room(batch, i)
                group.add(batch[i:j], now_ms)
                i = j
                if group.full:
                    rolled.append(self._roll(tp, "size"))
            self.consumed += n
        self._set_open_files()
        return rolled

    def _group(self, tp: TP) -> FileGroup:
        group = self.groups.get(tp)
        if group is None:
            prio = self.priority_of[tp[0]]
            group = self.groups[tp] = FileGroup(
                self.layouts[tp[0]], RowExtractor(self.paths, tp[0], tp[1], prio),
                self.settings[prio], self.clock())
        return group

    def _consumer_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._PARTITION_EOF:
            return
        if err.fatal():
            raise KafkaException(err)
        log.warning("dump consumer error: %s", err)

    # -- roll, publish, commit --------------------------------------------

    def _roll(self, tp: TP, reason: str) -> RolledGroup:
        group = self.groups.pop(tp)
        rolled = group.roll(reason)
        prio = self.priority_of[tp[0]]
        m, t = self.metrics, self.totals
        m.events.labels(prio).inc(group.rows)
        m.input_bytes.labels(prio).inc(group.raw_bytes)
        m.unparsed.labels(prio).inc(group.unparsed)
        m.time_fallbacks.labels(prio).inc(group.time_fallbacks)
        t["events"] += group.rows
        t["input_bytes"] += group.raw_bytes
        t["unparsed"] += group.unparsed
        t["time_fallbacks"] += group.time_fallbacks
        return rolled

    def _publish(self, rolled: list[RolledGroup]) -> None:
        """Journal, then rename into place; a partition's rolls stay
        ``uncommitted`` (and journaled) until a commit covers them."""
        by_tp: dict[TP, list[RolledGroup]] = {}
        for g in rolled:
            by_tp.setdefault((g.topic, g.partition), []).append(g)
        for tp, groups in by_tp.items():
            pending = self.uncommitted.setdefault(tp, [])
            self.journal.record(tp[0], tp[1], pending + groups)
            prio = self.priority_of[tp[0]]
            for g in groups:
                for f in g.files:
                    self.storage.publish(f.temp, f.final)
                pending.append(g)
                self._count_roll(prio, g)

    def _count_roll(self, prio: str, g: RolledGroup) -> None:
        m, t = self.metrics, self.totals
        m.rolls.labels(prio, g.reason).inc()
        m.files.labels(prio).inc(len(g.files))
        m.parquet_bytes.labels(prio).inc(g.parquet_bytes)
        t["rolls"] += 1
        t["files"] += len(g.files)
        t["rows"] += g.rows
        t["parquet_bytes"] += g.parquet_bytes
        log.info("%s %s[%d] offsets %d..%d: %d row(s) in %d file(s), %.1f MB (%s)", prio, g.topic,
                 g.partition, g.first, g.last, g.rows, len(g.files), g.parquet_bytes / 1e6, g.reason)

    def _has_uncommitted(self) -> bool:
        return any(self.uncommitted.values())

    def _commit(self) -> None:
        """Commit every published roll's end, synchronously."""
        assert self.consumer is not None
        offsets = [TopicPartition(t, p, groups[-1].last + 1)
                   for (t, p), groups in self.uncommitted.items() if groups]
        if not offsets:
            return
        try:
            result = self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as e:
            self._commit_failed(str(e))
            return
        failed = []
        for tp in result or []:
            if tp.error is None:
                self.uncommitted[(tp.topic, tp.partition)] = []
            else:
                failed.append(f"{tp.topic}[{tp.partition}]: {tp.error}")
        if failed:
            self._commit_failed("; ".join(failed))

    def _commit_failed(self, why: str) -> None:
        # The files are published and journaled: retried shortly; if this
        # process dies first, the next owner deletes and rewrites them.
        self.metrics.commit_failures.inc()
        self.totals["commit_failures"] += 1
        self._retry_commit_at = self.clock() + _COMMIT_RETRY_S
        log.warning("dump: commit failed (%s); retrying", why)

    def _abort(self, tps: set[TP]) -> None:
        for tp in tps:
            group = self.groups.pop(tp, None)
            if group is not None:
                group.abort()

    def _set_open_files(self) -> None:
        for prio in self.priorities:
            n = sum(len(g.files) for tp, g in self.groups.items() if self.priority_of[tp[0]] == prio)
            self.metrics.open_files.labels(prio).set(n)

    # -- janitor -----------------------------------------------------------

    def active_hours(self, priority: str) -> set[int]:
        """Hour partitions this process is writing for ``priority``."""
        out: set[int] = set()
        for tp, g in self.groups.items():
            if self.priority_of[tp[0]] == priority:
                out |= g.hours
        return out

    def run_janitor(self) -> list[JanitorReport]:
        # In the consuming thread, between batches: the active set cannot change under it.
        reports = []
        for prio in self.priorities:
            try:
                reports.append(self.janitor.run(prio, self.active_hours(prio)))
            except OSError as e:
                log.error("janitor %s failed: %s", prio, e)
        self.janitor_reports = reports
        return reports

    # -- rebalance ---------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Before consuming a partition: clean what an earlier owner left
        (temporary files, published but uncommitted rolls)."""
        # Cooperative groups call this with no partitions too, also from
        # close(); committed([]) would block until its timeout.
        if not partitions or self.closing:
            self._assign(consumer, partitions)
            return
        starts = self._committed(consumer, partitions)
        for tp in starts:
            low = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition),
                                                 timeout=30)[0]
            committed = tp.offset if tp.offset >= 0 else None
            plan, deleted = self.journal.recover(tp.topic, tp.partition, committed, low)
            if plan.start is not None:
                tp.offset = plan.start
            if deleted:
                self.metrics.recovered.labels(self.priority_of[tp.topic]).inc(deleted)
                self.totals["uncommitted_files_deleted"] += deleted
            self.assigned.add((tp.topic, tp.partition))
        self._assign(consumer, starts)
        log.info("dump assigned %s", sorted((t.topic, t.partition) for t in partitions))

    def _assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if _incremental(self.conf):
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)

    @staticmethod
    def _committed(consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        for attempt in range(6):  # about a minute, then the process fails and restarts
            try:
                got = consumer.committed(partitions, timeout=10)
                bad = [tp for tp in got if tp.error is not None]
                if not bad:
                    return list(got)
                err: Any = bad[0].error
            except KafkaException as e:
                err = e
            # A coordinator that is still loading (NOT_COORDINATOR) answers soon.
            log.warning("dump: reading committed offsets failed (%s); retrying", err)
            time.sleep(min(0.25 * (attempt + 1), 2.0))
        raise RuntimeError("dump: could not read the committed offsets of its partitions")

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Before partitions go: publish and commit their open rolls."""
        tps = {(p.topic, p.partition) for p in partitions}
        try:
            rolled = [self._roll(tp, "revoke") for tp in tps if tp in self.groups]
            self._publish(rolled)
            self._commit()
        finally:
            self._forget(tps)
        log.info("dump revoked %s", sorted(tps))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Already someone else's: committing would fail, publishing would race
        # the new owner. Drop the open rolls; the new owner replays them.
        tps = {(p.topic, p.partition) for p in partitions}
        self._abort(tps & set(self.groups))
        self._forget(tps)
        log.warning("dump lost %s", sorted(tps))

    def _forget(self, tps: set[TP]) -> None:
        self._abort(tps & set(self.groups))
        for tp in tps:
            self.assigned.discard(tp)
            self.uncommitted.pop(tp, None)
        self._set_open_files()
