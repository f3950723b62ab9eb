"""Per-event statistics over all workers: counts and bytes per (app, event,
decision), cumulative and over a sliding window, with bounded memory.

Exact while the number of distinct (app, event) keys stays under
``max_keys``. Past it, the least-counted keys are evicted (in the manner of
Space-Saving / lossy counting): a key that enters afterwards may have had up
to ``error`` events before it entered, so its count is a lower bound and
``count + error`` an upper bound; heavy hitters are never evicted. Per-app
totals (and the useless-event ratio) are always exact: they are kept apart
from the per-key table.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from .core import BLOCKED, OUTCOMES, PRIORITIES, UNREGISTERED

N_OUT = len(OUTCOMES)
Key = tuple[str, str]


@dataclass(frozen=True)
class EventStat:
    app: str
    event: str
    decision: str
    count: int
    bytes: int
    priority: str  # routed priority, "" when never routed
    cost: float
    error: int  # upper bound of the over-count (0: exact)


@dataclass(frozen=True)
class AppStat:
    app: str
    events: int
    bytes: int
    unregistered: int
    blocked: int

    @property
    def useless_ratio(self) -> float:
        return (self.unregistered + self.blocked) / self.events if self.events else 0.0


class _Entry:
    __slots__ = ("row", "error")

    def __init__(self, error: int = 0) -> None:
        self.row = [0] * (2 * N_OUT + 1)
        self.row[-1] = -1
        self.error = error


def _add(dst: list[int], src: list[int]) -> None:
    for i in range(2 * N_OUT):
        dst[i] += src[i]
    if src[-1] >= 0:
        dst[-1] = src[-1]


class EventStatsTable:
    def __init__(self, max_keys: int = 100_000, window_buckets: int = 15,
                 unit_price: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> None:
        self.max_keys = max_keys
        self.unit_price = unit_price
        self.total: dict[Key, _Entry] = {}
        self.buckets: deque[dict[Key, list[int]]] = deque([{}], maxlen=window_buckets)
        self.apps: dict[str, list[int]] = {}  # app -> [events, bytes, unregistered, blocked]
        self.evicted = 0
        self._floor = 0  # count of the largest key evicted so far

    @property
    def approximate(self) -> bool:
        return self.evicted > 0

    def rotate(self) -> None:
        """Start a new window bucket (the supervisor calls this every minute)."""
        self.buckets.append({})

    def add(self, stats: dict[str, dict[str, list[int]]]) -> None:
        """One worker interval: app -> event -> row (see kafka/telemetry.py)."""
        bucket = self.buckets[-1]
        for app, events in stats.items():
            per_app = self.apps.get(app)
            if per_app is None:
                per_app = self.apps[app] = [0, 0, 0, 0]
            for event, row in events.items():
                key = (app, event)
                entry = self.total.get(key)
                if entry is None:
                    entry = self.total[key] = _Entry(self._floor)
                _add(entry.row, row)
                b = bucket.get(key)
                if b is None:
                    b = bucket[key] = [0] * (2 * N_OUT + 1)
                    b[-1] = -1
                _add(b, row)
                per_app[0] += sum(row[:N_OUT])
                per_app[1] += sum(row[N_OUT:2 * N_OUT])
                per_app[2] += row[UNREGISTERED]
                per_app[3] += row[BLOCKED]
        if len(self.total) > self.max_keys * 1.1:
            self._evict()

    def _evict(self) -> None:
        """Space-Saving: drop the smallest keys down to max_keys; the floor
        becomes the error of keys that arrive afterwards. Keys rank by their
        upper bound (count + error): a key evicted before may hold a small
        count yet have lost a large one, and the floor must cover that."""
        ranked = sorted(self.total.items(), key=lambda kv: sum(kv[1].row[:N_OUT]) + kv[1].error)
        drop = len(self.total) - self.max_keys
        floor = sum(ranked[drop - 1][1].row[:N_OUT]) + ranked[drop - 1][1].error if drop > 0 else 0
        for key, _ in ranked[:drop]:
            del self.total[key]
            for b in self.buckets:
                b.pop(key, None)
        self.evicted += drop
        self._floor = max(self._floor, floor)

    def app_stats(self) -> list[AppStat]:
        return [AppStat(app, *v) for app, v in sorted(self.apps.items())]

    def top(self, n: int = 20, by: str = "count", app: str | None = None,
            decision: str | None = None, window_minutes: int = 0) -> list[EventStat]:
        """Top-n (app, event, decision) rows by count or bytes; window_minutes
        0 means since start."""
        if window_minutes:
            rows: dict[Key, list[int]] = {}
            for b in list(self.buckets)[-window_minutes:]:
                for key, row in b.items():
                    acc = rows.get(key)
                    if acc is None:
                        acc = rows[key] = [0] * (2 * N_OUT + 1)
                        acc[-1] = -1
                    _add(acc, row)
            source: list[tuple[Key, list[int], int]] = [
                (k, r, self.total[k].error if k in self.total else 0) for k, r in rows.items()]
        else:
            source = [(k, e.row, e.error) for k, e in self.total.items()]
        wanted = range(N_OUT) if decision is None else [OUTCOMES.index(decision)]
        out: list[EventStat] = []
        for (a, ev), row, err in source:
            if app is not None and a != app:
                continue
            for o in wanted:
                if row[o]:
                    prio = row[-1]
                    out.append(EventStat(
                        a, ev, OUTCOMES[o], row[o], row[N_OUT + o],
                        PRIORITIES[prio] if prio >= 0 else "",
                        row[o] * self.unit_price[prio] if prio >= 0 and o in (0, 2) else 0.0,
                        err))
        out.sort(key=(lambda s: s.bytes) if by == "bytes" else (lambda s: s.count), reverse=True)
        return out[:n]

    def interval_counts(self, stats: dict[str, dict[str, list[int]]]) -> dict[Key, int]:
        """Events per (app, event) in one interval (the surge detector's input)."""
        return {(a, e): sum(row[:N_OUT]) for a, evs in stats.items() for e, row in evs.items()}


def merge_intervals(parts: list[dict[str, Any]]) -> dict[str, dict[str, list[int]]]:
    """Several workers' interval stats as one."""
    out: dict[str, dict[str, list[int]]] = {}
    for stats in parts:
        for app, events in stats.items():
            dst = out.setdefault(app, {})
            for event, row in events.items():
                acc = dst.get(event)
                if acc is None:
                    dst[event] = list(row)
                else:
                    _add(acc, row)
    return out
