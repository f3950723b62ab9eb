"""Rolling files: nothing visible before publish, names from offsets, size cut
at the exact message, age by the injected clock, local and pyarrow storage."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from etl_gate.dump.fs import ArrowStorage, LocalStorage, Storage, open_storage
from etl_gate.dump.layout import Layout, parse_part_name, part_name
from etl_gate.dump.schema import FieldPaths, RowExtractor
from etl_gate.dump.writer import FileGroup, WriterSettings
from tests.dump_fakes import Msg

H = 1_795_300_000_000 // 3_600_000 * 3_600_000  # 2026-11-21T22:00Z


def event(i: int, hour: int = 0, size: int = 0) -> Msg:
    ev = {"id": f"e{i}", "app_id": "1", "event": "e", "time": H + hour * 3_600_000 + i,
          "pad": "x" * size}
    return Msg(orjson.dumps(ev), off=i)


def group(storage: Storage, roll_bytes: int = 10**9, roll_seconds: float = 60.0,
          row_group_bytes: int = 1 << 20, opened_at: float = 0.0) -> FileGroup:
    layout = Layout(storage, "P1")
    settings = WriterSettings(roll_bytes, roll_seconds, row_group_bytes, "zstd")
    return FileGroup(layout, RowExtractor(FieldPaths(), "events.p1", 2, "P1"), settings, opened_at)


def visible(root: Path) -> list[str]:
    """Files a reader would see: under dt=/hour= folders."""
    return sorted(str(p.relative_to(root)) for p in root.glob("P1/dt=*/hour=*/*"))


def test_part_names_carry_topic_partition_and_offsets() -> None:
    assert part_name("events.p0", 3, 100, 250) == "part-events.p0-3-100-250.parquet"
    parsed = parse_part_name("part-my-topic-7-3-100-250.parquet")
    assert parsed is not None
    assert (parsed.topic, parsed.partition, parsed.first, parsed.last) == ("my-topic-7", 3, 100, 250)
    assert parse_part_name("part-x-1-2.parquet") is None
    assert parse_part_name("x.parquet.tmp") is None


def test_nothing_is_visible_until_publish_then_everything_is(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    g = group(storage, row_group_bytes=1)  # every batch becomes a row group: temp files exist
    g.add([event(i, hour=i % 3) for i in range(10, 40)], 0)
    g.add([event(i, hour=i % 3) for i in range(40, 50)], 0)
    assert g.hours == {H // 3_600_000 + h for h in range(3)}
    assert visible(tmp_path) == []
    assert len(list((tmp_path / "P1" / "_tmp" / "events.p1" / "2").iterdir())) == 3
    rolled = g.roll("size")
    assert visible(tmp_path) == []  # durable temporaries, not yet renamed
    assert (rolled.first, rolled.last, rolled.rows) == (10, 49, 40)
    assert [f.rows for f in rolled.files] == [13, 14, 13]  # i % 3 over 10..49
    for f in rolled.files:
        storage.publish(f.temp, f.final)
    names = visible(tmp_path)
    assert names == [f"P1/{d}/part-events.p1-2-10-49.parquet"  # across midnight
                     for d in ("dt=2026-11-21/hour=22", "dt=2026-11-21/hour=23",
                               "dt=2026-11-22/hour=00")]
    assert not list((tmp_path / "P1" / "_tmp" / "events.p1" / "2").iterdir())
    table = ds.dataset(tmp_path / "P1", format="parquet", partitioning="hive").to_table()
    assert sorted(table.column("kafka_offset").to_pylist()) == list(range(10, 50))
    assert sum(f.size for f in rolled.files) == sum(
        os.path.getsize(tmp_path / n) for n in names)
    meta = pq.ParquetFile(tmp_path / names[0]).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert meta.num_row_groups == 2  # one per add() (row_group_bytes=1)


def test_size_roll_cuts_at_the_message_that_reaches_the_limit(tmp_path: Path) -> None:
    msgs = [event(i, size=100) for i in range(100)]
    size = len(msgs[0].v or b"")
    g = group(LocalStorage(tmp_path), roll_bytes=size * 10 + 1)
    end = g.room(msgs, 0)
    assert end == 11  # 11 messages reach 10 * size + 1 bytes
    g.add(msgs[:end], 0)
    assert g.full and g.roll("size").last == 10
    # Deterministic: the same start gives the same cut, however the batches came.
    g2 = group(LocalStorage(tmp_path), roll_bytes=size * 10 + 1)
    g2.add(msgs[:4], 0)
    assert g2.room(msgs, 4) == 11 and not g2.full


def test_age_roll_uses_the_injected_clock(tmp_path: Path) -> None:
    g = group(LocalStorage(tmp_path), roll_seconds=30.0, opened_at=1000.0)
    g.add([event(1)], 0)
    assert not g.old(1029.9) and g.old(1030.0)


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    g = group(LocalStorage(tmp_path), row_group_bytes=1)
    g.add([event(i, hour=i % 2) for i in range(10)], 0)
    g.abort()
    assert visible(tmp_path) == []
    assert not list((tmp_path / "P1" / "_tmp" / "events.p1" / "2").iterdir())


def test_publish_recreates_a_folder_removed_meanwhile(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    g = group(storage)
    g.add([event(1)], 0)
    (f,) = g.roll("age").files
    os.makedirs(os.path.dirname(f.final))
    os.rmdir(os.path.dirname(f.final))  # as the janitor might
    storage.publish(f.temp, f.final)
    assert os.path.exists(f.final)


def test_atomic_write_and_listing(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    path = storage.join("P0", "_journal", "t", "0.json")
    storage.write_atomic(path, b"one")
    storage.write_atomic(path, b"two")
    assert storage.read(path) == b"two"
    assert [e.name for e in storage.list(storage.join("P0", "_journal", "t"))] == ["0.json"]
    assert storage.read(storage.join("nope")) is None and storage.list(storage.join("nope")) == []
    assert storage.delete_file(path) and not storage.delete_file(path)


def test_pyarrow_filesystem_storage_works_the_same(tmp_path: Path) -> None:
    """The URI path (s3://, hdfs://) goes through ArrowStorage; exercised here on
    pyarrow's local filesystem."""
    storage = ArrowStorage(pafs.LocalFileSystem(), str(tmp_path))
    g = group(storage, row_group_bytes=1)
    g.add([event(i, hour=i % 2) for i in range(20)], 0)
    rolled = g.roll("size")
    for f in rolled.files:
        storage.publish(f.temp, f.final)
    assert len(visible(tmp_path)) == 2
    table = ds.dataset(tmp_path / "P1", format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 20
    storage.write_atomic(storage.join("P1", "_journal", "x.json"), b"{}")
    assert storage.read(storage.join("P1", "_journal", "x.json")) == b"{}"
    assert {e.name for e in storage.list(storage.join("P1"))} >= {"_journal", "_tmp", "dt=2026-11-21"}
    assert storage.delete_dir(storage.join("P1", "_journal")) and not storage.delete_dir(
        storage.join("P1", "_journal"))


def test_open_storage(tmp_path: Path) -> None:
    local = open_storage("dump", str(tmp_path))
    assert isinstance(local, LocalStorage) and local.root == str(tmp_path / "dump")
    assert isinstance(open_storage(f"file://{tmp_path}/d"), LocalStorage)
    arrow = open_storage("mock:///bucket/prefix")
    assert isinstance(arrow, ArrowStorage) and arrow.root.endswith("bucket/prefix")
    with pytest.raises(ValueError, match="dump.root"):
        open_storage("nosuchscheme://x/y")
