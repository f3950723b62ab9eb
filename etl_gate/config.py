"""The gate's configuration: TOML in, a typed and validated tree out.

Parsed once at the edge. Unknown keys are rejected and every error names the
dotted path of the bad entry (``kafka.batch_size: expected int, got 'x'``).
See ``config/gate.toml`` for a commented example of every field.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .core import DecisionSettings, RulesError
from .logs import LOG_FORMATS


class ConfigError(ValueError):
    """A config that cannot be used; the message names the entry."""


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "etl-gate"
    input_topic: str = "events.raw"
    # Optional static membership: a restarted worker takes back its partitions
    # without a rebalance. Must be unique per gate instance in the group.
    instance_id: str = ""
    session_timeout_ms: int = 10000
    batch_size: int = 5000
    batch_timeout_ms: int = 5
    max_inflight_batches: int = 8
    commit_interval_ms: int = 1000
    linger_ms: int = 5
    compression: str = "lz4"
    # "native": the common events are decided and produced by the C fast path
    # (etl_gate/fastpath; built on first use, needs a C compiler and
    # librdkafka's headers; where it cannot run, the worker says so and uses
    # "python"); "python": every event in Python. Not the default yet: with
    # 500k rules a push adds more to a worker than issue 3 allows (bench/RESULTS.md
    # 2026-12-08 01:38-01:42).
    engine: str = "python"
    # Extra librdkafka settings, passed through as they are.
    consumer: dict[str, Any] = field(default_factory=dict)
    producer: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicsConfig:
    p0: str = "events.p0"
    p1: str = "events.p1"
    p2: str = "events.p2"
    dlq: str = "events.dlq"
    quarantine: str = ""  # empty: no quarantine topic
    partitions: int = 6
    replication_factor: int = 1

    @property
    def priority_topics(self) -> tuple[str, str, str]:
        return (self.p0, self.p1, self.p2)


@dataclass(frozen=True)
class FieldsConfig:
    app: str = "app_id"
    event: str = "event"
    sample_keys: list[str] = field(default_factory=lambda: ["user_id", "device_id"])
    time: str = "time"


@dataclass(frozen=True)
class TagConfig:
    headers: bool = True
    field: str = ""  # e.g. "priority": also write the priority into the JSON


@dataclass(frozen=True)
class TtlConfig:
    """Days kept per priority: dump partitions and priority topic retention."""

    P0: int = 400
    P1: int = 180
    P2: int = 90

    def days(self, priority: int) -> int:
        return (self.P0, self.P1, self.P2)[priority]


@dataclass(frozen=True)
class ObserveConfig:
    """Metrics, per-event statistics and surge detection (served by the supervisor)."""

    metrics_listen: str = "127.0.0.1:9464"  # Prometheus /metrics; "" disables it
    top_apps: list[str] = field(default_factory=list)  # app label values; the rest: "other"
    telemetry_interval_s: float = 1.0  # how often workers ship their counts
    # Per (app, event) statistics, which also feed etl_gate_events_total and
    # etl_gate_input_bytes_total; off saves worker CPU (bench/RESULTS.md) and
    # leaves those two counters empty.
    stats_enabled: bool = True
    stats_interval_s: float = 10.0  # surge checks and stats-topic records, per this interval
    stats_topic: str = ""  # JSON records per interval go here; "" = not published
    stats_max_keys: int = 100_000  # (app, event) keys kept exactly; past it, approximate
    stats_window_minutes: int = 60
    # Cost per event of each priority (any currency): cost = count x price.
    unit_price: dict[str, float] = field(default_factory=lambda: {"P0": 0.0, "P1": 0.0,
                                                                  "P2": 0.0})
    surge_factor: float = 5.0  # rate above factor x baseline ...
    surge_floor: float = 100.0  # ... and above this many events/s is a surge
    surge_calm_intervals: int = 3  # intervals back under the threshold to end it
    surge_action: str = "flag"  # flag | cap (hold it to its baseline) | downgrade (to P2)


@dataclass(frozen=True)
class ControlConfig:
    """The gRPC control plane served by the supervisor (proto/etl_gate/pb/control/v1)."""

    enabled: bool = True
    listen: str = "127.0.0.1:50051"  # loopback by default; "0.0.0.0:50051" to expose
    # TLS: server certificate and key (PEM files). With client_ca as well,
    # clients must present a certificate signed by it (mutual TLS).
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # Bearer tokens for mutating calls. File: one token per line, optionally
    # "token read" for a read-only token; '#' comments. Env: the name of a
    # variable holding comma-separated tokens (write tokens). No tokens: open.
    tokens_file: str = ""
    tokens_env: str = ""
    auth_reads: bool = False  # also require a (read or write) token for reads
    push_timeout_s: float = 10.0  # wait for every live worker to apply a push
    max_message_mb: int = 64
    # A snapshot pushed as JSON is held whole while it parses: its size limit.
    max_push_mb: int = 1024
    state_dir: str = "state"  # applied rules persist here, relative to the config file
    instance: str = ""  # name in status; default: the host name


DUMP_ROLL_SECONDS = {"P0": 60.0, "P1": 300.0, "P2": 900.0}


@dataclass(frozen=True)
class DumpConfig:
    """The dump stage (``etl-gate dump``, etl_gate/dump/): priority topics to Parquet."""

    # Local folder (relative to the config file) or a pyarrow filesystem URI
    # (s3://bucket/prefix, hdfs://namenode:8020/path, gs://...); <root>/<priority>/dt=/hour=/.
    root: str = "dump"
    group_id: str = "etl-gate-dump"  # its own consumer group, never the gate's
    priorities: list[str] = field(default_factory=lambda: ["P0", "P1", "P2"])  # without --priority
    user_id_field: str = "user_id"  # dotted paths of the user_id / device_id columns
    device_id_field: str = "device_id"
    # A Kafka partition's open files roll (become visible, offsets committed)
    # at this many MiB of raw events, or this many seconds after their first
    # event (per priority: the tier's landing SLA), whichever comes first.
    roll_mb: float = 256.0
    roll_seconds: dict[str, float] = field(default_factory=lambda: dict(DUMP_ROLL_SECONDS))
    row_group_mb: float = 32.0  # Arrow memory buffered per open file before a row group is written
    compression: str = "zstd"
    janitor_interval_s: float = 3600.0  # TTL janitor period in a running dump; 0: never
    janitor_dry_run: bool = False  # log and count what it would delete, delete nothing
    metrics_listen: str = ""  # Prometheus /metrics of the dump process, e.g. "127.0.0.1:9465"

    def roll_seconds_for(self, priority: str) -> float:
        """A priority left out of ``roll_seconds`` keeps its default."""
        return float(self.roll_seconds.get(priority, DUMP_ROLL_SECONDS[priority]))


@dataclass(frozen=True)
class GateConfig:
    workers: int = 0  # 0: one per CPU
    rules_file: str = ""
    rules_reload_s: float = 2.0  # how often the supervisor looks for a changed rules file
    sampling_seed: int = 0
    quarantine_sample_rate: float = 0.0
    log_level: str = "INFO"
    log_format: str = "text"  # "text" or "json" (one JSON object per line)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    fields: FieldsConfig = field(default_factory=FieldsConfig)
    tag: TagConfig = field(default_factory=TagConfig)
    ttl_days: TtlConfig = field(default_factory=TtlConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    observe: ObserveConfig = field(default_factory=ObserveConfig)
    dump: DumpConfig = field(default_factory=DumpConfig)
    # Where the file was read from, so relative paths resolve against it.
    base_dir: str = "."

    @property
    def worker_count(self) -> int:
        return self.workers or (os.cpu_count() or 1)

    def path(self, relative: str) -> Path:
        """A path from the config, resolved against the config file's folder."""
        return Path(self.base_dir, relative)

    def rules_path(self) -> Path | None:
        if not self.rules_file:
            return None
        return Path(self.base_dir, self.rules_file)

    def decision_settings(self, rate_share: float = 1.0) -> DecisionSettings:
        return DecisionSettings(
            app_path=self.fields.app, event_path=self.fields.event,
            sample_keys=tuple(self.fields.sample_keys), time_path=self.fields.time,
            seed=self.sampling_seed, tag_headers=self.tag.headers,
            quarantine_rate=self.quarantine_sample_rate if self.topics.quarantine else 0.0,
            rate_share=rate_share)


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "base_dir"}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"unknown config key(s): {', '.join(where + k for k in unknown)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{path}.{name}" if path else name)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)  # type: ignore[arg-type]
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a table, got {value!r}")
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{path}: unsupported type")  # not used by the schema
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is Any or (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        return value
    raise ConfigError(f"{path}: expected {hint.__name__}, got {value!r}")


def _validate(cfg: GateConfig) -> None:
    def check(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    check(cfg.workers >= 0, "workers: must be >= 0 (0 means one per CPU)")
    check(0.0 <= cfg.quarantine_sample_rate <= 1.0, "quarantine_sample_rate: must be in 0..1")
    check(0 <= cfg.sampling_seed < 2**32, "sampling_seed: must be an unsigned 32-bit integer")
    check(cfg.rules_reload_s > 0, "rules_reload_s: must be > 0")
    k = cfg.kafka
    check(bool(k.bootstrap_servers), "kafka.bootstrap_servers: required")
    check(bool(k.group_id), "kafka.group_id: required")
    check(bool(k.input_topic), "kafka.input_topic: required")
    check(k.batch_size >= 1, "kafka.batch_size: must be >= 1")
    check(k.engine in ("python", "native"), "kafka.engine: must be \"python\" or \"native\"")
    check(k.batch_timeout_ms >= 0, "kafka.batch_timeout_ms: must be >= 0")
    check(k.max_inflight_batches >= 1, "kafka.max_inflight_batches: must be >= 1")
    check(k.session_timeout_ms >= 1000, "kafka.session_timeout_ms: must be >= 1000")
    t = cfg.topics
    names = [t.p0, t.p1, t.p2, t.dlq] + ([t.quarantine] if t.quarantine else [])
    check(all(names), "topics: p0, p1, p2 and dlq must be non-empty")
    check(len(set(names + [k.input_topic])) == len(names) + 1,
          "topics: input, priority, dlq and quarantine topics must all differ")
    check(t.partitions >= 1, "topics.partitions: must be >= 1")
    check(t.replication_factor >= 1, "topics.replication_factor: must be >= 1")
    for name in ("app", "event", "time"):
        p = getattr(cfg.fields, name)
        check(p != "" and "" not in p.split("."), f"fields.{name}: not a dotted path: {p!r}")
    check(len(cfg.fields.sample_keys) >= 1, "fields.sample_keys: at least one path")
    for i, p in enumerate(cfg.fields.sample_keys):
        check(p != "" and "" not in p.split("."), f"fields.sample_keys[{i}]: not a dotted path: {p!r}")
    for p in cfg.ttl_days.P0, cfg.ttl_days.P1, cfg.ttl_days.P2:
        check(p >= 1, "ttl_days: every priority keeps data at least 1 day")
    o = cfg.observe
    check(not o.metrics_listen or ":" in o.metrics_listen,
          f"observe.metrics_listen: expected host:port or empty, got {o.metrics_listen!r}")
    check(o.telemetry_interval_s > 0, "observe.telemetry_interval_s: must be > 0")
    check(o.stats_interval_s >= o.telemetry_interval_s,
          "observe.stats_interval_s: must be >= observe.telemetry_interval_s")
    check(o.stats_max_keys >= 100, "observe.stats_max_keys: must be >= 100")
    check(o.stats_window_minutes >= 1, "observe.stats_window_minutes: must be >= 1")
    check(set(o.unit_price) <= {"P0", "P1", "P2"}, "observe.unit_price: keys are P0, P1, P2")
    check(all(isinstance(v, int | float) and v >= 0 for v in o.unit_price.values()),
          "observe.unit_price: prices must be numbers >= 0")
    check(o.surge_factor > 1, "observe.surge_factor: must be > 1")
    check(o.surge_floor >= 0, "observe.surge_floor: must be >= 0")
    check(o.surge_calm_intervals >= 1, "observe.surge_calm_intervals: must be >= 1")
    check(o.surge_action in ("flag", "cap", "downgrade"),
          f"observe.surge_action: one of flag, cap, downgrade, got {o.surge_action!r}")
    c = cfg.control
    check(c.push_timeout_s > 0, "control.push_timeout_s: must be > 0")
    check(1 <= c.max_message_mb <= 2000, "control.max_message_mb: must be in 1..2000")
    check(1 <= c.max_push_mb <= 16384, "control.max_push_mb: must be in 1..16384")
    check(bool(c.tls_cert) == bool(c.tls_key), "control.tls_cert and control.tls_key: give both or neither")
    check(not c.tls_client_ca or bool(c.tls_cert),
          "control.tls_client_ca: mutual TLS needs tls_cert and tls_key too")
    check(":" in c.listen, f"control.listen: expected host:port, got {c.listen!r}")
    check(bool(c.state_dir), "control.state_dir: required")
    _validate_dump(cfg, check)
    check(cfg.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
          f"log_level: one of DEBUG, INFO, WARNING, ERROR, got {cfg.log_level!r}")
    check(cfg.log_format in LOG_FORMATS,
          f"log_format: one of {', '.join(LOG_FORMATS)}, got {cfg.log_format!r}")


DUMP_COMPRESSIONS = ("zstd", "snappy", "gzip", "lz4", "brotli", "none")


def _validate_dump(cfg: GateConfig, check: typing.Callable[[bool, str], None]) -> None:
    d = cfg.dump
    prios = ("P0", "P1", "P2")
    check(bool(d.root), "dump.root: required")
    check(bool(d.group_id), "dump.group_id: required")
    # One group for two jobs would make the gate and the dump rebalance each other.
    check(d.group_id != cfg.kafka.group_id, "dump.group_id: must differ from kafka.group_id")
    check(bool(d.priorities), "dump.priorities: at least one priority")
    for i, p in enumerate(d.priorities):
        check(p in prios, f"dump.priorities[{i}]: one of P0, P1, P2, got {p!r}")
    check(len(set(d.priorities)) == len(d.priorities), "dump.priorities: duplicates")
    for name in ("user_id_field", "device_id_field"):
        p = getattr(d, name)
        check(p != "" and "" not in p.split("."), f"dump.{name}: not a dotted path: {p!r}")
    check(d.roll_mb > 0, "dump.roll_mb: must be > 0")
    check(set(d.roll_seconds) <= set(prios), "dump.roll_seconds: keys are P0, P1, P2")
    for k, v in d.roll_seconds.items():
        check(isinstance(v, int | float) and not isinstance(v, bool) and v > 0,
              f"dump.roll_seconds.{k}: must be a number > 0, got {v!r}")
    check(d.row_group_mb > 0, "dump.row_group_mb: must be > 0")
    check(d.compression in DUMP_COMPRESSIONS,
          f"dump.compression: one of {', '.join(DUMP_COMPRESSIONS)}, got {d.compression!r}")
    check(d.janitor_interval_s >= 0, "dump.janitor_interval_s: must be >= 0 (0: never)")
    check(not d.metrics_listen or ":" in d.metrics_listen,
          f"dump.metrics_listen: expected host:port or empty, got {d.metrics_listen!r}")


def parse_config(data: dict[str, Any], base_dir: str = ".") -> GateConfig:
    cfg = _build(GateConfig, data, "")
    cfg = dataclasses.replace(cfg, base_dir=base_dir)
    _validate(cfg)
    return cfg


def load_config(path: str | os.PathLike[str] | None) -> GateConfig:
    """Read and validate a TOML config; ``None`` gives the defaults."""
    if path is None:
        return parse_config({})
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    try:
        return parse_config(data, str(p.parent))
    except (ConfigError, RulesError) as e:
        raise ConfigError(f"{p}: {e}") from None
