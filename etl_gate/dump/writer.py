"""Rolling Parquet files for one Kafka partition.

A ``FileGroup`` is what one partition has written since its last roll: a
contiguous offset range and one open file per event hour in it, each streamed
into a temporary file (``_tmp/``) in row groups. ``roll()`` makes the temporary
files durable and names their final paths after the group's offset range;
the consumer then journals them, publishes them (atomic rename) and only then
commits the offsets after ``last``. A group rolls when its raw bytes reach
``roll_bytes`` (cut at the exact message, so a replay from the same offset
cuts at the same place and writes the same names) or when it is older than
``roll_seconds`` (injected clock), so a quiet topic still lands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .layout import Layout
from .schema import DICTIONARY_COLUMNS, SCHEMA, STATISTICS_COLUMNS, MessageLike, RowExtractor


@dataclass(frozen=True)
class WriterSettings:
    roll_bytes: int
    roll_seconds: float
    row_group_bytes: int
    compression: str = "zstd"


@dataclass(frozen=True)
class DoneFile:
    hour: int
    temp: str
    final: str
    rows: int
    size: int  # Parquet bytes


@dataclass(frozen=True)
class RolledGroup:
    """A finished group: durable temporary files, not yet published."""

    topic: str
    partition: int
    first: int
    last: int
    files: tuple[DoneFile, ...]
    rows: int
    raw_bytes: int
    reason: str  # size | age | revoke | shutdown

    @property
    def parquet_bytes(self) -> int:
        return sum(f.size for f in self.files)


class PartFile:
    """One Parquet file being written: a group's rows of one event hour.

    Rows are buffered as Arrow batches and written as one row group once they
    hold ``row_group_bytes``, which bounds memory per open file; the temporary
    file is opened at the first row group (or at finish)."""

    def __init__(self, layout: Layout, topic: str, partition: int, settings: WriterSettings) -> None:
        self.layout = layout
        self.topic, self.partition = topic, partition
        self.settings = settings
        self.temp = ""
        self.stream: Any = None
        self.writer: pq.ParquetWriter | None = None
        self.buffer: list[pa.RecordBatch] = []
        self.buffered = 0
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self.buffer.append(batch)
        self.buffered += batch.nbytes
        self.rows += batch.num_rows
        if self.buffered >= self.settings.row_group_bytes:
            self._flush()

    def _flush(self) -> None:
        if self.writer is None:
            self.temp = self.layout.tmp_path(self.topic, self.partition)
            self.stream = self.layout.storage.open_write(self.temp)
            compression = None if self.settings.compression == "none" else self.settings.compression
            self.writer = pq.ParquetWriter(self.stream, SCHEMA, compression=compression,
                                           use_dictionary=DICTIONARY_COLUMNS,
                                           write_statistics=STATISTICS_COLUMNS)
        if self.buffer:
            self.writer.write_table(pa.Table.from_batches(self.buffer, SCHEMA),
                                    row_group_size=max(self.rows, 1))
        self.buffer, self.buffered = [], 0

    def finish(self) -> tuple[str, int]:
        """Write what is buffered, close, make durable: (temporary path, size)."""
        self._flush()
        assert self.writer is not None
        self.writer.close()
        self.layout.storage.close_durable(self.stream)
        self.stream = None
        return self.temp, self.layout.storage.size(self.temp)

    def abort(self) -> None:
        """Drop the file (partition lost, or an error): nothing was published."""
        try:
            if self.writer is not None:
                self.writer.close()
            if self.stream is not None:
                self.stream.close()
        finally:
            if self.temp:
                self.layout.storage.delete_file(self.temp)


class FileGroup:
    """The open group of one Kafka partition."""

    def __init__(self, layout: Layout, extractor: RowExtractor, settings: WriterSettings,
                 opened_at: float) -> None:
        self.layout = layout
        self.extractor = extractor
        self.topic, self.partition = extractor.topic, extractor.partition
        self.settings = settings
        self.opened_at = opened_at
        self.files: dict[int, PartFile] = {}
        self.first = -1
        self.last = -1
        self.rows = 0
        self.raw_bytes = 0
        self.unparsed = 0
        self.time_fallbacks = 0

    @property
    def hours(self) -> set[int]:
        """The partitions (hour indexes) this group is writing into."""
        return set(self.files)

    def room(self, msgs: Sequence[MessageLike], start: int) -> int:
        """Index after the messages from ``start`` that fit before a size roll:
        the message that reaches ``roll_bytes`` is the group's last."""
        left = self.settings.roll_bytes - self.raw_bytes
        i, n = start, len(msgs)
        while i < n and left > 0:
            v = msgs[i].value()
            left -= len(v) if v is not None else 0
            i += 1
        return i

    @property
    def full(self) -> bool:
        return self.raw_bytes >= self.settings.roll_bytes

    def old(self, now: float) -> bool:
        return now - self.opened_at >= self.settings.roll_seconds

    def add(self, msgs: Sequence[MessageLike], now_ms: int) -> None:
        """Messages of this partition, in offset order."""
        if not msgs:
            return
        ex = self.extractor.extract(msgs, now_ms)
        if self.first < 0:
            self.first = msgs[0].offset()
        self.last = msgs[-1].offset()
        self.rows += ex.batch.num_rows
        self.raw_bytes += ex.raw_bytes
        self.unparsed += ex.unparsed
        self.time_fallbacks += ex.time_fallbacks
        hours = ex.hours
        lo, hi = min(hours), max(hours)
        if lo == hi:  # the common case: one consumed batch, one event hour
            self._file(lo).write(ex.batch)
            return
        rows_by_hour: dict[int, list[int]] = {}
        for i, h in enumerate(hours):
            rows = rows_by_hour.get(h)
            if rows is None:
                rows = rows_by_hour[h] = []
            rows.append(i)
        for h, rows in rows_by_hour.items():
            self._file(h).write(ex.batch.take(pa.array(rows, pa.int32())))

    def _file(self, hour: int) -> PartFile:
        f = self.files.get(hour)
        if f is None:
            f = self.files[hour] = PartFile(self.layout, self.topic, self.partition, self.settings)
        return f

    def roll(self, reason: str) -> RolledGroup:
        done = []
        for hour in sorted(self.files):
            temp, size = self.files[hour].finish()
            final = self.layout.part_path(hour, self.topic, self.partition, self.first, self.last)
            done.append(DoneFile(hour, temp, final, self.files[hour].rows, size))
        self.files = {}
        return RolledGroup(self.topic, self.partition, self.first, self.last, tuple(done),
                           self.rows, self.raw_bytes, reason)

    def abort(self) -> None:
        files, self.files = self.files, {}
        for f in files.values():
            f.abort()
