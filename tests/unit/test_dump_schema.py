"""Rows from messages: typed columns from the configured paths, raw text kept."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pyarrow as pa

from etl_gate.dump.schema import SCHEMA, FieldPaths, RowExtractor
from tests.dump_fakes import KAFKA_TS, Msg

T = 1_795_300_000_000  # 2026-11-21T22:26:40Z


def rows(msgs: list[Msg], paths: FieldPaths | None = None, priority: str = "P0",
         now_ms: int = 0) -> tuple[list[dict[str, object]], list[int]]:
    ex = RowExtractor(paths or FieldPaths(), "events.p0", 3, priority).extract(msgs, now_ms)
    assert ex.batch.schema == SCHEMA
    return ex.batch.to_pylist(), ex.hours


def dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def test_every_column_of_a_routed_event() -> None:
    ev = {"id": "e1", "app_id": "1128", "event": "video_play", "user_id": "u1",
          "device_id": "d1", "time": T, "props": {"x": 1}}
    raw = orjson.dumps(ev)
    msg = Msg(raw, off=17, hdrs=[("priority", b"P0"), ("rules-version", b"42"),
                                 ("sample-rate", b"0.1")])
    (row,), hours = rows([msg])
    assert row == {"app": "1128", "event": "video_play", "user_id": "u1", "device_id": "d1",
                   "event_time": dt(T), "priority": "P0", "rules_version": 42,
                   "sample_rate": 0.1, "kafka_topic": "events.p0", "kafka_partition": 3,
                   "kafka_offset": 17, "kafka_timestamp": dt(KAFKA_TS), "kafka_key": b"key",
                   "raw": raw.decode()}
    assert hours == [T // 3_600_000]


def test_missing_fields_are_null_and_time_falls_back() -> None:
    raw = b'{"app_id": "7", "event": "e"}'
    (row,), hours = rows([Msg(raw, k=None, hdrs=None)])
    assert row["user_id"] is None and row["device_id"] is None and row["event_time"] is None
    assert row["rules_version"] is None and row["sample_rate"] is None
    assert row["kafka_key"] is None
    assert row["priority"] == "P0"  # no header: the topic's priority
    assert hours == [KAFKA_TS // 3_600_000]
    assert row["raw"] == raw.decode()  # the bytes as they came, spacing included


def test_numbers_are_their_json_text_and_seconds_are_read_as_seconds() -> None:
    raw = orjson.dumps({"app_id": 1128, "event": "e", "user_id": 12345, "device_id": None,
                        "time": T // 1000})
    (row,), hours = rows([Msg(raw)])
    assert (row["app"], row["user_id"], row["device_id"]) == ("1128", "12345", None)
    assert row["event_time"] == dt(T // 1000 * 1000)
    assert hours == [T // 3_600_000]


def test_configured_dotted_paths() -> None:
    raw = orjson.dumps({"h": {"app": "9", "ev": "open", "ts": T}, "ids": {"u": "uu", "d": "dd"}})
    paths = FieldPaths(app="h.app", event="h.ev", user_id="ids.u", device_id="ids.d", time="h.ts")
    (row,), _ = rows([Msg(raw)], paths)
    assert (row["app"], row["event"], row["user_id"], row["device_id"]) == ("9", "open", "uu", "dd")
    assert row["event_time"] == dt(T)


def test_values_that_are_not_json_objects_are_kept_as_text() -> None:
    msgs = [Msg(b"not json", off=1), Msg(b'{"a":1}\xff', off=2), Msg(b"[1,2]", off=3),
            Msg(None, off=4), Msg(orjson.dumps({"app_id": "a", "event": "e"}), off=5)]
    got, hours = rows(msgs)
    assert [r["raw"] for r in got] == ["not json", '{"a":1}\ufffd', "[1,2]", None,
                                       '{"app_id":"a","event":"e"}']
    assert [r["app"] for r in got] == [None, None, None, None, "a"]
    assert hours == [KAFKA_TS // 3_600_000] * 5
    ex = RowExtractor(FieldPaths(), "t", 0, "P1").extract(msgs, 0)
    assert (ex.unparsed, ex.time_fallbacks) == (4, 5)
    assert ex.raw_bytes == sum(len(m.v or b"") for m in msgs)


def test_bad_headers_are_null_not_errors() -> None:
    (row,), _ = rows([Msg(b"{}", hdrs=[("rules-version", b"x"), ("sample-rate", b""),
                                       ("priority", b"P2")])])
    assert row["rules_version"] is None and row["sample_rate"] is None
    assert row["priority"] == "P2"  # the gate's tag, when present


def test_batch_is_columnar_and_typed() -> None:
    msgs = [Msg(orjson.dumps({"app_id": str(i), "event": "e", "time": T + i}), off=i)
            for i in range(1000)]
    ex = RowExtractor(FieldPaths(), "events.p1", 0, "P1").extract(msgs, 0)
    assert ex.batch.num_rows == 1000
    assert ex.batch.column("kafka_offset").to_pylist() == list(range(1000))
    assert ex.batch.column("event_time").type == pa.timestamp("ms", tz="UTC")
