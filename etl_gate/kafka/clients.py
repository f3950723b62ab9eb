"""librdkafka settings for the gate's consumers, producers and admin clients.

The gate's at-least-once contract lives here as much as in the worker: offsets
are never auto-committed (the worker commits what its ledger proves safe) and
the producer is idempotent, so librdkafka's own retries keep order and add no
duplicates. User settings in ``kafka.consumer`` / ``kafka.producer`` come last
and win, except the ones the contract depends on.
"""

from __future__ import annotations

from typing import Any

from ..config import GateConfig

# Settings a user may not override: they are what makes the worker lossless.
_CONSUMER_FIXED = {"enable.auto.commit": False, "enable.auto.offset.store": False}
_PRODUCER_FIXED = {"enable.idempotence": True, "acks": "all"}
# TCP_NODELAY, as Kafka's Java clients always set it: librdkafka leaves Nagle on
# by default, which can hold a small request behind the ACK of the one before.
# At 147k events/s the gate's p99 was 28-51 ms with it off (median of 8 runs
# 34.5) against 29-148 ms (42) with librdkafka's default, at the same CPU and
# throughput (bench/RESULTS.md, 2026-12-07 16:15-16:41): a small effect, inside
# the noise of this shared host, at no measured cost.
_SOCKET = {"socket.nagle.disable": True}


def consumer_config(cfg: GateConfig, worker: int) -> dict[str, Any]:
    k = cfg.kafka
    conf: dict[str, Any] = {
        "bootstrap.servers": k.bootstrap_servers,
        "group.id": k.group_id,
        "client.id": f"etl-gate-w{worker}",
        "auto.offset.reset": "earliest",
        "session.timeout.ms": k.session_timeout_ms,
        # A member learns of a rebalance at its next heartbeat: until then the
        # partitions stay where they were. At start the first worker to join
        # holds every partition until its siblings' joins reach it (2 s of one
        # worker with the 2,000 ms this was; bench/RESULTS.md 2026-12-07 23:36),
        # and so does every rebalance when an instance joins. Heartbeats are
        # tiny requests: two a second per worker.
        "heartbeat.interval.ms": max(100, min(500, k.session_timeout_ms // 5)),
        # Fetch in big chunks: the worker consumes in batches of batch_size.
        "fetch.min.bytes": 1,
        # The broker answers a fetch as soon as there is data (fetch.min.bytes
        # 1); this only bounds how long an idle fetch waits.
        "fetch.wait.max.ms": 100,
        # The prefetch queue: 8 MiB is ~150 ms of a worker's input flat out,
        # ample for a fetch round trip; librdkafka's 64 MiB only made the
        # worker ~50 MiB bigger, no faster (bench/RESULTS.md, 13:00-13:10).
        "queued.max.messages.kbytes": 8192,
        # librdkafka's default 1000 ms pause after the prefetch queue fills
        # caps a reader at ~200k msg/s although the queue drains far sooner
        # (bench/RESULTS.md: 278k -> 532k msg/s for a passthrough).
        "fetch.queue.backoff.ms": 10,
        "log_level": 3,
        **_SOCKET,
    }
    if k.instance_id:
        conf["group.instance.id"] = f"{k.instance_id}-w{worker}"
    conf.update(k.consumer)
    conf.update(_CONSUMER_FIXED)
    return conf


def producer_config(cfg: GateConfig, worker: int | str) -> dict[str, Any]:
    k = cfg.kafka
    conf: dict[str, Any] = {
        "bootstrap.servers": k.bootstrap_servers,
        "client.id": f"etl-gate-w{worker}",
        "linger.ms": k.linger_ms,
        "compression.type": k.compression,
        "batch.size": 1_000_000,
        # Bounded queue: a slow broker stops the consume loop (BufferError),
        # it does not grow the worker's memory without limit.
        "queue.buffering.max.messages": 200_000,
        "queue.buffering.max.kbytes": 262_144,
        "message.timeout.ms": 300_000,
        "log_level": 3,
        **_SOCKET,
    }
    conf.update(k.producer)
    conf.update(_PRODUCER_FIXED)
    return conf


def admin_config(cfg: GateConfig) -> dict[str, Any]:
    return {"bootstrap.servers": cfg.kafka.bootstrap_servers, "log_level": 3}
