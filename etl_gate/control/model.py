"""Domain types the control plane serves: what the supervisor knows about its
rules and workers. The gRPC layer converts these (``serde.py``); nothing here
knows about protobuf."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from etl_gate.stats import AppStat, EventStat


class WorkerState(IntEnum):
    # Same numbers as the proto enum, kept in step by a unit test.
    UNSPECIFIED = 0
    STARTING = 1
    WAITING = 2
    RUNNING = 3
    STOPPING = 4
    DEAD = 5


@dataclass(frozen=True)
class RulesInfo:
    version: int
    rule_count: int
    digest: str  # hex; see etl_gate.core.digest
    applied_at: float  # epoch seconds
    app_count: int


@dataclass(frozen=True)
class WorkerView:
    worker: int
    pid: int
    state: WorkerState
    rules_version: int
    input_lag: int  # -1: unknown
    events_per_second: float
    events_in: int
    restarts: int


@dataclass(frozen=True)
class GateStatus:
    instance: str
    serving: bool
    rules: RulesInfo | None
    workers: list[WorkerView] = field(default_factory=list)


@dataclass(frozen=True)
class PushResult:
    rules: RulesInfo
    acks: list[tuple[int, int]]  # (worker, applied version)
    apply_seconds: float


@dataclass(frozen=True)
class StatsQuery:
    """What GetEventStats asks for (validated by ``serde.stats_query_from_pb``)."""

    top: int = 20
    by: str = "count"  # or "bytes"
    app: str | None = None
    decision: str | None = None  # one of etl_gate.core.OUTCOMES
    window_minutes: int = 0  # 0: since start


@dataclass(frozen=True)
class SurgingEvent:
    app: str
    event: str
    baseline_per_second: float


@dataclass(frozen=True)
class EventStatsReport:
    rows: list[EventStat]  # top first
    apps: list[AppStat]
    approximate: bool  # some counts are lower bounds, short by up to their error
    surging: list[SurgingEvent]
    total_count: int = 0  # every row matching the query, not only the top ones


class InvalidRequest(ValueError):
    """A request field the gate cannot serve; the message names the field."""


class PropagationTimeout(Exception):
    """Validated and persisted, but not every live worker applied it in time.
    The lagging workers keep converging."""

    def __init__(self, version: int, lagging: list[int], timeout_s: float) -> None:
        self.version = version
        self.lagging = lagging
        super().__init__(f"version {version} not applied by worker(s) {lagging} within "
                         f"{timeout_s:.1f}s; they keep converging")
