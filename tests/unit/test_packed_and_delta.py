"""The packed rules form (supervisor -> workers, state dir) and deltas applied
to a live decider: same decisions as a decider built from scratch."""

from __future__ import annotations

import random
from typing import Any

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
    tables = {app: (plain, special) for app, plain, special in packed.tables()}
    assert {app: plain for app, (plain, _) in tables.items()} == {
        "a": {"p0": 0, "p2": 2}, "b": {}, "m": {"known": 0}}
    assert {(r.app, r.event) for r in packed.special} == {
        ("a", "half"), ("a", "gone"), ("b", "keyed"), ("b", "capped")}
    # Special rules name their settings by kind: one kind per distinct setting.
    assert sorted(packed.kinds) == sorted([(1, 0.5, False, None, None), (1, 1.0, True, None, None),
                                           (1, 0.3, False, "device_id", None),
                                           (1, 1.0, False, None, 2.0)])
    assert tables["a"][1] == {"half": packed.kinds.index((1, 0.5, False, None, None)),
                              "gone": packed.kinds.index((1, 1.0, True, None, None))}


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


# --- packed format 2: per-app segments, kinds, interned names -------------------------


def random_snapshot(rng: random.Random, n: int, version: int = 9) -> dict[str, object]:
    rules: list[dict[str, object]] = []
    for i in range(n):
        rule: dict[str, object] = {"app": rng.choice("abcd"), "event": f"e{i}",
                                   "priority": rng.choice(["P0", "P1", "P2"])}
        roll = rng.random()
        if roll < 0.1:
            rule["state"] = "offline"
        elif roll < 0.2:
            rule["sample_rate"] = rng.choice([0.0, 0.25, 0.5])
        elif roll < 0.25:
            rule["max_rate"] = rng.choice([1, 10])
        elif roll < 0.3:
            rule["sample_key"] = "device_id"
        rules.append(rule)
    return {"version": version, "apps": {"b": {"mode": "monitor"}}, "rules": rules}


def test_format_2_round_trips_random_snapshots() -> None:
    rng = random.Random(5)
    for n in (0, 1, 50, 400):
        snap = parse_snapshot(random_snapshot(rng, n))
        packed = pack(snap)
        blob = packed.to_bytes()
        assert blob.startswith(b"EGRULES2\n")
        again = PackedRules.from_bytes(blob)
        assert again == packed and again.rule_count == n
        assert again.to_bytes() == blob  # undecoded segments are written back as they are
        assert unpack(again) == snap
        assert decisions(Decider(again, DecisionSettings())) == decisions(
            Decider(snap, DecisionSettings()))


def test_the_first_packed_format_is_still_read() -> None:
    snap = parse_snapshot(SNAP)
    rules = snap.rules.values()
    v1 = orjson.dumps({
        "version": 5, "apps": {"m": [True, 1]},
        "plain": {"a": [["p0"], [], ["p2"]], "m": [["known"], [], []]},
        "special": [r for r in rules if not r.plain]}, default=tuple)
    packed = PackedRules.from_bytes(v1)
    assert packed == pack(snap)
    assert unpack(packed) == snap


def test_decoded_names_reuse_the_app_s_names_in_force() -> None:
    obj = {"version": 1, "rules": [{"app": "a", "event": "p0"}, {"app": "b", "event": "p0"},
                                   {"app": "b", "event": "s", "sample_rate": 0.5}]}
    blob = pack(parse_snapshot(obj)).to_bytes()
    first = {app: (plain, special) for app, plain, special in PackedRules.from_bytes(blob).tables()}
    a1, b1 = next(iter(first["a"][0])), next(iter(first["b"][0]))
    s1 = next(iter(first["b"][1]))
    assert a1 == b1 == "p0" and a1 is not b1  # per app: no map of every name
    in_force = {app: {**plain, **special} for app, (plain, special) in first.items()}
    again = {app: (plain, special) for app, plain, special in
             PackedRules.from_bytes(bytes(blob)).tables(in_force)}
    assert next(iter(again["a"][0])) is a1 and next(iter(again["b"][0])) is b1
    assert next(iter(again["b"][1])) is s1  # special rules' names too
    assert again == first
    # Only the app's own names are lent: app a's are not b's.
    only_b = {app: plain for app, plain, _ in
              PackedRules.from_bytes(bytes(blob)).tables({"b": in_force["b"]})}
    assert next(iter(only_b["b"])) is b1 and next(iter(only_b["a"])) is not a1


