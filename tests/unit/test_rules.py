"""Rules snapshots and deltas: SPEC section 2 (validation, defaults, deltas)."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from etl_gate.core import (
    AppSettings,
    Rule,
    RulesError,
    RulesSnapshot,
    apply_delta,
    check_newer,
    parse_delta,
    parse_snapshot,
)


def good_rules() -> list[dict[str, Any]]:
    return [
        {"app": "1128", "event": "video_play", "priority": "P0"},
        {"app": "1128", "event": "feed_scroll", "priority": "P2", "sample_rate": 0.1},
        {"app": "1128", "event": "debug_trace", "state": "offline"},
        {"app": "1128", "event": "like", "priority": "P1", "sample_key": "device_id",
         "max_rate": 5000},
    ]


def snapshot_with(bad_rule: dict[str, Any]) -> dict[str, Any]:
    """The SPEC example with one more rule, at index 4."""
    return {"version": 42, "rules": good_rules() + [bad_rule]}


def rejects(obj: dict[str, Any], *fragments: str) -> str:
    with pytest.raises(RulesError) as info:
        parse_snapshot(obj)
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in error {msg!r}"
    return msg


# --- the SPEC example parses, with its defaults -------------------------------------------

def test_spec_example_parses() -> None:
    snap = parse_snapshot({
        "version": 42,
        "apps": {"1128": {"mode": "enforce", "default_priority": "P2"}},
        "rules": good_rules(),
    })
    assert snap.version == 42
    assert snap.rules[("1128", "video_play")] == Rule("1128", "video_play", priority=0)
    assert snap.rules[("1128", "feed_scroll")] == Rule("1128", "feed_scroll", 2, 0.1)
    assert snap.rules[("1128", "debug_trace")].offline is True
    like = snap.rules[("1128", "like")]
    assert (like.sample_key, like.max_rate, like.priority) == ("device_id", 5000.0, 1)
    assert snap.apps == {"1128": AppSettings(monitor=False, default_priority=2)}


def test_rule_defaults_are_p1_rate_1_active() -> None:
    snap = parse_snapshot({"version": 1, "rules": [{"app": "a", "event": "e"}]})
    rule = snap.rules[("a", "e")]
    assert rule.priority == 1  # P1
    assert rule.sample_rate == 1.0
    assert rule.offline is False
    assert rule.sample_key is None and rule.max_rate is None


def test_rules_and_apps_are_optional() -> None:
    snap = parse_snapshot({"version": 0})
    assert (snap.version, dict(snap.rules), dict(snap.apps)) == (0, {}, {})


@pytest.mark.parametrize("rate", [0, 0.0, 0.5, 1, 1.0])
def test_sample_rate_bounds_are_inclusive(rate: float) -> None:
    rule = {"app": "a", "event": "e", "sample_rate": rate}
    snap = parse_snapshot({"version": 1, "rules": [rule]})
    got = snap.rules[("a", "e")].sample_rate
    assert got == rate and type(got) is float


def test_app_number_is_the_same_app_as_string() -> None:
    snap = parse_snapshot({"version": 1, "rules": [{"app": 1128, "event": "e"}]})
    assert list(snap.rules) == [("1128", "e")]
    assert snap.rules[("1128", "e")].app == "1128"


def test_app_number_and_string_collide_as_duplicates() -> None:
    rejects({"version": 1, "rules": [{"app": 1128, "event": "e"}, {"app": "1128", "event": "e"}]},
            "rules[1]", "'1128'", "'e'", "duplicate")


# --- app settings ---------------------------------------------------------------------------

def test_app_settings_defaults_enforce_p2() -> None:
    snap = parse_snapshot({"version": 1, "apps": {"7": {}}})
    assert snap.apps["7"] == AppSettings(monitor=False, default_priority=2)


def test_app_settings_monitor_with_priority() -> None:
    snap = parse_snapshot({"version": 1, "apps": {"7": {"mode": "monitor",
                                                        "default_priority": "P0"}}})
    assert snap.apps["7"] == AppSettings(monitor=True, default_priority=0)


@pytest.mark.parametrize("settings, fragment", [
    ({"mode": "observe"}, "mode"),
    ({"default_priority": "P3"}, "unknown priority"),
    ({"mode": "monitor", "colour": "red"}, "colour"),
])
def test_bad_app_settings_name_the_app(settings: dict[str, Any], fragment: str) -> None:
    rejects({"version": 1, "apps": {"7": settings}}, "apps['7']", fragment)


# --- every bad rule rejects the whole push, naming the entry --------------------------------

@pytest.mark.parametrize("priority", ["P3", "p0", "", 0, None, "HIGH"])
def test_unknown_priority(priority: Any) -> None:
    rejects(snapshot_with({"app": "9", "event": "boom", "priority": priority}),
            "rules[4]", "'9'", "'boom'", "unknown priority")


@pytest.mark.parametrize("rate", [-0.01, 1.01, 2, -1, float("nan"), float("inf"), True, False,
                                  "0.5", None, [0.5]])
def test_sample_rate_outside_0_1_or_not_a_number(rate: Any) -> None:
    rejects(snapshot_with({"app": "9", "event": "boom", "sample_rate": rate}),
            "rules[4]", "'9'", "'boom'", "sample_rate")


def test_nan_message_shows_the_value() -> None:
    msg = rejects(snapshot_with({"app": "9", "event": "boom", "sample_rate": math.nan}))
    assert "nan" in msg


@pytest.mark.parametrize("event", ["", None, 5, ["e"]])
def test_empty_or_non_string_event(event: Any) -> None:
    rejects(snapshot_with({"app": "9", "event": event}), "rules[4]", "'9'", "'event'")


def test_missing_event() -> None:
    rejects(snapshot_with({"app": "9"}), "rules[4]", "'9'", "'event'")


@pytest.mark.parametrize("app", ["", None, True, {"id": 1}, [1]])
def test_bad_app(app: Any) -> None:
    rejects(snapshot_with({"app": app, "event": "boom"}), "rules[4]", "'app'")


def test_duplicate_key_in_one_snapshot() -> None:
    rejects(snapshot_with({"app": "1128", "event": "like", "priority": "P0"}),
            "rules[4]", "'1128'", "'like'", "duplicate")


def test_unknown_rule_field_names_index_app_and_event() -> None:
    rejects(snapshot_with({"app": "9", "event": "boom", "prio": "P0"}),
            "rules[4]", "'9'", "'boom'", "unknown field", "prio")


@pytest.mark.parametrize("state", ["retired", "", None, True])
def test_bad_state(state: Any) -> None:
    rejects(snapshot_with({"app": "9", "event": "boom", "state": state}),
            "rules[4]", "'9'", "'boom'", "state")


@pytest.mark.parametrize("max_rate", [0, -5, float("inf"), float("nan"), True, "100", [1]])
def test_bad_max_rate(max_rate: Any) -> None:
    rejects(snapshot_with({"app": "9", "event": "boom", "max_rate": max_rate}),
            "rules[4]", "'9'", "'boom'", "max_rate")


@pytest.mark.parametrize("key", ["", "a..b", ".a", "a.", 5])
def test_bad_sample_key(key: Any) -> None:
    rejects(snapshot_with({"app": "9", "event": "boom", "sample_key": key}),
            "rules[4]", "'9'", "'boom'", "sample_key")


def test_rule_that_is_not_an_object() -> None:
    rejects({"version": 1, "rules": [{"app": "a", "event": "e"}, "a/e"]}, "rules[1]", "object")


@pytest.mark.parametrize("version", [-1, 2**64, 1.5, "42", True, None])
def test_bad_version(version: Any) -> None:
    rejects({"version": version, "rules": []}, "version")


def test_missing_version() -> None:
    rejects({"rules": []}, "version", "required")


def test_unknown_snapshot_field() -> None:
    rejects({"version": 1, "rules": [], "comment": "x"}, "snapshot", "comment")


def test_rules_must_be_a_list() -> None:
    rejects({"version": 1, "rules": {"app": "a", "event": "e"}}, "rules", "list")


# --- version ordering -----------------------------------------------------------------------

def test_check_newer() -> None:
    current = parse_snapshot({"version": 42})
    check_newer(None, 0)  # nothing in force yet: any version goes
    check_newer(current, 43)
    for stale in (42, 41, 0):
        with pytest.raises(RulesError, match=rf"version {stale} is not newer .*version 42"):
            check_newer(current, stale)


# --- deltas ---------------------------------------------------------------------------------

def base() -> Any:
    return parse_snapshot({
        "version": 10,
        "apps": {"1128": {"mode": "enforce"}},
        "rules": [
            {"app": "1128", "event": "a", "priority": "P0"},
            {"app": "1128", "event": "b", "priority": "P1"},
            {"app": "1128", "event": "c", "priority": "P2"},
        ],
    })


def test_delta_upserts_replace_and_add_deletes_remove() -> None:
    delta = parse_delta({
        "base_version": 10, "version": 11,
        "upserts": [{"app": "1128", "event": "a", "priority": "P2", "sample_rate": 0.5},
                    {"app": 1128, "event": "d"}],
        "deletes": [{"app": 1128, "event": "b"}],
        "apps": {"1128": {"mode": "monitor", "default_priority": "P1"}},
    })
    new = apply_delta(base(), delta)
    assert new.version == 11
    assert set(new.rules) == {("1128", "a"), ("1128", "c"), ("1128", "d")}
    assert new.rules[("1128", "a")] == Rule("1128", "a", 2, 0.5)
    assert new.rules[("1128", "d")] == Rule("1128", "d")
    assert new.rules[("1128", "c")] == Rule("1128", "c", 2)
    assert new.apps["1128"] == AppSettings(monitor=True, default_priority=1)


def test_apply_delta_does_not_mutate_the_input() -> None:
    current = base()
    before = copy.deepcopy(current.to_json())
    rules_before = dict(current.rules)
    delta = parse_delta({"base_version": 10, "version": 12,
                         "upserts": [{"app": "1128", "event": "a", "priority": "P2"}],
                         "deletes": [{"app": "1128", "event": "c"}],
                         "apps": {"1128": {"mode": "monitor"}}})
    new = apply_delta(current, delta)
    assert new is not current and new.rules is not current.rules
    assert current.to_json() == before
    assert dict(current.rules) == rules_before
    assert current.version == 10


def test_delta_applies_only_on_its_base_version() -> None:
    for base_version in (9, 11):
        delta = parse_delta({"base_version": base_version, "version": 20})
        with pytest.raises(RulesError, match=f"base_version {base_version} .*version 10"):
            apply_delta(base(), delta)


@pytest.mark.parametrize("version", [10, 9])
def test_delta_version_must_be_newer(version: int) -> None:
    delta = parse_delta({"base_version": 10, "version": version})
    with pytest.raises(RulesError, match="not newer"):
        apply_delta(base(), delta)


def test_delta_delete_of_missing_rule_is_rejected() -> None:
    delta = parse_delta({"base_version": 10, "version": 11,
                         "deletes": [{"app": "1128", "event": "zzz"}]})
    with pytest.raises(RulesError, match="'1128'.*'zzz'"):
        apply_delta(base(), delta)


def test_delta_bad_upsert_names_the_entry() -> None:
    with pytest.raises(RulesError) as info:
        parse_delta({"base_version": 10, "version": 11,
                     "upserts": [{"app": "1128", "event": "a"},
                                 {"app": "1128", "event": "x", "priority": "P9"}]})
    assert "upserts[1]" in str(info.value) and "'x'" in str(info.value)


def test_delta_duplicate_upsert_is_rejected() -> None:
    with pytest.raises(RulesError, match=r"upserts\[1\].*duplicate"):
        parse_delta({"base_version": 10, "version": 11,
                     "upserts": [{"app": "1128", "event": "a"}, {"app": 1128, "event": "a"}]})


def test_delta_delete_and_upsert_of_same_key_is_rejected() -> None:
    with pytest.raises(RulesError, match=r"deletes\[0\].*also upserted"):
        parse_delta({"base_version": 10, "version": 11,
                     "upserts": [{"app": "1128", "event": "a"}],
                     "deletes": [{"app": "1128", "event": "a"}]})


@pytest.mark.parametrize("entry", [{"app": "1128"}, {"event": "a"}, {"app": "", "event": "a"},
                                   {"app": "1128", "event": ""}, {"app": True, "event": "a"}])
def test_delta_bad_delete_entry(entry: dict[str, Any]) -> None:
    with pytest.raises(RulesError, match=r"deletes\[0\]"):
        parse_delta({"base_version": 10, "version": 11, "deletes": [entry]})


@pytest.mark.parametrize("missing", ["base_version", "version"])
def test_delta_requires_both_versions(missing: str) -> None:
    obj = {"base_version": 10, "version": 11}
    del obj[missing]
    with pytest.raises(RulesError, match=missing):
        parse_delta(obj)


def test_delta_unknown_field() -> None:
    with pytest.raises(RulesError, match="delta.*rules"):
        parse_delta({"base_version": 10, "version": 11, "rules": []})


# --- round trip -----------------------------------------------------------------------------

def test_snapshot_round_trips_through_to_json() -> None:
    original = parse_snapshot({
        "version": 42,
        "apps": {"1128": {"mode": "monitor", "default_priority": "P0"}, "7": {}},
        "rules": good_rules() + [{"app": 7, "event": "x", "sample_rate": 0}],
    })
    again = parse_snapshot(original.to_json())
    assert again == original
    assert again.to_json() == original.to_json()


def test_to_json_writes_defaults_compactly() -> None:
    snap = parse_snapshot({"version": 1, "rules": [{"app": "a", "event": "e"}]})
    assert snap.to_json() == {"version": 1, "apps": {},
                              "rules": [{"app": "a", "event": "e", "priority": "P1"}]}


# --- per-app tables -----------------------------------------------------------------


def test_snapshot_tables_hold_plain_rules_as_priorities() -> None:
    snap = parse_snapshot({"version": 1, "rules": [
        {"app": "a", "event": "p", "priority": "P0"},
        {"app": "a", "event": "s", "sample_rate": 0.5},
        {"app": "b", "event": "q", "priority": "P2", "state": "active", "sample_rate": 1}]})
    assert snap.tables == {"a": {"p": 0, "s": Rule("a", "s", 1, 0.5)}, "b": {"q": 2}}
    assert snap.rule_count == len(snap.rules) == 3
    assert snap.rules[("b", "q")] == Rule("b", "q", 2)
    assert ("a", "p") in snap.rules and ("a", "q") not in snap.rules and "a" not in snap.rules
    assert list(snap.rules.values()) == [Rule("a", "p", 0), Rule("a", "s", 1, 0.5), Rule("b", "q", 2)]
    assert RulesSnapshot.from_rules(1, snap.rules) == RulesSnapshot(1, snap.tables)


def test_a_delta_copies_only_the_tables_it_touches_and_drops_emptied_ones() -> None:
    snap = parse_snapshot({"version": 1, "rules": [{"app": "a", "event": "x"},
                                                    {"app": "b", "event": "y"}]})
    new = apply_delta(snap, parse_delta({"base_version": 1, "version": 2,
                                         "deletes": [{"app": "a", "event": "x"}],
                                         "upserts": [{"app": "c", "event": "z", "priority": "P0"}]}))
    assert new.tables == {"b": {"y": 1}, "c": {"z": 0}} and new.rule_count == 2
    assert new.tables["b"] is snap.tables["b"]  # untouched: shared
    assert snap.tables == {"a": {"x": 1}, "b": {"y": 1}}  # the old snapshot is intact
