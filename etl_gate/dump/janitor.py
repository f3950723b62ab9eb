"""TTL janitor: deletes a priority's hour partitions older than its TTL.

An hour partition ``dt=D/hour=H`` is expired once every time it can hold is
older than the TTL: ``start of H + 1 h <= now - ttl_days``. Folders that are
not ``dt=YYYY-MM-DD`` / ``hour=HH`` (``_tmp``, ``_journal``, anything else)
are never touched. A partition that this process is still writing (an open
roll has rows for it) is skipped and counted; a writer in another process
that publishes into a folder the janitor just removed makes it again
(``Storage.publish``). A ``dt=`` folder is removed once its last hour is.
Dry run: list and count, delete nothing. The clock is injected.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from .fs import Storage
from .metrics import DumpMetrics
from .partition import DAY_MS, HOUR_MS, parse_dt, parse_hour

log = logging.getLogger(__name__)


def is_expired(hour: int, now_ms: int, ttl_days: int) -> bool:
    return (hour + 1) * HOUR_MS <= now_ms - ttl_days * DAY_MS


@dataclass
class JanitorReport:
    priority: str
    ttl_days: int
    dry_run: bool
    deleted: list[str] = field(default_factory=list)  # "dt=.../hour=.." (dry run: would delete)
    skipped_active: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    kept: int = 0  # hour partitions within the TTL
    oldest_kept: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"priority": self.priority, "ttl_days": self.ttl_days, "dry_run": self.dry_run,
                "deleted" if not self.dry_run else "would_delete": self.deleted,
                "skipped_active": self.skipped_active, "errors": self.errors,
                "kept": self.kept, "oldest_kept": self.oldest_kept}


class Janitor:
    def __init__(self, storage: Storage, ttl_days: Mapping[str, int], *, dry_run: bool = False,
                 clock: Callable[[], float] = time.time, metrics: DumpMetrics | None = None) -> None:
        self.storage = storage
        self.ttl_days = ttl_days
        self.dry_run = dry_run
        self.clock = clock
        self.metrics = metrics

    def run(self, priority: str, active: Collection[int] = ()) -> JanitorReport:
        """One pass over ``<root>/<priority>``; ``active``: hour indexes being written."""
        ttl = self.ttl_days[priority]
        now_ms = int(self.clock() * 1000)
        report = JanitorReport(priority, ttl, self.dry_run)
        root = self.storage.join(priority)
        oldest: int | None = None
        for day in sorted(self.storage.list(root), key=lambda e: e.name):
            day0 = parse_dt(day.name) if day.is_dir else None
            if day0 is None:
                continue
            day_path = f"{root}/{day.name}"
            hours = [(e.name, parse_hour(e.name)) for e in self.storage.list(day_path) if e.is_dir]
            removed = 0
            hour_dirs = 0
            for name, h in sorted((n, h) for n, h in hours if h is not None):
                hour_dirs += 1
                hour = day0 + h
                label = f"{day.name}/{name}"
                if not is_expired(hour, now_ms, ttl):
                    report.kept += 1
                    if oldest is None or hour < oldest:
                        oldest, report.oldest_kept = hour, label
                    continue
                if hour in active:
                    report.skipped_active.append(label)
                    continue
                if self.dry_run:
                    report.deleted.append(label)
                    continue
                try:
                    self.storage.delete_dir(f"{day_path}/{name}")
                    report.deleted.append(label)
                    removed += 1
                except OSError as e:
                    # e.g. a writer published into it meanwhile; the next pass retries.
                    report.errors.append(f"{label}: {e}")
            if not self.dry_run and removed == hour_dirs and is_expired(day0 + 23, now_ms, ttl):
                self.storage.delete_empty_dir(day_path)  # only if nothing else is in it
        self._count(report, now_ms, oldest)
        if report.deleted or report.skipped_active or report.errors:
            log.info("janitor %s (ttl %d days)%s: %s %d partition(s) %s, skipped %d being "
                     "written, %d error(s)", priority, ttl, " DRY RUN" if self.dry_run else "",
                     "would delete" if self.dry_run else "deleted", len(report.deleted),
                     _span(report.deleted), len(report.skipped_active), len(report.errors))
        return report

    def _count(self, report: JanitorReport, now_ms: int, oldest: int | None) -> None:
        m = self.metrics
        if m is None:
            return
        p = report.priority
        m.janitor_runs.labels(p).inc()
        m.janitor_partitions.labels(p, "would_delete" if self.dry_run else "deleted").inc(
            len(report.deleted))
        m.janitor_partitions.labels(p, "skipped_active").inc(len(report.skipped_active))
        m.janitor_errors.labels(p).inc(len(report.errors))
        if oldest is not None:
            m.janitor_oldest.labels(p).set(max(0.0, (now_ms - oldest * HOUR_MS) / 1000))


def _span(labels: list[str]) -> str:
    if not labels:
        return ""
    return labels[0] if len(labels) == 1 else f"{labels[0]} .. {labels[-1]}"
