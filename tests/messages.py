"""Consumed messages for unit tests of the worker loop and its telemetry.

Real confluent-kafka ``Message`` objects where the installed client can build
them (``Message(...)`` came with confluent-kafka 2.13). Older clients, such as
the 2.12 that the ``bench`` extra's quixstreams pins, refuse ("cannot create
'cimpl.Message' instances"); there a stand-in with the same accessors is used.
The loop under test only calls those accessors, so both give the same result.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, Message


class StandInMessage:
    """What the worker reads of a consumed ``Message``, for clients that
    cannot construct one."""

    __slots__ = ("_topic", "_partition", "_offset", "_key", "_value", "_timestamp", "_error")

    def __init__(self, topic: str | None, partition: int, offset: int, key: bytes | None,
                 value: bytes | None, timestamp: tuple[int, int], error: KafkaError | None) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value, self._timestamp, self._error = key, value, timestamp, error

    def topic(self) -> str | None:
        return self._topic

    # A real Message answers None for an unset (negative) partition or offset.
    def partition(self) -> int | None:
        return self._partition if self._partition >= 0 else None

    def offset(self) -> int | None:
        return self._offset if self._offset >= 0 else None

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp

    def headers(self) -> None:
        return None

    def error(self) -> KafkaError | None:
        return self._error


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
