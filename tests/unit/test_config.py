"""The typed TOML config: defaults, unknown keys, types, validation, files."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest

from etl_gate.config import (
    ConfigError,
    FieldsConfig,
    GateConfig,
    KafkaConfig,
    TagConfig,
    TopicsConfig,
    TtlConfig,
    load_config,
    parse_config,
)
from etl_gate.core import DecisionSettings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "gate.toml"


def rejected(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return str(info.value)


# --- defaults -------------------------------------------------------------------------------

def test_defaults() -> None:
    cfg = load_config(None)
    assert cfg == parse_config({})
    assert cfg.workers == 0 and cfg.worker_count >= 1
    assert cfg.rules_path() is None
    assert cfg.sampling_seed == 0 and cfg.quarantine_sample_rate == 0.0
    assert cfg.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert cfg.kafka.input_topic == "events.raw"
    assert cfg.topics.priority_topics == ("events.p0", "events.p1", "events.p2")
    assert (cfg.topics.dlq, cfg.topics.quarantine) == ("events.dlq", "")
    assert cfg.fields == FieldsConfig("app_id", "event", ["user_id", "device_id"], "time")
    assert cfg.tag == TagConfig(headers=True, field="")
    assert [cfg.ttl_days.days(p) for p in range(3)] == [400, 180, 90]


def test_default_decision_settings_match_the_spec_defaults() -> None:
    assert load_config(None).decision_settings() == DecisionSettings()


def test_decision_settings_carry_the_config() -> None:
    cfg = parse_config({
        "sampling_seed": 7, "quarantine_sample_rate": 0.25,
        "topics": {"quarantine": "events.unregistered"},
        "fields": {"app": "h.app", "event": "h.ev", "sample_keys": ["uid"], "time": "ts"},
        "tag": {"headers": False, "field": "priority"},
    })
    assert cfg.decision_settings(rate_share=0.5) == DecisionSettings(
        app_path="h.app", event_path="h.ev", sample_keys=("uid",), time_path="ts", seed=7,
        tag_headers=False, quarantine_rate=0.25, rate_share=0.5)


def test_quarantine_rate_needs_a_quarantine_topic() -> None:
    cfg = parse_config({"quarantine_sample_rate": 0.5})
    assert cfg.decision_settings().quarantine_rate == 0.0


def test_workers_and_int_to_float() -> None:
    cfg = parse_config({"workers": 3, "rules_reload_s": 5})
    assert cfg.worker_count == 3
    assert cfg.rules_reload_s == 5.0 and type(cfg.rules_reload_s) is float


# --- unknown keys ---------------------------------------------------------------------------

@pytest.mark.parametrize("data, path", [
    ({"wrokers": 1}, "wrokers"),
    ({"kafka": {"batch_sise": 10}}, "kafka.batch_sise"),
    ({"topics": {"p3": "events.p3"}}, "topics.p3"),
    ({"ttl_days": {"P3": 10}}, "ttl_days.P3"),
    ({"tag": {"headers": True, "fields": "x"}}, "tag.fields"),
    ({"base_dir": "/tmp"}, "base_dir"),  # internal, not a config key
])
def test_unknown_key_is_rejected_with_its_dotted_path(data: dict[str, Any], path: str) -> None:
    msg = rejected(data)
    assert "unknown config key" in msg and path in msg


def test_all_unknown_keys_are_named() -> None:
    msg = rejected({"kafka": {"zeta": 1, "alpha": 2}})
    assert "kafka.alpha" in msg and "kafka.zeta" in msg


def test_librdkafka_passthrough_tables_take_any_keys() -> None:
    cfg = parse_config({"kafka": {"consumer": {"fetch.min.bytes": 1024},
                                  "producer": {"batch.size": 1_000_000}}})
    assert cfg.kafka.consumer == {"fetch.min.bytes": 1024}
    assert cfg.kafka.producer == {"batch.size": 1_000_000}


# --- wrong types ----------------------------------------------------------------------------

@pytest.mark.parametrize("data, fragment", [
    ({"kafka": {"batch_size": "x"}}, "kafka.batch_size: expected int, got 'x'"),
    ({"kafka": {"batch_size": 1.5}}, "kafka.batch_size: expected int"),
    ({"kafka": {"batch_size": True}}, "kafka.batch_size: expected int, got True"),
    ({"workers": False}, "workers: expected int"),
    ({"rules_reload_s": "2s"}, "rules_reload_s: expected float"),
    ({"quarantine_sample_rate": True}, "quarantine_sample_rate: expected float"),
    ({"tag": {"headers": "yes"}}, "tag.headers: expected bool, got 'yes'"),
    ({"tag": {"headers": 1}}, "tag.headers: expected bool"),
    ({"topics": {"p0": 0}}, "topics.p0: expected str, got 0"),
    ({"fields": {"sample_keys": "user_id"}}, "fields.sample_keys: expected a list"),
    ({"fields": {"sample_keys": ["user_id", 5]}}, "fields.sample_keys[1]: expected str"),
    ({"kafka": {"consumer": "x"}}, "kafka.consumer: expected a table"),
    ({"kafka": 5}, "kafka: expected a table"),
    ({"ttl_days": {"P0": "forever"}}, "ttl_days.P0: expected int"),
])
def test_wrong_type_is_named(data: dict[str, Any], fragment: str) -> None:
    assert fragment in rejected(data)


# --- validation -----------------------------------------------------------------------------

@pytest.mark.parametrize("data, fragment", [
    ({"workers": -1}, "workers: must be >= 0"),
    ({"quarantine_sample_rate": 1.5}, "quarantine_sample_rate: must be in 0..1"),
    ({"quarantine_sample_rate": -0.1}, "quarantine_sample_rate: must be in 0..1"),
    ({"sampling_seed": 2**32}, "sampling_seed: must be an unsigned 32-bit integer"),
    ({"sampling_seed": -1}, "sampling_seed: must be an unsigned 32-bit integer"),
    ({"rules_reload_s": 0}, "rules_reload_s: must be > 0"),
    ({"kafka": {"bootstrap_servers": ""}}, "kafka.bootstrap_servers: required"),
    ({"kafka": {"group_id": ""}}, "kafka.group_id: required"),
    ({"kafka": {"input_topic": ""}}, "kafka.input_topic: required"),
    ({"kafka": {"batch_size": 0}}, "kafka.batch_size: must be >= 1"),
    ({"kafka": {"batch_timeout_ms": -1}}, "kafka.batch_timeout_ms: must be >= 0"),
    ({"kafka": {"max_inflight_batches": 0}}, "kafka.max_inflight_batches: must be >= 1"),
    ({"kafka": {"session_timeout_ms": 999}}, "kafka.session_timeout_ms: must be >= 1000"),
    ({"topics": {"dlq": ""}}, "topics: p0, p1, p2 and dlq must be non-empty"),
    ({"topics": {"p1": "events.p0"}}, "must all differ"),
    ({"topics": {"quarantine": "events.dlq"}}, "must all differ"),
    ({"kafka": {"input_topic": "events.p2"}}, "must all differ"),
    ({"topics": {"partitions": 0}}, "topics.partitions: must be >= 1"),
    ({"topics": {"replication_factor": 0}}, "topics.replication_factor: must be >= 1"),
    ({"fields": {"app": ""}}, "fields.app: not a dotted path"),
    ({"fields": {"event": "a..b"}}, "fields.event: not a dotted path: 'a..b'"),
    ({"fields": {"time": "ts."}}, "fields.time: not a dotted path"),
    ({"fields": {"sample_keys": []}}, "fields.sample_keys: at least one path"),
    ({"ttl_days": {"P2": 0}}, "ttl_days: every priority keeps data at least 1 day"),
    ({"log_level": "LOUD"}, "log_level: one of DEBUG, INFO, WARNING, ERROR, got 'LOUD'"),
])
def test_validation_messages(data: dict[str, Any], fragment: str) -> None:
    assert fragment in rejected(data)


def test_boundaries_that_are_allowed() -> None:
    cfg = parse_config({"sampling_seed": 2**32 - 1, "quarantine_sample_rate": 1,
                        "topics": {"quarantine": "q"}, "log_level": "debug",
                        "kafka": {"batch_timeout_ms": 0, "session_timeout_ms": 1000}})
    assert cfg.sampling_seed == 2**32 - 1
    assert cfg.decision_settings().quarantine_rate == 1.0


# --- files ----------------------------------------------------------------------------------

def test_toml_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "gate.toml"
    path.parent.mkdir()
    path.write_text(
        'workers = 4\n'
        'rules_file = "rules/current.json"\n'
        'sampling_seed = 99\n'
        '[kafka]\n'
        'bootstrap_servers = "broker:9093"\n'
        'batch_size = 100\n'
        'consumer = { "fetch.wait.max.ms" = 10 }\n'
        '[topics]\n'
        'p0 = "gold"\n'
        'quarantine = "events.unregistered"\n'
        '[fields]\n'
        'app = "header.app_id"\n'
        'sample_keys = ["uid"]\n'
        '[tag]\n'
        'headers = false\n'
        'field = "priority"\n'
        '[ttl_days]\n'
        'P2 = 7\n')
    cfg = load_config(path)
    assert cfg == GateConfig(
        workers=4, rules_file="rules/current.json", sampling_seed=99,
        kafka=KafkaConfig(bootstrap_servers="broker:9093", batch_size=100,
                          consumer={"fetch.wait.max.ms": 10}),
        topics=TopicsConfig(p0="gold", quarantine="events.unregistered"),
        fields=FieldsConfig(app="header.app_id", sample_keys=["uid"]),
        tag=TagConfig(headers=False, field="priority"),
        ttl_days=TtlConfig(P2=7),
        base_dir=str(path.parent))
    assert cfg.rules_path() == path.parent / "rules" / "current.json"


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gate.toml"
    path.write_text("[kafka]\nbatch_size = 'many'\n")
    with pytest.raises(ConfigError, match=r"gate\.toml: kafka\.batch_size: expected int"):
        load_config(path)
    path.write_text("[kafka\n")
    with pytest.raises(ConfigError, match=r"gate\.toml: not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "gate.toml"
    path.write_text("# nothing\n")
    assert load_config(path) == dataclasses.replace(load_config(None), base_dir=str(tmp_path))


def test_example_config_loads_and_shows_the_defaults() -> None:
    cfg = load_config(EXAMPLE)
    assert (cfg.workers, cfg.rules_file) == (2, "rules.json")
    assert dataclasses.replace(cfg, workers=0, rules_file="", base_dir=".") == load_config(None)


def test_example_config_shows_every_key() -> None:
    data = tomllib.loads(EXAMPLE.read_text())

    def keys(cls: type) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    assert set(data) == keys(GateConfig) - {"base_dir"}
    for name, cls in [("kafka", KafkaConfig), ("topics", TopicsConfig),
                      ("fields", FieldsConfig), ("tag", TagConfig), ("ttl_days", TtlConfig)]:
        assert set(data[name]) == keys(cls), name
