import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    P0: _ClassVar[Priority]
    P1: _ClassVar[Priority]
    P2: _ClassVar[Priority]

class RuleState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RULE_STATE_UNSPECIFIED: _ClassVar[RuleState]
    ACTIVE: _ClassVar[RuleState]
    OFFLINE: _ClassVar[RuleState]

class AppMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    APP_MODE_UNSPECIFIED: _ClassVar[AppMode]
    ENFORCE: _ClassVar[AppMode]
    MONITOR: _ClassVar[AppMode]

class WorkerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_STATE_UNSPECIFIED: _ClassVar[WorkerState]
    STARTING: _ClassVar[WorkerState]
    WAITING: _ClassVar[WorkerState]
    RUNNING: _ClassVar[WorkerState]
    STOPPING: _ClassVar[WorkerState]
    DEAD: _ClassVar[WorkerState]

class StatsOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATS_ORDER_UNSPECIFIED: _ClassVar[StatsOrder]
    COUNT: _ClassVar[StatsOrder]
    BYTES: _ClassVar[StatsOrder]
PRIORITY_UNSPECIFIED: Priority
P0: Priority
P1: Priority
P2: Priority
RULE_STATE_UNSPECIFIED: RuleState
ACTIVE: RuleState
OFFLINE: RuleState
APP_MODE_UNSPECIFIED: AppMode
ENFORCE: AppMode
MONITOR: AppMode
WORKER_STATE_UNSPECIFIED: WorkerState
STARTING: WorkerState
WAITING: WorkerState
RUNNING: WorkerState
STOPPING: WorkerState
DEAD: WorkerState
STATS_ORDER_UNSPECIFIED: StatsOrder
COUNT: StatsOrder
BYTES: StatsOrder

class Rule(_message.Message):
    __slots__ = ("app", "event", "priority", "sample_rate", "state", "sample_key", "max_rate")
    APP_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_RATE_FIELD_NUMBER: _ClassVar[int]
    app: str
    event: str
    priority: Priority
    sample_rate: float
    state: RuleState
    sample_key: str
    max_rate: float
    def __init__(self, app: _Optional[str] = ..., event: _Optional[str] = ..., priority: _Optional[_Union[Priority, str]] = ..., sample_rate: _Optional[float] = ..., state: _Optional[_Union[RuleState, str]] = ..., sample_key: _Optional[str] = ..., max_rate: _Optional[float] = ...) -> None: ...

class RuleKey(_message.Message):
    __slots__ = ("app", "event")
    APP_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    app: str
    event: str
    def __init__(self, app: _Optional[str] = ..., event: _Optional[str] = ...) -> None: ...

class AppSettings(_message.Message):
    __slots__ = ("app", "mode", "default_priority")
    APP_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    app: str
    mode: AppMode
    default_priority: Priority
    def __init__(self, app: _Optional[str] = ..., mode: _Optional[_Union[AppMode, str]] = ..., default_priority: _Optional[_Union[Priority, str]] = ...) -> None: ...

class SnapshotHeader(_message.Message):
    __slots__ = ("version", "apps", "rule_count")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    APPS_FIELD_NUMBER: _ClassVar[int]
    RULE_COUNT_FIELD_NUMBER: _ClassVar[int]
    version: int
    apps: _containers.RepeatedCompositeFieldContainer[AppSettings]
    rule_count: int
    def __init__(self, version: _Optional[int] = ..., apps: _Optional[_Iterable[_Union[AppSettings, _Mapping]]] = ..., rule_count: _Optional[int] = ...) -> None: ...

class RuleChunk(_message.Message):
    __slots__ = ("rules", "plain", "entries")
    RULES_FIELD_NUMBER: _ClassVar[int]
    PLAIN_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    rules: _containers.RepeatedCompositeFieldContainer[Rule]
    plain: _containers.RepeatedCompositeFieldContainer[PlainRules]
    entries: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, rules: _Optional[_Iterable[_Union[Rule, _Mapping]]] = ..., plain: _Optional[_Iterable[_Union[PlainRules, _Mapping]]] = ..., entries: _Optional[_Iterable[int]] = ...) -> None: ...

