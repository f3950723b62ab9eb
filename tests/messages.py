"""Consumed messages for unit tests of the worker loop and its telemetry.

Real confluent-kafka ``Message`` objects where the installed client can build
them (``Message(...)`` came with confluent-kafka 2.13). Older clients, such as
the 2.12 that the ``bench`` extra's quixstreams pins, refuse ("cannot create
'cimpl.Message' instances"); there bench/core_bench.py's stand-in, which has
the same accessors, is used. The loop under test only calls those accessors,
so both give the same result (tests/unit/test_message_stand_in.py).
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, Message

from tests.checkout import bench_module

StandInMessage = bench_module("core_bench").StandInMessage

__all__ = ["REAL_MESSAGES", "StandInMessage", "message"]


def _client_builds_messages() -> bool:
    try:
        Message(topic="t")
    except TypeError:
        return False
    return True


REAL_MESSAGES = _client_builds_messages()


def message(topic: str | None = None, partition: int = -1, offset: int = -1, value: bytes | None = None,
            key: bytes | None = None, timestamp: tuple[int, int] = (TIMESTAMP_NOT_AVAILABLE, 0),
            error: KafkaError | None = None, real: bool = REAL_MESSAGES) -> Any:
    """A consumed message: a real ``Message`` if this client can build one
    (``real=False``: the stand-in in any case)."""
    if real:
        return Message(topic=topic, partition=partition, offset=offset, value=value, key=key,
                       timestamp=timestamp, error=error)
    return StandInMessage(topic, partition, offset, key, value, timestamp, error)
