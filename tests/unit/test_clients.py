"""librdkafka settings: the lossless contract cannot be overridden, the
rest can (kafka.consumer / kafka.producer come last)."""

from __future__ import annotations

from etl_gate.config import GateConfig, KafkaConfig
from etl_gate.kafka.clients import consumer_config, producer_config


def _cfg(**kafka: object) -> GateConfig:
    return GateConfig(kafka=KafkaConfig(**kafka))


def test_consumer_defaults_bound_the_prefetch_and_never_auto_commit() -> None:
    conf = consumer_config(GateConfig(), 1)
    assert conf["queued.max.messages.kbytes"] == 8192
    assert conf["enable.auto.commit"] is False and conf["enable.auto.offset.store"] is False
    assert conf["client.id"] == "etl-gate-w1"


def test_user_settings_win_except_the_contract() -> None:
    conf = consumer_config(_cfg(consumer={"queued.max.messages.kbytes": 65536,
                                          "enable.auto.commit": True}), 0)
    assert conf["queued.max.messages.kbytes"] == 65536
    assert conf["enable.auto.commit"] is False
    prod = producer_config(_cfg(producer={"linger.ms": 20, "enable.idempotence": False,
                                          "acks": 1}), 0)
    assert prod["linger.ms"] == 20
    assert prod["enable.idempotence"] is True and prod["acks"] == "all"


def test_nagle_is_off_unless_the_user_turns_it_back_on() -> None:
    # Kafka's Java clients always set TCP_NODELAY; librdkafka's default leaves Nagle on.
    assert consumer_config(GateConfig(), 0)["socket.nagle.disable"] is True
    assert producer_config(GateConfig(), 0)["socket.nagle.disable"] is True
    assert producer_config(_cfg(producer={"socket.nagle.disable": False}), 0)[
        "socket.nagle.disable"] is False
