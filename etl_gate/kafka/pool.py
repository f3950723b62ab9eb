"""The supervisor: starts N worker processes, restarts the ones that die, and
stops them all cleanly on SIGTERM/SIGINT.

Workers are spawned (not forked) so no Kafka client, gRPC channel or thread
state crosses a process boundary. Each worker owns one row of shared counters
that survives its restarts, so totals never reset or double.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import GateConfig
from ..core import OUTCOMES
from .worker import C_BYTES_IN, C_DLQ, C_IN, C_QUARANTINE, C_ROUTED, N_COUNTERS, worker_main

log = logging.getLogger(__name__)

_RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass
class _Slot:
    index: int
    counters: Any
    process: Any = None
    restarts: int = 0
    started_at: float = 0.0


class WorkerPool:
    def __init__(self, cfg: GateConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self.ctx = mp.get_context("spawn")
        n = cfg.worker_count
        self.rate_share = 1.0 / n  # each worker enforces its share of a rule's max_rate
        self.slots = [_Slot(i, self.ctx.Array("q", N_COUNTERS, lock=False)) for i in range(n)]
        self.stopping = False

    def _start(self, slot: _Slot) -> None:
        slot.process = self.ctx.Process(
            target=worker_main, name=f"etl-gate-w{slot.index}",
            args=(self.cfg, slot.index, slot.counters, self.rate_share))
        slot.process.start()
        slot.started_at = self.clock()

    def start(self) -> None:
        for slot in self.slots:
            self._start(slot)
        log.info("started %d workers: pids %s", len(self.slots),
                 [s.process.pid for s in self.slots])

    def check(self) -> None:
        """Restart dead workers, with a growing backoff for crash loops."""
        for slot in self.slots:
            p = slot.process
            if p is None or p.is_alive() or self.stopping:
                continue
            backoff = _RESTART_BACKOFF_S[min(slot.restarts, len(_RESTART_BACKOFF_S) - 1)]
            if self.clock() - slot.started_at < backoff:
                continue
            log.warning("worker %d (pid %s) exited with %s; restarting", slot.index, p.pid,
                        p.exitcode)
            slot.restarts += 1
            self._start(slot)

    def stop(self, timeout_s: float = 90.0) -> None:
        """SIGTERM every worker (each drains and commits), then wait."""
        self.stopping = True
        for slot in self.slots:
            if slot.process is not None and slot.process.is_alive():
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


def run_gate(cfg: GateConfig, max_events: int = 0, report_every_s: float = 10.0) -> dict[str, int]:
    """Run the pool until SIGTERM/SIGINT (or until ``max_events`` were consumed)."""
    pool = WorkerPool(cfg)
    stop = False

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stop
        log.info("signal %d: draining workers", signum)
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    pool.start()
    last_report = time.monotonic()
    try:
        while not stop:
            time.sleep(0.2)
            pool.check()
            totals = pool.totals()
            if max_events and totals["events_in"] >= max_events:
                break
            if time.monotonic() - last_report >= report_every_s:
                last_report = time.monotonic()
                log.info("totals %s", totals)
    finally:
        pool.stop()
    totals = pool.totals()
    log.info("stopped; totals %s", totals)
    return totals
