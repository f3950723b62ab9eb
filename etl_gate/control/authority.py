"""The supervisor's single source of truth for the rules in force.

Every change, whatever its origin (gRPC push or delta, the rules file, the
state directory at start), goes through here: validate against the rules in
force, persist, publish to the workers, then wait until every live worker has
applied it. One change at a time (a lock); a rejected change leaves
everything as it was.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..core import AppSettings, RulesDelta, RulesSnapshot, apply_delta
from ..core.digest import app_term, hex_digest, rule_term, tables_digest_sum
from ..core.packed import pack, pack_delta, unpack
from ..core.rules import BaseVersionMismatch, StaleVersion
from ..memory import malloc_trim
from .model import PropagationTimeout, PushResult, RulesInfo
from .store import RulesStore

log = logging.getLogger(__name__)

# publish(kind, blob): send "snapshot"/"delta" bytes to every synced worker.
Publish = Callable[[str, bytes], None]
# applied(): {worker index: rules version it applied} for the live workers.
Applied = Callable[[], dict[int, int]]


class RulesAuthority:
    def __init__(self, store: RulesStore, timeout_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.timeout_s = timeout_s
        self.clock = clock
        self.lock = threading.RLock()
        self._snapshot: RulesSnapshot | None = None
        self._blob: bytes | None = None  # packed snapshot for (re)starting workers
        self._digest = 0
        self._info: RulesInfo | None = None
        self._publish: Publish = lambda kind, blob: None
        self._applied: Applied = dict
        self.pushes = 0
        self.rejections = 0
        self.on_change: Callable[[], None] = lambda: None

    def note_rejection(self, exc: Exception | None = None) -> None:
        self.rejections += 1
        if exc is not None:
            exc.counted = True  # type: ignore[attr-defined]  # so the server won't count it again

    def connect(self, publish: Publish, applied: Applied) -> None:
        self._publish = publish
        self._applied = applied

    # -- reads --------------------------------------------------------------

    def info(self) -> RulesInfo | None:
        return self._info

    def snapshot(self) -> RulesSnapshot | None:
        return self._snapshot

    @property
    def version(self) -> int | None:
        return None if self._snapshot is None else self._snapshot.version

    def current_blob(self) -> bytes | None:
        """The packed rules in force, for a worker that (re)starts. Call with
        ``lock`` held so no change slips in between this and the send."""
        with self.lock:
            if self._snapshot is None:
                return None
            if self._blob is None:
                self._blob = pack(self._snapshot).to_bytes()
            return self._blob

    # -- changes ------------------------------------------------------------

    def load_state(self) -> bool:
        """At start: the rules persisted by the last run, deltas included."""
        loaded = self.store.load()
        if loaded is None:
            return False
        packed, deltas = loaded
        snapshot = unpack(packed)
        for d in deltas:
            apps = {a: AppSettings(m, p) for a, (m, p) in d.apps.items()}
            snapshot = apply_delta(snapshot, RulesDelta(d.base_version, d.version,
                                                        tuple(d.upserts), tuple(d.deletes), apps))
        with self.lock:
            self._install(snapshot, self.clock())
        log.info("rules version %d (%d rules) loaded from %s", snapshot.version,
                 snapshot.rule_count, self.store.dir)
        return True

    def push_snapshot(self, snapshot: RulesSnapshot) -> PushResult:
        started = time.monotonic()
        with self.lock:
            try:
                if self._snapshot is not None and snapshot.version <= self._snapshot.version:
                    raise StaleVersion(snapshot.version, self._snapshot.version)
            except StaleVersion as e:
                self.note_rejection(e)
                raise
            blob = pack(snapshot).to_bytes()
            packed = time.monotonic()
            self.store.save_snapshot(blob)
            saved = time.monotonic()
            self._snapshot, self._blob = snapshot, blob
            self._publish("snapshot", blob)
            published = time.monotonic()
            # The digest (0.15 s for 500k rules, unless the push summed it on the
            # way) is computed while the workers build.
            self._install(snapshot, self.clock(), blob=blob)
            self.pushes += 1
            log.info("rules version %d (%d rules) persisted and published (pack %.2fs, persist "
                     "%.2fs, publish %.2fs, digest %.2fs)", snapshot.version, snapshot.rule_count,
                     packed - started, saved - packed, published - saved, time.monotonic() - published)
        malloc_trim()  # the replaced snapshot is gone: return its memory
        return self._await(snapshot.version, started)

    def apply_delta(self, delta: RulesDelta) -> PushResult:
        started = time.monotonic()
        with self.lock:
            try:
                if self._snapshot is None:
                    raise BaseVersionMismatch(delta.base_version, None)
                new = apply_delta(self._snapshot, delta)
            except Exception as e:
                self.note_rejection(e)
                raise
            old = self._snapshot
            packed = pack_delta(delta)
            blob = packed.to_bytes()
            if self.store.wants_compaction:
                self.store.save_snapshot(pack(new).to_bytes())
            else:
                self.store.append_delta(blob)
            # Digest in O(delta): take out what changed, add what is new.
            total = self._digest
            old_rules = old.rules
            for key in (*delta.deletes, *(r.key for r in delta.upserts)):
                if key in old_rules:
                    total -= rule_term(old_rules[key])
            total += sum(map(rule_term, delta.upserts))
            for app, s in delta.apps.items():
                if app in old.apps:
                    total -= app_term(app, old.apps[app])
                total += app_term(app, s)
            self._install(new, self.clock(), digest=total)
            self._publish("delta", blob)
            self.pushes += 1
            log.info("rules delta %d -> %d (%d upserts, %d deletes) persisted and published",
                     delta.base_version, delta.version, len(delta.upserts), len(delta.deletes))
        return self._await(delta.version, started)

    def _install(self, snapshot: RulesSnapshot, applied_at: float, blob: bytes | None = None,
                 digest: int | None = None) -> None:
        if digest is None:
            if snapshot.rules_digest is None:
                digest = tables_digest_sum(snapshot.tables, snapshot.apps)
            else:
                digest = (snapshot.rules_digest + sum(app_term(a, s) for a, s in snapshot.apps.items()))
            digest %= 1 << 128
        self._snapshot = snapshot
        self._blob = blob
        self._digest = digest
        # Apps with rules (a snapshot holds no empty tables) or settings.
        self._info = RulesInfo(snapshot.version, snapshot.rule_count, hex_digest(digest),
                               applied_at, len(snapshot.tables.keys() | snapshot.apps.keys()))
        self.on_change()

    def _await(self, version: int, started: float) -> PushResult:
        """Wait until every live worker decides with ``version``."""
        deadline = started + self.timeout_s
        while True:
            applied = self._applied()
            lagging = sorted(w for w, v in applied.items() if v < version)
            if not lagging:
                assert self._info is not None
                return PushResult(self._info, sorted(applied.items()),
                                  time.monotonic() - started)
            if time.monotonic() >= deadline:
                raise PropagationTimeout(version, lagging, self.timeout_s)
            time.sleep(0.002)

