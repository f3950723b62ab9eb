"""The workers' collector tuning (etl_gate/kafka/collector.py) rests on what
the loop makes being freed by reference counting alone: a decider that is
swapped out must go when its last reference does, with no collection."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref
from collections.abc import Iterator

import orjson
import pytest

from etl_gate.core import Decider, DecisionSettings, parse_snapshot
from etl_gate.core.packed import PackedDelta, pack, pack_delta
from etl_gate.core.rules import parse_delta

RULES = [{"app": "1128", "event": "play", "priority": "P0"},
         {"app": "1128", "event": "scroll", "sample_rate": 0.1, "sample_key": "user_id"},
         {"app": "1128", "event": "spam", "max_rate": 5},
         {"app": "7", "event": "old", "state": "offline"}]


@pytest.fixture
def no_collector() -> Iterator[None]:
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def test_a_replaced_decider_is_freed_without_the_collector(no_collector: None) -> None:
    snap = parse_snapshot({"version": 1, "apps": {"9": {"mode": "monitor"}}, "rules": RULES})
    settings = DecisionSettings()
    first = Decider(pack(snap), settings)
    for event in ("play", "scroll", "spam", "old", "nope"):
        for user in range(20):
            first.decide(orjson.dumps({"app_id": "1128", "event": event, "user_id": f"u{user}"}), 1000)
    delta: PackedDelta = pack_delta(parse_delta({
        "base_version": 1, "version": 2, "upserts": [{"app": "1128", "event": "new", "max_rate": 1}],
        "deletes": [{"app": "7", "event": "old"}]}))
    second = first.with_delta(delta)
    third = Decider(pack(snap), settings, previous=second)
    refs = [weakref.ref(d) for d in (first, second, third)]
    del first, second, third
    assert [r() for r in refs] == [None, None, None]


def test_tuning_raises_the_young_threshold_and_freezes_what_exists() -> None:
    code = ("import gc; from etl_gate.kafka.collector import tune_for_batches; "
            "before = gc.get_freeze_count(); tune_for_batches(5000); "
            "print(gc.get_threshold()[0], before, gc.get_freeze_count())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=60).stdout.split()
    young, before, after = map(int, out)
    assert young == 20_000 and before == 0 and after > 1000
