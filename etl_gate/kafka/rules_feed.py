"""The worker's end of the rules pipe from the supervisor.

A thread receives packed snapshots and deltas, builds the new decider off the
hot path and swaps one reference; the hot loop never waits for a build (it
only shares the GIL with it). Then it reports the applied version through the
worker's shared counters, which is the acknowledgement the supervisor waits
for.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import orjson

from ..core import Decider
from ..core.packed import PackedDelta, PackedRules
from ..memory import malloc_trim
from ..rules_source import RulesHolder

log = logging.getLogger(__name__)

# After a swap, give the old tables' memory back to the OS (etl_gate/memory.py),
# once the hot loop has let go of the old decider: it keeps it until its batch
# ends, and the commit ledger may hold it until the next commit. So: when the
# feed has been idle this long after a change, and again later.
TRIM_AFTER_S = (1.0, 4.0)


class RulesFeed(threading.Thread):
    def __init__(self, conn: Any, holder: RulesHolder, on_applied: Callable[[int], None],
                 on_closed: Callable[[], None],
                 on_surge: Callable[[list[Any]], None] = lambda guards: None) -> None:
        super().__init__(name="rules-feed", daemon=True)
        self.conn = conn
        self.holder = holder
        self.on_applied = on_applied
        self.on_closed = on_closed
        self.on_surge = on_surge
        self.trim = malloc_trim

    def run(self) -> None:
        trims: list[float] = []  # idle waits before the next trims
        while True:
            try:
                if trims and not self.conn.poll(trims[0]):
                    self.trim()  # idle since the swap: the old tables should be gone
                    del trims[0]
                    continue
                kind, blob = self.conn.recv()
            except (EOFError, OSError):
                self.on_closed()  # the supervisor is gone
                return
            try:
                self._apply(kind, blob)
            except Exception:
                log.exception("rules update (%s) failed; keeping version %s", kind,
                              self.holder.version)
            del blob
            if kind != "surge":
                trims = list(TRIM_AFTER_S)

    def _apply(self, kind: str, blob: bytes) -> None:
        if kind == "surge":  # protections for surging events, not a rules version
            self.on_surge(orjson.loads(blob))
            return
        current = self.holder.decider
        if kind == "snapshot":
            packed = PackedRules.from_bytes(blob)
            if current is not None and packed.version <= current.version:
                self.on_applied(current.version)
                return
            decider = Decider(packed, self.holder.settings, previous=current)
            del packed  # only the compiled tables stay resident
        elif kind == "delta":
            delta = PackedDelta.from_bytes(blob)
            if current is None:
                raise RuntimeError(f"delta {delta.version} before any snapshot")
            if delta.version <= current.version:
                self.on_applied(current.version)
                return
            decider = current.with_delta(delta)
        else:
            raise ValueError(f"unknown rules message {kind!r}")
        self.holder.swap(decider)
        self.on_applied(decider.version)
        log.info("rules version %d applied (%d rules)", decider.version, decider.rule_count)
