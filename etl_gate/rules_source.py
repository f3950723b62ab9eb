"""Where rules come from, on both sides of the process boundary.

Worker side: a ``RulesHolder`` owns the current ``Decider``; the hot loop
reads ``holder.decider`` once per batch, so one version decides a whole batch
and a swap lands between two batches. Supervisor side: ``RulesFileWatcher``
polls the optional rules file and hands new versions to the same authority
that gRPC pushes go through, so startup, file reload and push share one path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from .core import Decider, DecisionSettings, RulesError, RulesSnapshot, build_decider
from .core.rules import StaleVersion
from .core.snapshot_json import parse_snapshot_json

log = logging.getLogger(__name__)


def load_rules_file(path: str | os.PathLike[str]) -> RulesSnapshot:
    """Read and validate a rules snapshot file (SPEC section 2 JSON)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise RulesError(f"{p}: no such rules file") from None
    try:
        return parse_snapshot_json(data)
    except RulesError as e:
        raise RulesError(f"{p}: {e}") from None


class RulesHolder:
    """The current decider; replaced whole, never mutated."""

    def __init__(self, settings: DecisionSettings) -> None:
        self.settings = settings
        self.decider: Decider | None = None

    @property
    def version(self) -> int | None:
        return None if self.decider is None else self.decider.version

    def swap(self, decider: Decider) -> None:
        self.decider = decider  # the one reference the hot loop reads

    def install(self, snapshot: RulesSnapshot) -> Decider:
        """Build, then swap. Raises StaleVersion and keeps the old rules when
        the snapshot is not newer."""
        if self.decider is not None and snapshot.version <= self.decider.version:
            raise StaleVersion(snapshot.version, self.decider.version)
        decider = build_decider(snapshot, self.settings)
        self.swap(decider)
        return decider


class RulesFileWatcher:
    """Polls a rules file (mtime and size) and submits new versions."""

    def __init__(self, path: Path, submit: Callable[[RulesSnapshot], object],
                 current_version: Callable[[], int | None]) -> None:
        self.path = path
        self.submit = submit
        self.current_version = current_version
        self._stamp: tuple[int, int] | None = None

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def poll(self, strict: bool = False) -> bool:
        """Submit the file if it changed and is newer than the rules in force.
        A bad file is logged and ignored (raised when ``strict``: at start)."""
        stamp = self._stat()
        if stamp is None and not strict:
            return False
        if stamp == self._stamp and not strict:
            return False
        self._stamp = stamp
        try:
            snapshot = load_rules_file(self.path)
        except RulesError as e:
            if strict:
                raise
            log.error("rules file rejected, keeping version %s: %s", self.current_version(), e)
            return False
        current = self.current_version()
        if current is not None and snapshot.version <= current:
            if snapshot.version < current:
                log.info("rules file %s has version %d; version %d is in force (pushed or "
                         "persisted), keeping it", self.path, snapshot.version, current)
            return False
        self.submit(snapshot)
        log.info("rules version %d from %s submitted", snapshot.version, self.path)
        return True
