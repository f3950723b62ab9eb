"""The worker pool: N worker processes, restarted when they die, stopped
cleanly on request, each fed the rules in force through its own pipe.

Workers are spawned (not forked) so no Kafka client, gRPC channel or thread
state crosses a process boundary. Each worker owns one row of shared counters
that survives its restarts, so totals never reset or double.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import GateConfig
from ..control.authority import RulesAuthority
from ..control.model import WorkerState
from ..core import OUTCOMES
from .worker import (
    C_BYTES_IN,
    C_DLQ,
    C_IN,
    C_QUARANTINE,
    C_ROUTED,
    C_RULES_VERSION,
    C_STATE,
    N_COUNTERS,
    worker_main,
)

log = logging.getLogger(__name__)

_RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass
class Slot:
    index: int
    counters: Any
    process: Any = None
    conn: Any = None
    restarts: int = 0
    started_at: float = 0.0
    synced: bool = False  # has been sent the rules in force; gets every change after
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    @property
    def running(self) -> bool:
        return self.alive and self.counters[C_STATE] == int(WorkerState.RUNNING)

    def send(self, kind: str, blob: bytes) -> None:
        with self.send_lock:
            self.conn.send((kind, blob))


class WorkerPool:
    def __init__(self, cfg: GateConfig, authority: RulesAuthority,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.authority = authority
        self.clock = clock
        self.ctx = mp.get_context("spawn")
        n = cfg.worker_count
        self.rate_share = 1.0 / n  # each worker enforces its share of a rule's max_rate
        self.slots = [Slot(i, self.ctx.Array("q", N_COUNTERS, lock=False)) for i in range(n)]
        self.stopping = False
        # Workers' interval reports (kafka/telemetry.py) for the supervisor's observer.
        self.telemetry = self.ctx.Queue(maxsize=1000)
        # Extra state a (re)started worker needs besides the rules: (kind, blob).
        self.extra_sync: Callable[[], list[tuple[str, bytes]]] = list
        authority.connect(self.broadcast, self.applied_versions)

    def _start(self, slot: Slot) -> None:
        parent, child = self.ctx.Pipe()
        slot.synced = False
        slot.conn = parent
        slot.counters[C_RULES_VERSION] = 0
        slot.counters[C_STATE] = int(WorkerState.STARTING)
        slot.process = self.ctx.Process(
            target=worker_main, name=f"etl-gate-w{slot.index}",
            args=(self.cfg, slot.index, child, slot.counters, self.rate_share, self.telemetry))
        slot.process.start()
        child.close()
        slot.started_at = self.clock()
        threading.Thread(target=self._sync, args=(slot,), daemon=True,
                         name=f"sync-w{slot.index}").start()

    def _sync(self, slot: Slot) -> None:
        """Send a new worker the rules in force. Under the authority's lock, so
        no change is published between this snapshot and the worker joining
        the broadcast list."""
        with self.authority.lock:
            blob = self.authority.current_blob()
            try:
                if blob is not None:
                    slot.send("snapshot", blob)
                for kind, extra in self.extra_sync():
                    slot.send(kind, extra)
                slot.synced = True
            except (BrokenPipeError, OSError):
                log.warning("worker %d died before it got the rules", slot.index)

    def broadcast(self, kind: str, blob: bytes) -> None:
        """Publish a change to every synced worker. Rules changes come with the
        authority lock held, so they reach every worker in one order."""
        for slot in self.slots:
            if slot.synced and slot.alive:
                try:
                    slot.send(kind, blob)
                except (BrokenPipeError, OSError):
                    log.warning("worker %d gone while publishing rules", slot.index)

    def applied_versions(self) -> dict[int, int]:
        """Rules version applied by each live worker (the push acknowledgement)."""
        return {s.index: s.counters[C_RULES_VERSION] for s in self.slots if s.alive}

    def start(self) -> None:
        for slot in self.slots:
            self._start(slot)
        log.info("started %d workers: pids %s", len(self.slots),
                 [s.process.pid for s in self.slots])

    def check(self) -> bool:
        """Restart dead workers, with a growing backoff for crash loops.
        True if any worker died or was restarted."""
        changed = False
        for slot in self.slots:
            p = slot.process
            if p is None or p.is_alive() or self.stopping:
                continue
            if slot.counters[C_STATE] != int(WorkerState.DEAD):
                slot.counters[C_STATE] = int(WorkerState.DEAD)
                changed = True
            backoff = _RESTART_BACKOFF_S[min(slot.restarts, len(_RESTART_BACKOFF_S) - 1)]
            if self.clock() - slot.started_at < backoff:
                continue
            log.warning("worker %d (pid %s) exited with %s; restarting", slot.index, p.pid,
                        p.exitcode)
            slot.restarts += 1
            self._start(slot)
            changed = True
        return changed

    def stop(self, timeout_s: float = 90.0) -> None:
        """SIGTERM every worker (each drains and commits), then wait."""
        self.stopping = True
        for slot in self.slots:
            if slot.alive:
                slot.process.terminate()
        deadline = time.monotonic() + timeout_s
        for slot in self.slots:
            if slot.process is None:
                continue
            slot.process.join(max(0.1, deadline - time.monotonic()))
            if slot.process.is_alive():
                log.error("worker %d did not stop in %.0fs; killing it", slot.index, timeout_s)
                slot.process.kill()
                slot.process.join()
            slot.counters[C_STATE] = int(WorkerState.DEAD)

    def totals(self) -> dict[str, int]:
        sums = [0] * N_COUNTERS
        for slot in self.slots:
            row = slot.counters
            for i in range(N_COUNTERS):
                sums[i] += row[i]
        out = dict(zip(OUTCOMES, sums[:len(OUTCOMES)], strict=True))
        out.update(events_in=sums[C_IN], routed=sums[C_ROUTED], dlq=sums[C_DLQ],
                   quarantined=sums[C_QUARANTINE], bytes_in=sums[C_BYTES_IN])
        return out
