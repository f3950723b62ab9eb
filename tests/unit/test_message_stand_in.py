"""tests/messages.py: its stand-in answers every accessor the worker reads as a
real confluent-kafka Message does, so the loop tests mean the same on clients
that cannot build Messages (< 2.13, e.g. the ``bench`` extra's pin)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, Message

from tests.messages import REAL_MESSAGES, StandInMessage, message

ACCESSORS = ("topic", "partition", "offset", "key", "value", "timestamp", "headers", "error")
CASES = [
    {},  # what the telemetry test uses for "no timestamp"
    {"topic": "events.raw", "partition": 3, "offset": 41, "value": b"{}", "key": b"k",
     "timestamp": (1, 1_700_000_000_000)},
    {"topic": "events.raw", "partition": 5, "offset": 999, "error": KafkaError(KafkaError._TRANSPORT)},
]


def _answers(m: object) -> list[object]:
    out = []
    for name in ACCESSORS:
        v = getattr(m, name)()
        out.append(v.code() if isinstance(v, KafkaError) else v)
    return out


@pytest.mark.skipif(not REAL_MESSAGES, reason="this confluent-kafka cannot construct Message objects")
@pytest.mark.parametrize("kw", CASES)
def test_the_stand_in_answers_as_a_real_message(kw: dict) -> None:
    real, stand_in = message(**kw, real=True), message(**kw, real=False)
    assert isinstance(real, Message) and isinstance(stand_in, StandInMessage)
    assert _answers(stand_in) == _answers(real)


def test_the_helper_builds_what_the_client_allows() -> None:
    m = message(topic="t", partition=1, offset=2, value=b"v", timestamp=(1, 5))
    assert isinstance(m, Message if REAL_MESSAGES else StandInMessage)
    assert (m.topic(), m.partition(), m.offset(), m.value(), m.timestamp(), m.error()) == \
        ("t", 1, 2, b"v", (1, 5), None)
