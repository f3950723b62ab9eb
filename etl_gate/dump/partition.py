"""Event time to Hive partition (``dt=YYYY-MM-DD/hour=HH``, UTC), and back. Pure.

A partition is named by its hour index: whole hours since the epoch, so
``hour_index(ms) * HOUR_MS`` is the partition's first millisecond.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
# datetime (and most readers) stop at year 9999; an event time past it is not
# a time anybody meant, so it falls back like a missing one.
MAX_TIME_MS = 253_402_300_800_000  # 10000-01-01T00:00:00Z

_DT = re.compile(r"^dt=(\d{4})-(\d{2})-(\d{2})$")
_HOUR = re.compile(r"^hour=(\d{2})$")


def usable_time(ms: int | None) -> int | None:
    """``ms`` if it can name a partition, else None."""
    return ms if ms is not None and 0 <= ms < MAX_TIME_MS else None


def partition_time_ms(event_ms: int | None, kafka_ms: int, now_ms: int) -> int:
    """The time a row is partitioned by: its event time (already checked with
    ``usable_time``), else the Kafka timestamp, else (a message without a
    timestamp, which no current broker sends) the dump's own clock."""
    if event_ms is not None:
        return event_ms
    if 0 <= kafka_ms < MAX_TIME_MS:
        return kafka_ms
    return now_ms


def hour_index(ms: int) -> int:
    return ms // HOUR_MS


@lru_cache(maxsize=8192)
def hour_dir(index: int) -> str:
    """``dt=YYYY-MM-DD/hour=HH`` of an hour index."""
    t = datetime.fromtimestamp(index * 3600, tz=UTC)
    return f"dt={t:%Y-%m-%d}/hour={t:%H}"


def parse_dt(name: str) -> int | None:
    """Hour index of 00:00 of a ``dt=YYYY-MM-DD`` folder name; None if it is not one."""
    m = _DT.match(name)
    if not m:
        return None
    try:
        day = datetime(int(m[1]), int(m[2]), int(m[3]), tzinfo=UTC)
    except ValueError:
        return None
    return int(day.timestamp()) // 3600


def parse_hour(name: str) -> int | None:
    """0..23 from an ``hour=HH`` folder name; None if it is not one."""
    m = _HOUR.match(name)
    if not m or int(m[1]) > 23:
        return None
    return int(m[1])