def test_a_new_decider_reuses_the_names_of_the_one_it_replaces() -> None:
    s = DecisionSettings()
    blob = pack(parse_snapshot(SNAP)).to_bytes()
    old = Decider(PackedRules.from_bytes(blob), s)
    new = Decider(PackedRules.from_bytes(bytes(blob)), s, previous=old)
    for app, capp in new._apps.items():
        old_keys = {k: k for k in old._apps[app].events}
        assert all(old_keys[k] is k for k in capp.events), app
    assert decisions(new) == decisions(old)


def test_rules_without_a_bucket_share_one_compiled_rule() -> None:
    obj = {"version": 1, "rules": [
        {"app": "a", "event": "s1", "sample_rate": 0.5}, {"app": "b", "event": "s2", "sample_rate": 0.5},
        {"app": "a", "event": "c1", "max_rate": 1}, {"app": "a", "event": "c2", "max_rate": 1},
        {"app": "a", "event": "off", "state": "offline", "max_rate": 1}]}
    d = Decider(PackedRules.from_bytes(pack(parse_snapshot(obj)).to_bytes()), DecisionSettings())
    a, b = d._apps["a"].events, d._apps["b"].events
    assert a["s1"] is b["s2"]  # same settings, no state
    assert a["c1"] is not a["c2"]  # each capped rule has its own bucket
    assert [d.decide(ev("a", "c1"), 0).outcome, d.decide(ev("a", "c1"), 0).outcome,
            d.decide(ev("a", "c2"), 0).outcome] == [PASSED, 5, PASSED]
    assert d.decide(ev("a", "off"), 0).outcome == BLOCKED
    # A delta's upsert with the same settings takes the shared rule too.
    new = d.with_delta(pack_delta(parse_delta({"base_version": 1, "version": 2, "upserts": [
        {"app": "c", "event": "s3", "sample_rate": 0.5}]})))
    assert new._apps["c"].events["s3"] is a["s1"]


def test_tables_digest_equals_the_per_rule_digest() -> None:
    from etl_gate.core.digest import digest_sum, tables_digest_sum

    rng = random.Random(8)
    obj: Any = random_snapshot(rng, 300)
    obj["rules"] += [
        {"app": "é", "event": "名前", "priority": "P0"},
        # Settings equal as values but written differently (the digest caches
        # lines by settings): -0.0 and 0.0, 1 and 1.0.
        {"app": "z", "event": "n", "sample_rate": -0.0}, {"app": "z", "event": "p", "sample_rate": 0.0},
        {"app": "z", "event": "c1", "max_rate": 1}, {"app": "z", "event": "c2", "max_rate": 1.0}]
    snap = parse_snapshot(obj)
    assert tables_digest_sum(snap.tables, snap.apps) == digest_sum(snap.rules.values(), snap.apps)
    # ... and the line of each is its own: -0.0 is not 0.0 in the digest.
    flipped = parse_snapshot({**obj, "rules": [
        {**r, "sample_rate": 0.0} if r.get("sample_rate") == 0.0 else r for r in obj["rules"]]})
    assert tables_digest_sum(flipped.tables, flipped.apps) != tables_digest_sum(snap.tables, snap.apps)


def test_a_negative_zero_rate_survives_packing() -> None:
    import math

    snap = parse_snapshot({"version": 1, "rules": [{"app": "a", "event": "n", "sample_rate": -0.0},
                                                   {"app": "a", "event": "p", "sample_rate": 0.0}]})
    back = unpack(PackedRules.from_bytes(pack(snap).to_bytes()))
    assert math.copysign(1, back.rules[("a", "n")].sample_rate) == -1  # the digest writes '-0.0'
    assert math.copysign(1, back.rules[("a", "p")].sample_rate) == 1
