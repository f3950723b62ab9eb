"""Names of everything the dump keeps under ``<root>/<priority>/``. Pure.

    dt=YYYY-MM-DD/hour=HH/part-<topic>-<partition>-<first>-<last>.parquet
    _tmp/<topic>/<partition>/<uuid>.parquet.tmp     files being written
    _journal/<topic>/<partition>.json               published, maybe uncommitted

``first``/``last`` are the offset range of the roll that wrote the file: each
roll covers a contiguous offset range of one partition and writes one file per
event hour in it, all named by that range. Readers skip ``_`` folders (Spark,
Hive, pyarrow.dataset) and ``*.tmp`` files.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from .fs import Storage
from .partition import hour_dir

_PART = re.compile(r"^part-(.+)-(\d+)-(\d+)-(\d+)\.parquet$")


@dataclass(frozen=True)
class PartName:
    topic: str
    partition: int
    first: int
    last: int


def part_name(topic: str, partition: int, first: int, last: int) -> str:
    return f"part-{topic}-{partition}-{first}-{last}.parquet"


def parse_part_name(name: str) -> PartName | None:
    """Kafka topic names may hold '-', so the three numbers are read from the right."""
    m = _PART.match(name)
    return PartName(m[1], int(m[2]), int(m[3]), int(m[4])) if m else None


class Layout:
    """Paths of one priority's tree in one storage."""

    def __init__(self, storage: Storage, priority: str) -> None:
        self.storage = storage
        self.priority = priority

    @property
    def root(self) -> str:
        return self.storage.join(self.priority)

    def part_path(self, hour: int, topic: str, partition: int, first: int, last: int) -> str:
        return self.storage.join(self.priority, hour_dir(hour),
                                 part_name(topic, partition, first, last))

    def tmp_dir(self, topic: str, partition: int) -> str:
        return self.storage.join(self.priority, "_tmp", topic, str(partition))

    def tmp_path(self, topic: str, partition: int) -> str:
        return f"{self.tmp_dir(topic, partition)}/{uuid.uuid4().hex}.parquet.tmp"

    def journal_path(self, topic: str, partition: int) -> str:
        return self.storage.join(self.priority, "_journal", topic, f"{partition}.json")
