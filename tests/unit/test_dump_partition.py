"""Event time -> dt/hour (SPEC 5): seconds or milliseconds, UTC, Kafka-timestamp fallback."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from etl_gate.core.fields import event_time_ms
from etl_gate.dump.partition import (
    HOUR_MS,
    MAX_TIME_MS,
    hour_dir,
    hour_index,
    parse_dt,
    parse_hour,
    partition_time_ms,
    usable_time,
)


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


def partition_of(event_time: object, kafka_ms: int = -1, now_ms: int = 0) -> str:
    t = usable_time(event_time_ms(event_time))
    return hour_dir(hour_index(partition_time_ms(t, kafka_ms, now_ms)))


def test_seconds_and_milliseconds_name_the_same_hour() -> None:
    t = ms(2026, 11, 21, 22, 15, 30)
    assert partition_of(t) == partition_of(t // 1000) == partition_of(t / 1000) \
        == "dt=2026-11-21/hour=22"


def test_hour_boundaries_are_utc() -> None:
    assert partition_of(ms(2026, 11, 21, 23, 59, 59) + 999) == "dt=2026-11-21/hour=23"
    assert partition_of(ms(2026, 11, 22, 0, 0, 0)) == "dt=2026-11-22/hour=00"
    assert partition_of(0) == "dt=1970-01-01/hour=00"


@pytest.mark.parametrize("bad", [None, "1763762400", True, -5, float("nan"), {"t": 1}, [1]])
def test_missing_or_invalid_event_time_falls_back_to_the_kafka_timestamp(bad: object) -> None:
    kafka = ms(2026, 1, 2, 3, 4, 5)
    assert partition_of(bad, kafka) == "dt=2026-01-02/hour=03"


def test_event_time_past_year_9999_falls_back() -> None:
    assert usable_time(MAX_TIME_MS) is None and usable_time(MAX_TIME_MS - 1) == MAX_TIME_MS - 1
    assert partition_of(10**16, ms(2026, 5, 6, 7)) == "dt=2026-05-06/hour=07"


def test_no_kafka_timestamp_uses_the_dump_clock() -> None:
    now = ms(2027, 3, 4, 5, 6)
    assert partition_time_ms(None, -1, now) == now
    assert partition_of(None, -1, now) == "dt=2027-03-04/hour=05"


def test_event_time_wins_over_kafka_timestamp() -> None:
    assert partition_of(ms(2026, 1, 1, 1), ms(2026, 6, 6, 6)) == "dt=2026-01-01/hour=01"


def test_folder_names_parse_back() -> None:
    h = hour_index(ms(2026, 2, 28, 13))
    dt, hour = hour_dir(h).split("/")
    assert parse_dt(dt) is not None and parse_hour(hour) == 13
    assert parse_dt(dt) + 13 == h  # type: ignore[operator]
    assert parse_dt("dt=2026-02-30") is None and parse_dt("dt=2026-2-3") is None
    assert parse_dt("_tmp") is None and parse_dt("dt=2026-02-28x") is None
    assert parse_hour("hour=24") is None and parse_hour("hour=7") is None
    assert parse_hour("hour=00") == 0
    assert HOUR_MS * h == ms(2026, 2, 28, 13)
