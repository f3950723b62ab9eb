"""Protobuf <-> domain conversions (etl_gate/control/serde.py): round trips,
proto defaults, and SPEC section 2 validation of pushed rules with errors that
name the entry, as the core names it for the same JSON."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from etl_gate.control import serde
from etl_gate.control.model import GateStatus, PushResult, RulesInfo, WorkerState, WorkerView
from etl_gate.core.rules import (
    AppSettings,
    Rule,
    RulesError,
    RulesSnapshot,
    parse_delta,
    parse_snapshot,
)
from etl_gate.pb.control.v1 import control_pb2 as pb

SPEC = {
    "version": 42,
    "apps": {"1128": {"mode": "enforce", "default_priority": "P2"}, "7": {"mode": "monitor"}},
    "rules": [
        {"app": "1128", "event": "video_play", "priority": "P0"},
        {"app": "1128", "event": "feed_scroll", "priority": "P2", "sample_rate": 0.1},
        {"app": "1128", "event": "debug_trace", "state": "offline"},
        {"app": "1128", "event": "like", "priority": "P1", "sample_key": "device_id",
         "max_rate": 5000},
    ],
}


def to_snapshot(requests: Any) -> RulesSnapshot:
    return serde.snapshot_from_requests(list(requests))


def pushed(obj: dict[str, Any], chunk: int = serde.DEFAULT_CHUNK_RULES) -> RulesSnapshot:
    """JSON -> requests (as the CLI sends) -> wire bytes -> snapshot (as the gate reads)."""
    wire = [r.SerializeToString() for r in serde.json_snapshot_to_requests(obj, chunk)]
    return to_snapshot(pb.PushSnapshotRequest.FromString(b) for b in wire)


def stream(header: pb.SnapshotHeader, chunks: list[list[pb.Rule]]) -> list[pb.PushSnapshotRequest]:
    out = [pb.PushSnapshotRequest(header=header)]
    out += [pb.PushSnapshotRequest(chunk=pb.RuleChunk(rules=c)) for c in chunks]
    return out


def pb_rules_stream(rules: list[pb.Rule], chunk: int = 3, version: int = 1) -> list[pb.PushSnapshotRequest]:
    return stream(pb.SnapshotHeader(version=version, rule_count=len(rules)),
                  [rules[i:i + chunk] for i in range(0, len(rules), chunk)])


def good(n: int) -> list[pb.Rule]:
    return [pb.Rule(app="1128", event=f"e{i}", priority=pb.P1) for i in range(n)]


# --- round trips ----------------------------------------------------------------


def test_spec_json_pushes_to_the_same_snapshot_the_core_parses() -> None:
    assert pushed(SPEC) == parse_snapshot(SPEC)
    assert pushed(SPEC, chunk=1) == parse_snapshot(SPEC)


def test_snapshot_round_trips_through_requests() -> None:
    snap = parse_snapshot(SPEC)
    for chunk in (1, 2, 3, 100):
        reqs = list(serde.snapshot_to_requests(snap, chunk))
        assert len(reqs) == 1 + math.ceil(len(snap.rules) / chunk)
        assert reqs[0].header.rule_count == 4
        assert to_snapshot(reqs) == snap
        assert parse_snapshot(serde.requests_to_json(reqs)) == snap


def test_empty_snapshot() -> None:
    snap = RulesSnapshot(7, {}, {})
    reqs = list(serde.snapshot_to_requests(snap))
    assert len(reqs) == 1
    assert to_snapshot(reqs) == snap
    assert pushed({"version": 7}) == snap


def test_numeric_app_ids_become_their_json_text() -> None:
    snap = pushed({"version": 1, "apps": {"1128": {}}, "rules": [{"app": 1128, "event": "a"}]})
    assert list(snap.rules) == [("1128", "a")]


def test_every_field_value_survives_the_round_trip() -> None:
    rules = {}
    for i, (prio, rate, offline, key, cap) in enumerate([
            (0, 1.0, False, None, None), (1, 0.0, False, None, None), (2, 0.5, True, "a.b", 1.5),
            (2, -0.0, False, "device_id", 1e9), (1, 1e-9, False, None, 0.001)]):
        rules[("a", f"e{i}")] = Rule("a", f"e{i}", prio, rate, offline, key, cap)
    snap = RulesSnapshot.from_rules(3, rules, {"a": AppSettings(True, 0), "b": AppSettings(False, 2)})
    back = to_snapshot(serde.snapshot_to_requests(snap))
    assert back == snap
    assert math.copysign(1, back.rules[("a", "e3")].sample_rate) == -1


def test_delta_round_trips_and_matches_the_core() -> None:
    obj = {"base_version": 42, "version": 43, "apps": {"9": {"mode": "monitor"}},
           "upserts": [{"app": 9, "event": "x", "priority": "P0", "sample_rate": 0.25}],
           "deletes": [{"app": "1128", "event": "like"}]}
    delta = serde.delta_from_pb(pb.ApplyDeltaRequest.FromString(
        serde.json_delta_to_pb(obj).SerializeToString()))
    assert delta == parse_delta(obj)
    assert serde.delta_from_pb(serde.delta_to_pb(delta)) == delta


# --- proto defaults -----------------------------------------------------------------


def test_unspecified_enums_and_unset_optionals_take_the_spec_defaults() -> None:
    header = pb.SnapshotHeader(version=1, rule_count=1, apps=[pb.AppSettings(app="a")])
    snap = to_snapshot(stream(header, [[pb.Rule(app="a", event="e")]]))
    assert snap.rules[("a", "e")] == Rule("a", "e", priority=1, sample_rate=1.0, offline=False,
                                          sample_key=None, max_rate=None)
    assert snap.apps["a"] == AppSettings(monitor=False, default_priority=2)


def test_explicit_zero_sample_rate_is_not_an_unset_one() -> None:
    rules = [pb.Rule(app="a", event="zero", sample_rate=0.0), pb.Rule(app="a", event="unset"),
             pb.Rule(app="a", event="negzero", sample_rate=-0.0)]
    snap = to_snapshot(pb_rules_stream(rules))
    assert snap.rules[("a", "zero")].sample_rate == 0.0
    assert snap.rules[("a", "unset")].sample_rate == 1.0
    assert snap.rules[("a", "negzero")].sample_rate == 0.0


def test_priority_mapping() -> None:
    rules = [pb.Rule(app="a", event=str(p), priority=p) for p in (0, 1, 2, 3)]
    snap = to_snapshot(pb_rules_stream(rules))
    assert [r.priority for r in snap.rules.values()] == [1, 0, 1, 2]
    apps = [pb.AppSettings(app=str(p), default_priority=p) for p in (0, 1, 2, 3)]
    assert [s.default_priority for s in serde.apps_from_pb(apps).values()] == [2, 0, 1, 2]


def test_worker_states_match_the_proto() -> None:
    proto = serde.proto_worker_states()
    assert {f"WORKER_STATE_{s.name}" if s.name == "UNSPECIFIED" else s.name: s.value
            for s in WorkerState} == proto


def test_status_and_results_round_trip() -> None:
    info = RulesInfo(version=42, rule_count=4, digest="ab" * 32, applied_at=1700000000.25, app_count=2)
    workers = [WorkerView(0, 101, WorkerState.RUNNING, 42, 17, 1234.5, 99, 0),
               WorkerView(1, 102, WorkerState.DEAD, 41, -1, 0.0, 0, 3)]
    status = GateStatus("gate-a", True, info, workers)
    assert serde.status_from_pb(pb.Status.FromString(serde.status_to_pb(status).SerializeToString())) \
        == status
    assert serde.status_from_pb(serde.status_to_pb(GateStatus("g", False, None))) == \
        GateStatus("g", False, None, [])
    result = PushResult(info, [(0, 42), (1, 42)], 0.5)
    assert serde.push_result_from_pb(serde.push_result_to_pb(result)) == result


def test_watch_interval() -> None:
    assert serde.watch_interval(pb.WatchStatusRequest()) == 5.0
    assert serde.watch_interval(pb.WatchStatusRequest(interval_seconds=2)) == 2.0
    assert serde.watch_interval(pb.WatchStatusRequest(interval_seconds=1e-9)) == 0.1
    assert serde.watch_interval(pb.WatchStatusRequest(interval_seconds=float("nan"))) == 5.0


# --- validation -------------------------------------------------------------------

BAD_RULES = [
    {"app": "1128", "event": "x", "priority": "P1", "sample_rate": 1.5},
    {"app": "1128", "event": "x", "sample_rate": -0.1},
    {"app": "1128", "event": "x", "sample_rate": float("nan")},
    {"app": "1128", "event": "x", "sample_rate": float("inf")},
    {"app": "1128", "event": ""},
    {"app": "", "event": "x"},
    {"app": "1128", "event": "x", "sample_key": ""},
    {"app": "1128", "event": "x", "sample_key": "a..b"},
    # Floats: protobuf carries numbers as doubles, so the message says 0.0 where
    # the core, given the JSON integer 0, says 0.
    {"app": "1128", "event": "x", "max_rate": 0.0},
    {"app": "1128", "event": "x", "max_rate": -0.0},
    {"app": "1128", "event": "x", "max_rate": -5.0},
    {"app": "1128", "event": "x", "max_rate": float("inf")},
    {"app": "1128", "event": "video_play"},  # duplicate of rules[0]
]


@pytest.mark.parametrize("chunk", [1, 3, 100])
@pytest.mark.parametrize("bad", BAD_RULES, ids=lambda b: repr(b)[:60])
def test_a_bad_rule_is_named_as_the_core_names_it(bad: dict[str, Any], chunk: int) -> None:
    obj = {"version": 42, "rules": [*SPEC["rules"], bad]}
    with pytest.raises(RulesError) as core:
        parse_snapshot(obj)
    with pytest.raises(RulesError) as ours:
        pushed(obj, chunk)
    assert str(ours.value) == str(core.value)
    assert str(ours.value).startswith("rules[4]")


def test_entries_are_numbered_across_chunks() -> None:
    rules = good(10)
    rules[7] = pb.Rule(app="1128", event="late", sample_rate=2.0)
    with pytest.raises(RulesError, match=r"^rules\[7\] \(app '1128', event 'late'\): sample_rate"):
        to_snapshot(pb_rules_stream(rules, chunk=3))


def test_duplicates_across_chunks_name_the_second_entry() -> None:
    rules = good(10)
    rules[8] = pb.Rule(app="1128", event="e2")
    with pytest.raises(RulesError, match=r"^rules\[8\] \(app '1128', event 'e2'\): duplicate key"):
        to_snapshot(pb_rules_stream(rules, chunk=3))


def test_the_first_error_in_stream_order_wins() -> None:
    rules = good(10)
    rules[5] = pb.Rule(app="1128", event="e1")  # duplicate, earlier than ...
    rules[6] = pb.Rule(app="1128", event="")  # ... an empty event in the same chunk
    with pytest.raises(RulesError, match=r"^rules\[5\]"):
        to_snapshot(pb_rules_stream(rules, chunk=10))


def test_enum_numbers_the_proto_does_not_define_are_rejected() -> None:
    for field, fragment in (("priority", "unknown priority 9"), ("state", "state must be")):
        rules = good(3) + [pb.Rule(app="1128", event="x", **{field: 9})]
        with pytest.raises(RulesError) as info:
            to_snapshot(pb_rules_stream(rules))
        assert str(info.value).startswith("rules[3] (app '1128', event 'x')")
        assert fragment in str(info.value)


def test_bad_app_settings_are_rejected() -> None:
    for apps, fragment in (([pb.AppSettings(app="a", mode=5)], "apps['a']: mode"),
                           ([pb.AppSettings(app="a", default_priority=7)], "apps['a']: unknown priority"),
                           ([pb.AppSettings(app="")], "apps[0]: 'app' must be"),
                           ([pb.AppSettings(app="a"), pb.AppSettings(app="a")], "apps[1] (app 'a')")):
        header = pb.SnapshotHeader(version=1, apps=apps)
        with pytest.raises(RulesError) as info:
            to_snapshot(stream(header, []))
        assert fragment in str(info.value)


def test_stream_shape_is_checked() -> None:
    header = pb.SnapshotHeader(version=1, rule_count=4)
    with pytest.raises(RulesError, match="must start with a SnapshotHeader"):
        to_snapshot([])
    with pytest.raises(RulesError, match="must start with a SnapshotHeader"):
        to_snapshot(stream(header, [good(4)])[1:])
    with pytest.raises(RulesError, match="announced 4 rules but the stream carried 3"):
        to_snapshot(stream(header, [good(3)]))
    with pytest.raises(RulesError, match="more rules than the 4"):
        to_snapshot(stream(header, [good(3), good(5)[3:]]))
    with pytest.raises(RulesError, match="message 2: expected a RuleChunk, got header"):
        to_snapshot(stream(header, [good(2)]) + [pb.PushSnapshotRequest(header=header)])
    with pytest.raises(RulesError, match="got an empty message"):
        to_snapshot([pb.PushSnapshotRequest(header=header), pb.PushSnapshotRequest()])


def test_delta_errors() -> None:
    base = {"base_version": 1, "version": 2}
    with pytest.raises(RulesError, match=r"^upserts\[1\] \(app 'a', event 'x'\): duplicate key"):
        serde.delta_from_pb(serde.json_delta_to_pb(
            {**base, "upserts": [{"app": "a", "event": "x"}, {"app": "a", "event": "x"}]}))
    with pytest.raises(RulesError, match=r"^deletes\[0\] \(app 'a', event 'x'\): also upserted"):
        serde.delta_from_pb(serde.json_delta_to_pb(
            {**base, "upserts": [{"app": "a", "event": "x"}], "deletes": [{"app": "a", "event": "x"}]}))
    with pytest.raises(RulesError, match=r"^upserts\[0\] \(app 'a', event 'x'\): sample_rate"):
        serde.delta_from_pb(pb.ApplyDeltaRequest(base_version=1, version=2, upserts=[
            pb.Rule(app="a", event="x", sample_rate=3)]))
    with pytest.raises(RulesError, match=r"deletes\[0\]: needs a non-empty"):
        serde.delta_from_pb(pb.ApplyDeltaRequest(base_version=1, version=2,
                                                 deletes=[pb.RuleKey(app="a")]))


# --- the fast path agrees with the exact path ---------------------------------------------


def random_rule(rng: random.Random, i: int, bad: float = 0.0) -> pb.Rule:
    msg = pb.Rule(app=str(rng.randrange(5)), event=f"e{i}", priority=rng.randrange(4),
                  state=rng.randrange(3))
    if rng.random() < 0.3:
        msg.sample_rate = rng.choice([0.0, -0.0, 0.5, 1.0, 1e-6, rng.random()])
    if rng.random() < 0.2:
        msg.sample_key = rng.choice(["device_id", "a.b.c", "user"])
    if rng.random() < 0.2:
        msg.max_rate = rng.choice([0.5, 100.0, 1e12])
    if rng.random() < bad:
        field, value = rng.choice([("sample_rate", 1.01), ("sample_rate", float("nan")),
                                   ("sample_key", ""), ("sample_key", ".x"), ("max_rate", 0.0),
                                   ("max_rate", -1.0), ("event", ""), ("app", ""), ("priority", 4),
                                   ("state", 3), ("event", f"e{rng.randrange(i + 1)}")])
        setattr(msg, field, value)
    return msg


def exact(requests: list[pb.PushSnapshotRequest]) -> RulesSnapshot:
    """The reference: one rule at a time, as core/rules.py parses a JSON list."""
    header = requests[0].header
    rules: dict[tuple[str, str], Rule] = {}
    for i, m in enumerate(m for r in requests[1:] for m in r.chunk.rules):
        rule = serde.rule_from_pb(m, f"rules[{i}]")
        if (rule.app, rule.event) in rules:
            raise RulesError(f"rules[{i}] (app {rule.app!r}, event {rule.event!r}): "
                             "duplicate key: the same (app, event) appears twice")
        rules[(rule.app, rule.event)] = rule
    return RulesSnapshot.from_rules(header.version, rules, serde.apps_from_pb(header.apps))


def outcome(convert: Any, reqs: list[pb.PushSnapshotRequest]) -> Any:
    try:
        return convert(reqs)
    except RulesError as e:
        return str(e)


def test_fast_path_builds_what_the_exact_path_builds() -> None:
    rng = random.Random(7)
    for trial in range(20):
        rules = [random_rule(rng, i) for i in range(rng.randrange(1, 300))]
        reqs = pb_rules_stream(rules, chunk=rng.choice([1, 7, 50, 1000]), version=trial)
        assert to_snapshot(reqs) == exact(reqs)


def test_fast_path_fails_where_and_as_the_exact_path_fails() -> None:
    rng = random.Random(11)
    errors = 0
    for trial in range(300):
        rules = [random_rule(rng, i, bad=0.01) for i in range(rng.randrange(1, 200))]
        reqs = pb_rules_stream(rules, chunk=rng.choice([1, 7, 50, 1000]), version=trial)
        want = outcome(exact, reqs)
        assert outcome(to_snapshot, reqs) == want
        errors += isinstance(want, str)
    assert errors > 50  # the bad cases were exercised


def test_fast_path_takes_the_common_case_and_defers_when_unsure() -> None:
    table = serde.RuleTable()
    plain = pb.RuleChunk(rules=[pb.Rule(app="a", event=f"e{i}", sample_rate=0.5) for i in range(5)])
    assert table._fast(plain.rules, plain.SerializeToString()) is not None
    # An event name holding the bytes of a set-but-empty sample_key: a false
    # alarm the exact path clears.
    odd = pb.RuleChunk(rules=[pb.Rule(app="a", event="2\x00"), pb.Rule(app="a", event="b")])
    assert table._fast(odd.rules, odd.SerializeToString()) is None
    snap = to_snapshot(stream(pb.SnapshotHeader(version=1, rule_count=2), [list(odd.rules)]))
    assert snap.rules[("a", "2\x00")] == Rule("a", "2\x00")


# --- JSON -> protobuf (CLI side) ------------------------------------------------------------


@pytest.mark.parametrize("obj, fragment", [
    ({"version": 1, "rules": [{"app": "a", "event": "x", "priority": "P9"}]},
     "rules[0] (app 'a', event 'x'): unknown priority 'P9'"),
    ({"version": 1, "rules": [{"app": "a", "event": "x", "state": "gone"}]},
     "rules[0] (app 'a', event 'x'): state must be"),
    ({"version": 1, "rules": [{"app": "a", "event": "x", "sample_rate": "0.5"}]},
     "rules[0] (app 'a', event 'x'): sample_rate must be a number"),
    ({"version": 1, "rules": [{"app": "a", "event": "x", "max_rate": True}]},
     "max_rate must be a number"),
    ({"version": 1, "rules": [{"app": True, "event": "x"}]}, "rules[0]: 'app' must be"),
    ({"version": 1, "rules": [{"app": "a", "event": "x", "prio": "P1"}]},
     "rules[0] (app 'a', event 'x'): "),
    ({"version": 1, "rules": ["nope"]}, "rules[0]: expected an object"),
    ({"version": -1}, "snapshot.version: version must be an unsigned 64-bit integer"),
    ({"version": True}, "snapshot.version"),
    ({"rules": []}, "'version' is required"),
    ({"version": 1, "extra": 1}, "unknown field(s) extra"),
    ({"version": 1, "apps": {"a": {"mode": "loud"}}}, "apps['a']: mode"),
    ({"version": 1, "rules": {}}, "rules: expected a list"),
])
def test_json_the_proto_cannot_carry_is_refused_by_entry(obj: dict[str, Any], fragment: str) -> None:
    with pytest.raises(RulesError) as info:
        list(serde.json_snapshot_to_requests(obj))
    assert fragment in str(info.value)


def test_json_nulls_mean_what_they_mean_to_the_core() -> None:
    obj = {"version": 1, "rules": [{"app": "a", "event": "x", "sample_key": None, "max_rate": None}]}
    assert pushed(obj) == parse_snapshot(obj)
    bad = {"version": 1, "rules": [{"app": "a", "event": "x", "sample_rate": None}]}
    with pytest.raises(RulesError, match="sample_rate must be a number"):
        pushed(bad)


def test_json_conversion_is_lazy_after_the_header() -> None:
    obj = {"version": 1, "rules": [{"app": "a", "event": "x"}, {"app": "a", "event": "y",
                                                               "priority": "P9"}]}
    it = serde.json_snapshot_to_requests(obj, chunk_size=1)
    assert next(it).header.rule_count == 2
    first = next(it).chunk
    assert [g.events for g in first.plain] == [["x"]] and not first.rules
    with pytest.raises(RulesError, match=r"rules\[1\]"):
        next(it)


def test_json_input_is_not_modified() -> None:
    obj = {"version": 1, "rules": [{"app": 5, "event": "x", "priority": "P0", "state": "offline"}]}
    before = repr(obj)
    list(serde.json_snapshot_to_requests(obj))
    assert repr(obj) == before


# --- plain rules as per-app columns ------------------------------------------------------


def random_json_snapshot(rng: random.Random, n: int, bad: float = 0.0) -> dict[str, Any]:
    rules: list[Any] = []
    for _ in range(n):
        rule: dict[str, Any] = {"app": rng.choice(["a", "b", "c", 7]), "event": f"e{rng.randrange(3 * n)}"}
        if rng.random() < 0.7:
            rule["priority"] = rng.choice(["P0", "P1", "P2"])
        roll = rng.random()
        if roll < 0.1:
            rule["sample_rate"] = rng.choice([0.0, 0.5, 1.0])
        elif roll < 0.15:
            rule["state"] = rng.choice(["active", "offline"])
        if rng.random() < bad:
            # What the gate rejects (what protobuf cannot carry, the CLI does, earlier).
            field, value = rng.choice([("event", ""), ("app", ""), ("sample_rate", 2.0),
                                       ("max_rate", 0.0), ("sample_key", "a..b")])
            rule[field] = value
        rules.append(rule)
    return {"version": 3, "apps": {"a": {"mode": "monitor"}}, "rules": rules}


def core_outcome(obj: dict[str, Any]) -> Any:
    try:
        return parse_snapshot(obj)
    except RulesError as e:
        return str(e)


def pushed_outcome(obj: dict[str, Any], chunk: int) -> Any:
    try:
        return pushed(obj, chunk)
    except RulesError as e:
        return str(e)


def test_columns_push_what_the_core_parses_and_fail_as_it_fails() -> None:
    """Random JSON (apps interleaved, duplicates, bad entries) through the CLI's
    conversion and the gate's: the same snapshot, or the same error naming the
    same entry, whatever the chunking."""
    rng = random.Random(21)
    errors = 0
    for trial in range(150):
        obj = random_json_snapshot(rng, rng.randrange(1, 120), bad=rng.choice([0.0, 0.02]))
        want = core_outcome(obj)
        for chunk in (1, 7, 1000):
            assert pushed_outcome(obj, chunk) == want, (trial, chunk)
        errors += isinstance(want, str)
    assert errors > 30


def test_plain_rules_travel_as_columns_numbered_as_in_the_json() -> None:
    obj = {"version": 1, "rules": [{"app": "a", "event": "x", "priority": "P0"},
                                   {"app": "b", "event": "y", "sample_rate": 0.5},
                                   {"app": "b", "event": "z"}, {"app": "a", "event": "w", "priority": "P2"}]}
    chunk = list(serde.json_snapshot_to_requests(obj))[1].chunk
    assert [(r.app, r.event) for r in chunk.rules] == [("b", "y")]
    assert [(g.app, list(g.events), g.priorities) for g in chunk.plain] == [
        ("a", ["x", "w"], bytes([pb.P0, pb.P2])), ("b", ["z"], bytes([pb.P1]))]
    assert list(chunk.entries) == [1, 0, 3, 2]
    in_order = list(serde.json_snapshot_to_requests({"version": 1, "rules": obj["rules"][:1]}))[1]
    assert not in_order.chunk.entries  # JSON order kept: no numbers needed


def plain_stream(groups: list[pb.PlainRules], rows: list[pb.Rule] = (), entries: list[int] = (),
                 count: int | None = None) -> list[pb.PushSnapshotRequest]:
    n = len(rows) + sum(len(g.events) for g in groups) if count is None else count
    return stream(pb.SnapshotHeader(version=1, rule_count=n), [])[:1] + [
        pb.PushSnapshotRequest(chunk=pb.RuleChunk(rules=rows, plain=groups, entries=entries))]


def test_plain_columns_are_validated_and_named() -> None:
    ok = plain_stream([pb.PlainRules(app="a", events=["x", "y"], priorities=bytes([0, 3]))])
    assert to_snapshot(ok).tables == {"a": {"x": 1, "y": 2}}
    for groups, entries, message in [
        ([pb.PlainRules(app="a", events=["x", ""], priorities=bytes([1, 1]))], [],
         "rules[1] (app 'a'): 'event' must be a non-empty string"),
        ([pb.PlainRules(app="", events=["x"], priorities=bytes([1]))], [], "rules[0]: 'app' must be"),
        ([pb.PlainRules(app="a", events=["x", "y"], priorities=bytes([1, 9]))], [5, 4],
         "rules[4] (app 'a', event 'y'): unknown priority 9"),
        ([pb.PlainRules(app="a", events=["x", "y", "x"], priorities=bytes([1, 2, 3]))], [],
         "rules[2] (app 'a', event 'x'): duplicate key"),
        ([pb.PlainRules(app="a", events=["x", "y", "x"], priorities=bytes([1, 2, 3]))], [9, 8, 7],
         "rules[9] (app 'a', event 'x'): duplicate key"),  # the later entry is the duplicate
        ([pb.PlainRules(app="a", events=["x", "y"], priorities=bytes([1]))], [],
         "push: plain rules of app 'a': 2 events but 1 priorities"),
        ([pb.PlainRules(app="a", events=["x"], priorities=bytes([1]))], [0, 1],
         "push: a chunk of 1 rules numbers 2 entries"),
    ]:
        with pytest.raises(RulesError) as info:
            to_snapshot(plain_stream(groups, entries=entries))
        assert str(info.value).startswith(message), (str(info.value), message)


def test_a_plain_column_duplicating_a_row_or_an_earlier_chunk_is_named() -> None:
    rows = [pb.Rule(app="a", event="x", sample_rate=0.5)]
    with pytest.raises(RulesError, match=r"^rules\[1\] \(app 'a', event 'x'\): duplicate key"):
        to_snapshot(plain_stream([pb.PlainRules(app="a", events=["x"], priorities=b"\x01")], rows))
    two = pb_rules_stream([pb.Rule(app="a", event="x")], chunk=1)
    two[0].header.rule_count = 2
    two.append(pb.PushSnapshotRequest(chunk=pb.RuleChunk(
        plain=[pb.PlainRules(app="a", events=["x"], priorities=b"\x01")])))
    with pytest.raises(RulesError, match=r"^rules\[1\] \(app 'a', event 'x'\): duplicate key"):
        to_snapshot(two)


def test_export_sends_plain_rules_as_columns() -> None:
    snap = parse_snapshot(SPEC)
    reqs = list(serde.snapshot_to_requests(snap))
    assert [(g.app, list(g.events)) for g in reqs[1].chunk.plain] == [("1128", ["video_play"])]
    assert len(reqs[1].chunk.rules) == 3
    assert parse_snapshot(serde.requests_to_json(reqs)) == snap



def test_a_push_sums_its_digest_on_the_way() -> None:
    from etl_gate.core.digest import tables_digest_sum

    rng = random.Random(13)
    for _ in range(20):
        obj = random_json_snapshot(rng, rng.randrange(0, 80))
        obj["rules"] = list({(str(r["app"]), r["event"]): r for r in obj["rules"]}.values())
        for chunk in (3, 1000):
            snap = pushed(obj, chunk)
            assert snap.rules_digest is not None
            assert snap.rules_digest % 2**128 == tables_digest_sum(snap.tables, {})
    # A chunk the fast path sent to the exact one (a false alarm) is summed too.
    odd = [pb.Rule(app="a", event="2\x00"), pb.Rule(app="a", event="b", sample_rate=0.5)]
    snap = to_snapshot(stream(pb.SnapshotHeader(version=1, rule_count=2), [odd]))
    assert snap.rules_digest == tables_digest_sum(snap.tables, {})


def test_a_push_reuses_the_names_of_the_rules_in_force() -> None:
    obj = {"version": 1, "rules": [{"app": "a", "event": "x"}, {"app": "b", "event": "x"}]}
    first = pushed(obj)
    wire = [r.SerializeToString() for r in serde.json_snapshot_to_requests({**obj, "version": 2})]
    second = serde.snapshot_from_requests((pb.PushSnapshotRequest.FromString(b) for b in wire),
                                          previous=first)
    assert second.tables == {"a": {"x": 1}, "b": {"x": 1}}
    assert next(iter(second.tables["a"])) is next(iter(first.tables["a"]))
    assert next(iter(second.tables["b"])) is next(iter(first.tables["b"]))