class PlainRules(_message.Message):
    __slots__ = ("app", "events", "priorities")
    APP_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    PRIORITIES_FIELD_NUMBER: _ClassVar[int]
    app: str
    events: _containers.RepeatedScalarFieldContainer[str]
    priorities: bytes
    def __init__(self, app: _Optional[str] = ..., events: _Optional[_Iterable[str]] = ..., priorities: _Optional[bytes] = ...) -> None: ...

class PushSnapshotRequest(_message.Message):
    __slots__ = ("header", "chunk", "json", "json_head", "json_rules")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    JSON_HEAD_FIELD_NUMBER: _ClassVar[int]
    JSON_RULES_FIELD_NUMBER: _ClassVar[int]
    header: SnapshotHeader
    chunk: RuleChunk
    json: bytes
    json_head: bytes
    json_rules: bytes
    def __init__(self, header: _Optional[_Union[SnapshotHeader, _Mapping]] = ..., chunk: _Optional[_Union[RuleChunk, _Mapping]] = ..., json: _Optional[bytes] = ..., json_head: _Optional[bytes] = ..., json_rules: _Optional[bytes] = ...) -> None: ...

class ApplyDeltaRequest(_message.Message):
    __slots__ = ("base_version", "version", "upserts", "deletes", "apps")
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPSERTS_FIELD_NUMBER: _ClassVar[int]
    DELETES_FIELD_NUMBER: _ClassVar[int]
    APPS_FIELD_NUMBER: _ClassVar[int]
    base_version: int
    version: int
    upserts: _containers.RepeatedCompositeFieldContainer[Rule]
    deletes: _containers.RepeatedCompositeFieldContainer[RuleKey]
    apps: _containers.RepeatedCompositeFieldContainer[AppSettings]
    def __init__(self, base_version: _Optional[int] = ..., version: _Optional[int] = ..., upserts: _Optional[_Iterable[_Union[Rule, _Mapping]]] = ..., deletes: _Optional[_Iterable[_Union[RuleKey, _Mapping]]] = ..., apps: _Optional[_Iterable[_Union[AppSettings, _Mapping]]] = ...) -> None: ...

class WorkerAck(_message.Message):
    __slots__ = ("worker", "rules_version")
    WORKER_FIELD_NUMBER: _ClassVar[int]
    RULES_VERSION_FIELD_NUMBER: _ClassVar[int]
    worker: int
    rules_version: int
    def __init__(self, worker: _Optional[int] = ..., rules_version: _Optional[int] = ...) -> None: ...

class PushResponse(_message.Message):
    __slots__ = ("rules", "workers", "apply_seconds")
    RULES_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    APPLY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    rules: RulesInfo
    workers: _containers.RepeatedCompositeFieldContainer[WorkerAck]
    apply_seconds: float
    def __init__(self, rules: _Optional[_Union[RulesInfo, _Mapping]] = ..., workers: _Optional[_Iterable[_Union[WorkerAck, _Mapping]]] = ..., apply_seconds: _Optional[float] = ...) -> None: ...

class GetRulesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RulesInfo(_message.Message):
    __slots__ = ("version", "rule_count", "digest", "applied_at", "app_count")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RULE_COUNT_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    APPLIED_AT_FIELD_NUMBER: _ClassVar[int]
    APP_COUNT_FIELD_NUMBER: _ClassVar[int]
    version: int
    rule_count: int
    digest: str
    applied_at: _timestamp_pb2.Timestamp
    app_count: int
    def __init__(self, version: _Optional[int] = ..., rule_count: _Optional[int] = ..., digest: _Optional[str] = ..., applied_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., app_count: _Optional[int] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchStatusRequest(_message.Message):
    __slots__ = ("interval_seconds",)
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    interval_seconds: float
    def __init__(self, interval_seconds: _Optional[float] = ...) -> None: ...

class WorkerStatus(_message.Message):
    __slots__ = ("worker", "pid", "state", "rules_version", "input_lag", "events_per_second", "events_in", "restarts")
    WORKER_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RULES_VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_LAG_FIELD_NUMBER: _ClassVar[int]
    EVENTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    EVENTS_IN_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    worker: int
    pid: int
    state: WorkerState
    rules_version: int
    input_lag: int
    events_per_second: float
    events_in: int
    restarts: int
    def __init__(self, worker: _Optional[int] = ..., pid: _Optional[int] = ..., state: _Optional[_Union[WorkerState, str]] = ..., rules_version: _Optional[int] = ..., input_lag: _Optional[int] = ..., events_per_second: _Optional[float] = ..., events_in: _Optional[int] = ..., restarts: _Optional[int] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("instance", "serving", "rules", "workers")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    instance: str
    serving: bool
    rules: RulesInfo
    workers: _containers.RepeatedCompositeFieldContainer[WorkerStatus]
    def __init__(self, instance: _Optional[str] = ..., serving: _Optional[bool] = ..., rules: _Optional[_Union[RulesInfo, _Mapping]] = ..., workers: _Optional[_Iterable[_Union[WorkerStatus, _Mapping]]] = ...) -> None: ...

class EventStatsRequest(_message.Message):
    __slots__ = ("top", "by", "app", "decision", "window_minutes")
    TOP_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_MINUTES_FIELD_NUMBER: _ClassVar[int]
    top: int
    by: StatsOrder
    app: str
    decision: str
    window_minutes: int
    def __init__(self, top: _Optional[int] = ..., by: _Optional[_Union[StatsOrder, str]] = ..., app: _Optional[str] = ..., decision: _Optional[str] = ..., window_minutes: _Optional[int] = ...) -> None: ...

class EventStat(_message.Message):
    __slots__ = ("app", "event", "decision", "count", "bytes", "priority", "cost", "error")
    APP_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    app: str
    event: str
    decision: str
    count: int
    bytes: int
    priority: str
    cost: float
    error: int
    def __init__(self, app: _Optional[str] = ..., event: _Optional[str] = ..., decision: _Optional[str] = ..., count: _Optional[int] = ..., bytes: _Optional[int] = ..., priority: _Optional[str] = ..., cost: _Optional[float] = ..., error: _Optional[int] = ...) -> None: ...

class AppStat(_message.Message):
    __slots__ = ("app", "events", "bytes", "unregistered", "blocked", "useless_ratio")
    APP_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    UNREGISTERED_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_FIELD_NUMBER: _ClassVar[int]
    USELESS_RATIO_FIELD_NUMBER: _ClassVar[int]
    app: str
    events: int
    bytes: int
    unregistered: int
    blocked: int
    useless_ratio: float
    def __init__(self, app: _Optional[str] = ..., events: _Optional[int] = ..., bytes: _Optional[int] = ..., unregistered: _Optional[int] = ..., blocked: _Optional[int] = ..., useless_ratio: _Optional[float] = ...) -> None: ...

class SurgingEvent(_message.Message):
    __slots__ = ("app", "event", "baseline_per_second")
    APP_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    BASELINE_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    app: str
    event: str
    baseline_per_second: float
    def __init__(self, app: _Optional[str] = ..., event: _Optional[str] = ..., baseline_per_second: _Optional[float] = ...) -> None: ...

class EventStatsResponse(_message.Message):
    __slots__ = ("rows", "apps", "approximate", "surging", "total_count")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    APPS_FIELD_NUMBER: _ClassVar[int]
    APPROXIMATE_FIELD_NUMBER: _ClassVar[int]
    SURGING_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[EventStat]
    apps: _containers.RepeatedCompositeFieldContainer[AppStat]
    approximate: bool
    surging: _containers.RepeatedCompositeFieldContainer[SurgingEvent]
    total_count: int
    def __init__(self, rows: _Optional[_Iterable[_Union[EventStat, _Mapping]]] = ..., apps: _Optional[_Iterable[_Union[AppStat, _Mapping]]] = ..., approximate: _Optional[bool] = ..., surging: _Optional[_Iterable[_Union[SurgingEvent, _Mapping]]] = ..., total_count: _Optional[int] = ...) -> None: ...
