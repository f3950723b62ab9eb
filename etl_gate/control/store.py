"""The applied rules, persisted in the state directory so a restart keeps them.

``rules.snapshot``: the packed snapshot (orjson), replaced atomically (write a
temporary file, fsync, rename, fsync the directory). ``rules.deltas``: the
deltas applied since, one per line, appended and fsynced before a delta is
acknowledged, so a 1,000-rule delta does not rewrite a 500k-rule file. Loading
replays the deltas that chain onto the snapshot; a torn last line (a crash
mid-append) is ignored, since that delta was never acknowledged.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import orjson

from ..core.packed import PackedDelta, PackedRules

log = logging.getLogger(__name__)

SNAPSHOT = "rules.snapshot"
DELTAS = "rules.deltas"
COMPACT_AFTER = 200  # deltas in the log before the next snapshot write folds them in


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class RulesStore:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.deltas_logged = 0

    def load(self) -> tuple[PackedRules, list[PackedDelta]] | None:
        """The persisted snapshot and the deltas that apply on top of it."""
        try:
            data = (self.dir / SNAPSHOT).read_bytes()
        except FileNotFoundError:
            return None
        snapshot = PackedRules.from_bytes(data)
        deltas: list[PackedDelta] = []
        version = snapshot.version
        try:
            lines = (self.dir / DELTAS).read_bytes().splitlines()
        except FileNotFoundError:
            lines = []
        for i, line in enumerate(lines):
            try:
                delta = PackedDelta.from_bytes(line)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                log.warning("state: ignoring unreadable delta line %d of %s (torn write?)", i + 1,
                            self.dir / DELTAS)
                break
            if delta.base_version < version:
                continue  # folded into the snapshot already
            if delta.base_version != version:
                log.error("state: delta %d does not chain onto version %d; ignoring the rest",
                          delta.version, version)
                break
            deltas.append(delta)
            version = delta.version
        self.deltas_logged = len(deltas)
        return snapshot, deltas

    def save_snapshot(self, blob: bytes) -> None:
        """Replace the snapshot; the delta log is then obsolete."""
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomically(self.dir / SNAPSHOT, blob)
        try:
            os.unlink(self.dir / DELTAS)
        except FileNotFoundError:
            pass
        self.deltas_logged = 0

    def append_delta(self, blob: bytes) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / DELTAS, "ab") as f:
            f.write(blob + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.deltas_logged += 1

    @property
    def wants_compaction(self) -> bool:
        return self.deltas_logged >= COMPACT_AFTER
