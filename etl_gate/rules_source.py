"""Where a worker's rules come from, behind one interface that swaps atomically.

A ``RulesHolder`` owns the current ``Decider``; the worker reads
``holder.decider`` once per batch, so every event of a batch is decided by one
version and a swap lands between two batches. Sources build the new decider
off the hot path and swap one reference; a bad update leaves the old rules in
force. Today the source is the rules file (polled by mtime); the control plane
will push through the same ``install`` call.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import orjson

from .core import (
    Decider,
    DecisionSettings,
    RulesError,
    RulesSnapshot,
    build_decider,
    parse_snapshot,
)
from .core.rules import StaleVersion

log = logging.getLogger(__name__)


def load_rules_file(path: str | os.PathLike[str]) -> RulesSnapshot:
    """Read and validate a rules snapshot file (SPEC section 2 JSON)."""
    p = Path(path)
    try:
        data = orjson.loads(p.read_bytes())
    except FileNotFoundError:
        raise RulesError(f"{p}: no such rules file") from None
    except orjson.JSONDecodeError as e:
        raise RulesError(f"{p}: not valid JSON: {e}") from None
    try:
        return parse_snapshot(data)
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

    def install(self, snapshot: RulesSnapshot) -> Decider:
        """Validate the version, build, then swap. Raises RulesError and keeps
        the old rules when the snapshot is not newer."""
        if self.decider is not None and snapshot.version <= self.decider.version:
            raise StaleVersion(snapshot.version, self.decider.version)
        decider = build_decider(snapshot, self.settings)
        self.decider = decider  # the one reference the hot loop reads
        return decider


class FileRulesSource:
    """Polls a rules file's mtime and installs new versions into a holder."""

    def __init__(self, path: Path, holder: RulesHolder) -> None:
        self.path = path
        self.holder = holder
        self._stamp: tuple[int, int] | None = None

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def load(self) -> None:
        """First load: errors propagate (a gate must not start on bad rules)."""
        self._stamp = self._stat()
        self.holder.install(load_rules_file(self.path))

    def poll(self) -> bool:
        """Reload if the file changed; a bad or stale file is logged and ignored."""
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            snapshot = load_rules_file(self.path)
            if snapshot.version == self.holder.version:
                return False
            self.holder.install(snapshot)
        except RulesError as e:
            log.error("rules reload rejected, keeping version %s: %s", self.holder.version, e)
            return False
        log.info("rules version %s installed from %s", snapshot.version, self.path)
        return True
