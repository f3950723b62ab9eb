"""Which published files may hold uncommitted offsets, and what to do about them.

Offsets are committed only after the files holding them are published, and
always at a roll's end (``last + 1``), so for a committed offset C every roll
either ended before C (committed: kept) or starts at or after C (its offsets
will be consumed again). Before publishing a roll, the consumer records it in
``_journal/<topic>/<partition>.json`` (atomically), together with earlier
rolls whose commit has not succeeded yet. When a partition is assigned, the
files of journaled rolls that start at or after the replay offset are
deleted before anything is consumed: the replay writes those offsets again,
under the same names when it cuts at the same place. So a crash anywhere
(mid-file, between publish and commit) neither loses nor duplicates a row.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from .layout import Layout
from .writer import RolledGroup

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JournalEntry:
    first: int
    last: int
    files: tuple[str, ...]


@dataclass(frozen=True)
class Recovery:
    delete: tuple[str, ...]  # published files of rolls that will be consumed again
    start: int | None  # offset to consume from, when it is not the committed one
    kept_straddling: int = 0  # rolls kept across the replay offset (offsets reset by hand)


def encode(groups: Sequence[RolledGroup]) -> bytes:
    return orjson.dumps({"rolls": [{"first": g.first, "last": g.last,
                                    "files": [f.final for f in g.files]} for g in groups]})


def decode(data: bytes | None) -> list[JournalEntry]:
    if not data:
        return []
    doc = orjson.loads(data)
    return [JournalEntry(int(r["first"]), int(r["last"]), tuple(r["files"])) for r in doc["rolls"]]


def plan_recovery(entries: Sequence[JournalEntry], committed: int | None, low: int) -> Recovery:
    """What to do with a partition's journaled rolls before consuming it.

    ``committed``: the group's committed offset (None: none yet); ``low``: the
    partition's first offset still in Kafka. Consumption resumes at
    ``max(committed, low)`` (a missing commit means from the start). A roll
    from there on is deleted; a roll that straddles it (offsets reset by
    hand, or retention overtook an uncommitted roll) is kept, and consuming
    resumes after it instead: its offsets are already in the dump.
    """
    start = max(committed if committed is not None and committed >= 0 else low, low)
    moved = False
    delete: list[str] = []
    straddling = 0
    for e in sorted(entries, key=lambda e: e.first):
        if e.first >= start:
            delete.extend(e.files)
        elif e.last >= start:
            straddling += 1
            start, moved = e.last + 1, True
    return Recovery(tuple(delete), start if moved else None, straddling)


class Journal:
    def __init__(self, layouts: dict[str, Layout]) -> None:
        self.layouts = layouts  # by topic

    def record(self, topic: str, partition: int, groups: Sequence[RolledGroup]) -> None:
        """Durably note rolls about to be published (replacing the last note)."""
        layout = self.layouts[topic]
        layout.storage.write_atomic(layout.journal_path(topic, partition), encode(groups))

    def recover(self, topic: str, partition: int, committed: int | None,
                low: int) -> tuple[Recovery, int]:
        """Clean one newly assigned partition: orphaned temporary files and the
        published files of uncommitted rolls. Returns the plan and how many
        files it deleted (some may be gone already: an earlier recovery, the
        janitor)."""
        layout = self.layouts[topic]
        storage = layout.storage
        storage.delete_dir(layout.tmp_dir(topic, partition))
        entries = decode(storage.read(layout.journal_path(topic, partition)))
        plan = plan_recovery(entries, committed, low)
        deleted = sum(storage.delete_file(path) for path in plan.delete)
        if deleted:
            log.warning("%s[%d]: deleted %d published file(s) of uncommitted rolls "
                        "(consumed again from offset %s)", topic, partition, deleted,
                        committed if committed is not None else f"{low} (no commit)")
        if plan.kept_straddling:
            log.warning("%s[%d]: committed offset %s lies inside %d journaled roll(s); kept "
                        "them and resume at %s", topic, partition, committed,
                        plan.kept_straddling, plan.start)
        return plan, deleted
