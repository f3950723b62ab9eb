"""The [dump] config section: defaults, validation naming the key, the example file."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest

from etl_gate.config import ConfigError, DumpConfig, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "gate.toml"


def test_defaults() -> None:
    d = parse_config({}).dump
    assert d.root == "dump" and d.group_id == "etl-gate-dump" and d.compression == "zstd"
    assert d.priorities == ["P0", "P1", "P2"]
    assert [d.roll_seconds_for(p) for p in ("P0", "P1", "P2")] == [60.0, 300.0, 900.0]


def test_roll_seconds_for_a_priority_left_out_keeps_its_default() -> None:
    d = parse_config({"dump": {"roll_seconds": {"P2": 30}}}).dump
    assert (d.roll_seconds_for("P0"), d.roll_seconds_for("P2")) == (60.0, 30.0)


@pytest.mark.parametrize("data, fragment", [
    ({"dump": {"root": ""}}, "dump.root: required"),
    ({"dump": {"group_id": "etl-gate"}}, "dump.group_id: must differ from kafka.group_id"),
    ({"dump": {"priorities": []}}, "dump.priorities: at least one priority"),
    ({"dump": {"priorities": ["P0", "P9"]}}, "dump.priorities[1]: one of P0, P1, P2, got 'P9'"),
    ({"dump": {"priorities": ["P0", "P0"]}}, "dump.priorities: duplicates"),
    ({"dump": {"user_id_field": "a..b"}}, "dump.user_id_field: not a dotted path"),
    ({"dump": {"roll_mb": 0}}, "dump.roll_mb: must be > 0"),
    ({"dump": {"roll_mb": "big"}}, "dump.roll_mb: expected float, got 'big'"),
    ({"dump": {"roll_seconds": {"P3": 1}}}, "dump.roll_seconds: keys are P0, P1, P2"),
    ({"dump": {"roll_seconds": {"P1": 0}}}, "dump.roll_seconds.P1: must be a number > 0"),
    ({"dump": {"roll_seconds": {"P1": "1m"}}}, "dump.roll_seconds.P1: must be a number > 0"),
    ({"dump": {"row_group_mb": -1}}, "dump.row_group_mb: must be > 0"),
    ({"dump": {"compression": "xz"}}, "dump.compression: one of zstd"),
    ({"dump": {"janitor_interval_s": -1}}, "dump.janitor_interval_s: must be >= 0"),
    ({"dump": {"janitor_dry_run": "yes"}}, "dump.janitor_dry_run: expected bool"),
    ({"dump": {"metrics_listen": "9465"}}, "dump.metrics_listen: expected host:port"),
    ({"dump": {"ttl": 3}}, "unknown config key(s): dump.ttl"),
])
def test_bad_values_name_the_key(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert fragment in str(info.value)


def test_example_config_documents_every_dump_key() -> None:
    data = tomllib.loads(EXAMPLE.read_text())
    assert set(data["dump"]) == {f.name for f in dataclasses.fields(DumpConfig)}
    assert load_config(EXAMPLE).dump == DumpConfig()
