"""Producing generated events to a topic (``etl-gate gen --topic``), paced."""

from __future__ import annotations

import time
from collections.abc import Iterable

from confluent_kafka import Producer

from ..config import GateConfig
from .clients import producer_config


def produce_events(cfg: GateConfig, topic: str, events: Iterable[tuple[bytes, bytes, int]],
                   rate: float = 0.0) -> int:
    """Produce (payload, key, timestamp ms) tuples; ``rate`` events/s (0: flat out).

    The Kafka timestamp is the event time, so the gate's rate caps (which run
    on the input timestamp) see the same clock as ``replay`` does.
    """
    producer = Producer(producer_config(cfg, "gen"))
    errors: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    n = 0
    started = time.monotonic()
    for payload, key, ts in events:
        while True:
            try:
                producer.produce(topic, payload, key, timestamp=ts, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        n += 1
        if rate and n % 100 == 0:
            ahead = n / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        if n % 10_000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    if remaining or errors:
        raise RuntimeError(f"gen: {remaining} events undelivered, {len(errors)} errors "
                           f"(first: {errors[:1]})")
    return n
