"""The packed rules form (supervisor -> workers, state dir) and deltas applied
to a live decider: same decisions as a decider built from scratch."""

from __future__ import annotations

import random

import orjson
import pytest

from etl_gate.core import (
    BLOCKED,
    PASSED,
    SAMPLED_OUT,
    UNREGISTERED,
    Decider,
    DecisionSettings,
    apply_delta,
    parse_delta,
    parse_snapshot,
)
from etl_gate.core.packed import PackedDelta, PackedRules, pack, pack_delta, unpack
from etl_gate.core.rules import BaseVersionMismatch, _fast_rule, parse_rule

SNAP = {
    "version": 5,
    "apps": {"m": {"mode": "monitor", "default_priority": "P1"}},
    "rules": [
        {"app": "a", "event": "p0", "priority": "P0"},
        {"app": "a", "event": "p2", "priority": "P2"},
        {"app": "a", "event": "half", "priority": "P1", "sample_rate": 0.5},
        {"app": "a", "event": "gone", "state": "offline"},
        {"app": "b", "event": "keyed", "sample_rate": 0.3, "sample_key": "device_id"},
        {"app": "b", "event": "capped", "max_rate": 2},
        {"app": "m", "event": "known", "priority": "P0"},
    ],
}


def ev(app: str, event: str, user: str = "u1") -> bytes:
    return orjson.dumps({"app_id": app, "event": event, "user_id": user, "device_id": "d" + user})


def events() -> list[bytes]:
    names = ["p0", "p2", "half", "gone", "keyed", "capped", "known", "nope", "new"]
    return [ev(app, name, f"u{i}") for i in range(60) for app in ("a", "b", "m", "z")
            for name in names]


def decisions(d: Decider) -> list[tuple[int, int, object]]:
    return [(v.outcome, v.priority, v.headers) for v in (d.decide(e, 0) for e in events())]


def test_packed_round_trip_gives_the_same_snapshot_and_decisions() -> None:
    snap = parse_snapshot(SNAP)
    packed = pack(snap)
    again = PackedRules.from_bytes(packed.to_bytes())
    assert again == packed and packed.rule_count == 7
    assert unpack(again) == snap  # same rules (dict equality ignores order), apps, version
    s = DecisionSettings()
    assert decisions(Decider(again, s)) == decisions(Decider(snap, s))


def test_plain_rules_travel_as_names_only() -> None:
    packed = pack(parse_snapshot(SNAP))
    assert packed.plain == {"a": [["p0"], [], ["p2"]], "m": [["known"], [], []]}
    assert {(r.app, r.event) for r in packed.special} == {
        ("a", "half"), ("a", "gone"), ("b", "keyed"), ("b", "capped")}


DELTA = {
    "base_version": 5, "version": 6,
    "upserts": [{"app": "a", "event": "p0", "priority": "P2"},        # plain -> plain
                {"app": "a", "event": "half", "priority": "P0"},      # sampled -> plain
                {"app": "a", "event": "p2", "state": "offline"},      # plain -> special
                {"app": "z", "event": "new", "sample_rate": 0.25}],   # new app
    "deletes": [{"app": "b", "event": "keyed"}],
    "apps": {"z": {"mode": "monitor"}},
}


def test_delta_on_a_live_decider_equals_a_fresh_build() -> None:
    s = DecisionSettings()
    snap = parse_snapshot(SNAP)
    delta = parse_delta(DELTA)
    old = Decider(snap, s)
    new = old.with_delta(PackedDelta.from_bytes(pack_delta(delta).to_bytes()))
    fresh = Decider(apply_delta(snap, delta), s)
    assert new.version == 6 and new.rule_count == fresh.rule_count == 7
    assert decisions(new) == decisions(fresh)
    # The old decider was not touched: version 5 tables and headers.
    v = old.decide(ev("a", "p0"), 0)
    assert (v.priority, v.headers) == (0, [("priority", b"P0"), ("rules-version", b"5")])
    assert old.decide(ev("b", "keyed", "u1"), 0).outcome != UNREGISTERED
    v = new.decide(ev("a", "p0"), 0)
    assert (v.outcome, v.priority, v.headers) == (
        PASSED, 2, [("priority", b"P2"), ("rules-version", b"6")])
    assert new.decide(ev("a", "p2"), 0).outcome == BLOCKED
    assert new.decide(ev("b", "keyed"), 0).outcome == UNREGISTERED
    assert new.decide(ev("z", "other"), 0).outcome == UNREGISTERED
    assert new.decide(ev("z", "other"), 0).priority == 2  # monitor app, default P2


def test_every_routed_header_names_the_new_version_after_a_delta() -> None:
    new = Decider(parse_snapshot(SNAP), DecisionSettings()).with_delta(
        pack_delta(parse_delta(DELTA)))
    for e in events():
        v = new.decide(e, 0)
        if v.priority >= 0:
            assert v.headers is not None and ("rules-version", b"6") in v.headers


def test_delta_keeps_untouched_rate_buckets_and_rejects_a_wrong_base() -> None:
    d = Decider(parse_snapshot(SNAP), DecisionSettings())
    capped = ev("b", "capped")
    assert [d.decide(capped, 1000).outcome for _ in range(3)] == [PASSED, PASSED, 3 + 2]
    new = d.with_delta(pack_delta(parse_delta(DELTA)))
    assert new.decide(capped, 1000).outcome == 5  # still throttled: same bucket
    with pytest.raises(BaseVersionMismatch):
        new.with_delta(pack_delta(parse_delta(DELTA)))


def test_sampling_survives_a_delta() -> None:
    d = Decider(parse_snapshot(SNAP), DecisionSettings()).with_delta(
        pack_delta(parse_delta({"base_version": 5, "version": 6, "upserts": [
            {"app": "a", "event": "x", "sample_rate": 0.0}]})))
    assert d.decide(ev("a", "x"), 0).outcome == SAMPLED_OUT


def test_fast_rule_path_accepts_exactly_what_parse_rule_accepts() -> None:
    rng = random.Random(4)
    values = {
        "app": ["a", "", 7, None, True], "event": ["e", "", 3, None],
        "priority": ["P0", "P1", "P2", "P3", 1, None],
        "sample_rate": [0.0, 0.5, 1.0, 1, 0, 2, -0.1, True, "0.5", float("nan")],
        "state": ["active", "offline", "gone", None],
        "sample_key": ["device_id", ""], "max_rate": [5, 0, -1], "extra": [1],
    }
    for _ in range(5000):
        obj = {k: rng.choice(v) for k, v in values.items() if rng.random() < 0.5}
        fast = _fast_rule(obj)
        if fast is None:
            continue
        assert fast == parse_rule(obj, "rules[0]"), obj
