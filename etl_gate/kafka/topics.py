"""``etl-gate topics``: create the gate's topics, idempotently.

Priority topics get ``retention.ms`` from their priority's TTL (SPEC section 5).
An existing topic is left as it is (its retention is reported, not changed)."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from ..config import GateConfig
from .clients import admin_config

log = logging.getLogger(__name__)
DAY_MS = 86_400_000


def topic_plan(cfg: GateConfig) -> list[NewTopic]:
    t = cfg.topics
    parts, rf = t.partitions, t.replication_factor
    plan = [NewTopic(cfg.kafka.input_topic, parts, rf)]
    for prio, name in enumerate(t.priority_topics):
        plan.append(NewTopic(name, parts, rf,
                             config={"retention.ms": str(cfg.ttl_days.days(prio) * DAY_MS)}))
    plan.append(NewTopic(t.dlq, parts, rf))
    if t.quarantine:
        plan.append(NewTopic(t.quarantine, parts, rf))
    if cfg.observe.stats_topic:
        plan.append(NewTopic(cfg.observe.stats_topic, 1, rf))  # low volume; one partition
    return plan


def create_topics(cfg: GateConfig, timeout_s: float = 30.0) -> dict[str, str]:
    """Create missing topics; returns topic -> 'created' | 'exists'."""
    admin = AdminClient(admin_config(cfg))
    result: dict[str, str] = {}
    futures = admin.create_topics(topic_plan(cfg), request_timeout=timeout_s)
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
            result[name] = "created"
        except KafkaException as e:
            if e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                result[name] = "exists"
            else:
                raise
    return result
