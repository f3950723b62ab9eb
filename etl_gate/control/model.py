"""Domain types the control plane serves: what the supervisor knows about its
rules and workers. The gRPC layer converts these (``serde.py``); nothing here
knows about protobuf."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


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


class PropagationTimeout(Exception):
    """Validated and persisted, but not every live worker applied it in time.
    The lagging workers keep converging."""

    def __init__(self, version: int, lagging: list[int], timeout_s: float) -> None:
        self.version = version
        self.lagging = lagging
        super().__init__(f"version {version} not applied by worker(s) {lagging} within "
                         f"{timeout_s:.1f}s; they keep converging")
