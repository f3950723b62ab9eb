"""The dump's Arrow schema, and rows extracted from Kafka messages. Pure: no I/O.

Typed columns for what the common queries need, so they need no JSON parsing,
plus the raw event text, so nothing is lost. Each message is parsed once with
orjson; only a few compiled field getters touch the parsed object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import pyarrow as pa

from ..core.fields import MISSING, compile_path, event_time_ms
from .partition import HOUR_MS, partition_time_ms, usable_time

TS = pa.timestamp("ms", tz="UTC")
SCHEMA = pa.schema([
    pa.field("app", pa.string()),  # a number app id as its JSON text (SPEC 1)
    pa.field("event", pa.string()),
    pa.field("user_id", pa.string()),
    pa.field("device_id", pa.string()),
    pa.field("event_time", TS),  # the event's own time; null if missing or unusable
    pa.field("priority", pa.string()),
    pa.field("rules_version", pa.int64()),
    pa.field("sample_rate", pa.float64()),  # null: not sampled (rate 1)
    pa.field("kafka_topic", pa.string()),
    pa.field("kafka_partition", pa.int32()),
    pa.field("kafka_offset", pa.int64()),
    pa.field("kafka_timestamp", TS),
    pa.field("kafka_key", pa.binary()),
    pa.field("raw", pa.string()),
])
# Repetitive columns; a dictionary on ``raw`` would only be built to be dropped.
DICTIONARY_COLUMNS = ["app", "event", "user_id", "device_id", "priority", "rules_version",
                      "sample_rate", "kafka_topic", "kafka_partition"]
STATISTICS_COLUMNS = [f.name for f in SCHEMA if f.name not in ("raw", "kafka_key")]


class MessageLike(Protocol):
    """What a confluent_kafka.Message offers the extractor (tests pass fakes)."""

    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...
    def offset(self) -> int: ...
    def timestamp(self) -> tuple[int, int]: ...
    def headers(self) -> list[tuple[str, bytes]] | None: ...


@dataclass(frozen=True)
class FieldPaths:
    app: str = "app_id"
    event: str = "event"
    user_id: str = "user_id"
    device_id: str = "device_id"
    time: str = "time"


@dataclass
class Extracted:
    batch: pa.RecordBatch
    hours: list[int]  # partition hour index per row
    raw_bytes: int
    unparsed: int  # values that are not a JSON object (the gate never routes one)
    time_fallbacks: int  # rows partitioned by the Kafka timestamp


def _text(value: Any) -> str | None:
    """A string column's value: strings as they are, other JSON values as their
    JSON text (``1128`` -> "1128", as the gate compares app ids), absent or
    null as null."""
    if type(value) is str:
        return value
    if value is MISSING or value is None:
        return None
    return orjson.dumps(value).decode()


def _decode_raw(raw: bytes) -> str:
    # Not JSON, maybe not UTF-8: kept as text with U+FFFD for bad bytes
    # rather than dropped (the column is a string column).
    return raw.decode("utf-8", "replace")


class RowExtractor:
    """Rows of one topic-partition: messages -> one Arrow record batch."""

    def __init__(self, paths: FieldPaths, topic: str, partition: int, priority: str) -> None:
        self.get_app = compile_path(paths.app)
        self.get_event = compile_path(paths.event)
        self.get_user = compile_path(paths.user_id)
        self.get_device = compile_path(paths.device_id)
        self.get_time = compile_path(paths.time)
        self.topic = topic
        self.partition = partition
        self.priority = priority

    def extract(self, msgs: Sequence[MessageLike], now_ms: int) -> Extracted:
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        text = _text
        get_app, get_event = self.get_app, self.get_event
        get_user, get_device, get_time = self.get_user, self.get_device, self.get_time
        prio = self.priority
        apps: list[str | None] = []
        events: list[str | None] = []
        users: list[str | None] = []
        devices: list[str | None] = []
        times: list[int | None] = []
        prios: list[str] = []
        versions: list[int | None] = []
        rates: list[float | None] = []
        offsets: list[int] = []
        kafka_ts: list[int | None] = []
        keys: list[bytes | None] = []
        raws: list[bytes | str | None] = []
        hours: list[int] = []
        nbytes = unparsed = fallbacks = 0
        has_text = False  # some raw value was decoded to text (not JSON)
        for m in msgs:
            value = m.value()
            raw: bytes | str | None = value
            obj: Any = None
            if value is not None:
                nbytes += len(value)
                try:
                    obj = loads(value)
                except decode_error:
                    raw = _decode_raw(value)
                    has_text = True
            if type(obj) is dict:
                apps.append(text(get_app(obj)))
                events.append(text(get_event(obj)))
                users.append(text(get_user(obj)))
                devices.append(text(get_device(obj)))
                t = usable_time(event_time_ms(get_time(obj)))
            else:
                unparsed += 1
                apps.append(None)
                events.append(None)
                users.append(None)
                devices.append(None)
                t = None
            times.append(t)
            kts = m.timestamp()[1]
            if t is None:
                fallbacks += 1
                t = partition_time_ms(None, kts, now_ms)
            hours.append(t // HOUR_MS)  # partition.hour_index, inlined
            kafka_ts.append(kts if kts >= 0 else None)
            p, version, rate = prio, None, None
            headers = m.headers()
            if headers:
                for name, value in headers:
                    if name == "rules-version":
                        version = _int(value)
                    elif name == "sample-rate":
                        rate = _float(value)
                    elif name == "priority" and value:
                        p = value.decode("utf-8", "replace")
            prios.append(p)
            versions.append(version)
            rates.append(rate)
            offsets.append(m.offset())
            keys.append(m.key())
            raws.append(raw)
        n = len(offsets)
        batch = pa.record_batch([
            pa.array(apps, pa.string()),
            pa.array(events, pa.string()),
            pa.array(users, pa.string()),
            pa.array(devices, pa.string()),
            pa.array(times, TS),
            pa.array(prios, pa.string()),
            pa.array(versions, pa.int64()),
            pa.array(rates, pa.float64()),
            pa.array([self.topic] * n, pa.string()),
            pa.array([self.partition] * n, pa.int32()),
            pa.array(offsets, pa.int64()),
            pa.array(kafka_ts, TS),
            pa.array(keys, pa.binary()),
            _raw_column(raws, has_text),
        ], schema=SCHEMA)
        return Extracted(batch, hours, nbytes, unparsed, fallbacks)


def _raw_column(raws: list[bytes | str | None], has_text: bool) -> pa.Array:
    """Bytes that parsed as JSON are valid UTF-8 (orjson checks), and so are the
    non-JSON values once decoded: build them as binary and relabel as string,
    without a second validation pass. But a non-object JSON value (``[1]``)
    stays bytes, so with decoded text in the batch, everything becomes str."""
    if has_text:
        return pa.array([r.decode() if type(r) is bytes else r for r in raws], pa.string())
    return pa.array(raws, pa.binary()).view(pa.string())


def _int(value: bytes | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _float(value: bytes | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
