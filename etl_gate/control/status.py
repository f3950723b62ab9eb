"""What the supervisor reports about itself: the StatusSource the control
plane serves (GetStatus, WatchStatus, health)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from ..kafka.pool import WorkerPool
from ..kafka.worker import C_IN, C_LAG, C_RULES_VERSION, C_STATE
from .authority import RulesAuthority
from .model import GateStatus, WorkerState, WorkerView


class StatusBoard:
    def __init__(self, pool: WorkerPool, authority: RulesAuthority, instance: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pool = pool
        self.authority = authority
        self.instance = instance or socket.gethostname()
        self.clock = clock
        self._cond = threading.Condition()
        self._seq = 0
        self._key: tuple[object, ...] = ()
        self._rates: dict[int, float] = {}
        self._last_in: dict[int, tuple[float, int]] = {}
        authority.on_change = self.changed

    def changed(self) -> None:
        with self._cond:
            self._seq += 1
            self._cond.notify_all()

    def wait_for_change(self, seq: int, timeout: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self._seq > seq, timeout)
            return self._seq

    def tick(self) -> None:
        """Called by the supervisor loop: refresh rates, notify on changes of
        worker state or applied version."""
        now = self.clock()
        for slot in self.pool.slots:
            n = slot.counters[C_IN]
            last = self._last_in.get(slot.index)
            if last is None or now - last[0] >= 1.0:
                if last is not None:
                    self._rates[slot.index] = (n - last[1]) / (now - last[0])
                self._last_in[slot.index] = (now, n)
        key = tuple((s.counters[C_STATE], s.counters[C_RULES_VERSION], s.restarts)
                    for s in self.pool.slots)
        if key != self._key:
            self._key = key
            self.changed()

    def status(self) -> GateStatus:
        workers = []
        for s in self.pool.slots:
            c = s.counters
            state = WorkerState(c[C_STATE]) if s.process is not None else WorkerState.STARTING
            workers.append(WorkerView(
                worker=s.index, pid=s.process.pid if s.process is not None else 0, state=state,
                rules_version=c[C_RULES_VERSION], input_lag=c[C_LAG],
                events_per_second=round(self._rates.get(s.index, 0.0), 1), events_in=c[C_IN],
                restarts=s.restarts))
        serving = self.authority.info() is not None and any(
            w.state == WorkerState.RUNNING for w in workers)
        return GateStatus(self.instance, serving, self.authority.info(), workers)
