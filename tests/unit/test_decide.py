"""Decider.decide: SPEC section 3, step by step, and the headers of section 4."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from etl_gate.core import (
    BLOCKED,
    MALFORMED,
    MALFORMED_REASONS,
    OUTCOMES,
    PASSED,
    SAMPLED_OUT,
    THROTTLED,
    UNREGISTERED,
    Decider,
    DecisionSettings,
    parse_snapshot,
)
from etl_gate.core.packed import pack_delta
from etl_gate.core.rules import parse_delta

RULES: list[dict[str, Any]] = [
    {"app": "1128", "event": "video_play", "priority": "P0"},
    {"app": "1128", "event": "like"},  # P1 by default
    {"app": "1128", "event": "feed_scroll", "priority": "P2", "sample_rate": 0.1},
    {"app": "1128", "event": "debug_trace", "priority": "P0", "state": "offline"},
    {"app": "2000", "event": "open", "priority": "P0"},
    {"app": "2000", "event": "old", "state": "offline"},
]
APPS: dict[str, Any] = {
    "2000": {"mode": "monitor", "default_priority": "P1"},
    "3000": {"mode": "monitor"},  # default_priority P2, no rules at all
}


def make(rules: list[dict[str, Any]] | None = None, apps: dict[str, Any] | None = None,
         version: int = 42, **settings: Any) -> Decider:
    snap = parse_snapshot({"version": version, "apps": APPS if apps is None else apps,
                           "rules": RULES if rules is None else rules})
    return Decider(snap, DecisionSettings(**settings))


def ev(**fields: Any) -> bytes:
    return orjson.dumps(fields)


# --- step 1: malformed ----------------------------------------------------------------------

@pytest.mark.parametrize("raw, reason", [
    (b"", "invalid_json"),
    (b"{", "invalid_json"),
    (b'{"app_id":"1128","event":"like"', "invalid_json"),  # truncated
    (b"{'app_id':'1128'}", "invalid_json"),  # not JSON quotes
    (b'{"app_id":"1128","event":"like",}', "invalid_json"),  # trailing comma
    (b'{"app_id":"1128","event":NaN}', "invalid_json"),
    (b'{"app_id":"1128","event":"l\xffke"}', "invalid_json"),  # invalid UTF-8 in a value
    (b'{"app_id":"1128","event":"like","x":"\xc3"}', "invalid_json"),  # cut UTF-8 sequence
    (b'{"app_id":"1128","event":"like","pr\xffops":1}', "invalid_json"),  # invalid UTF-8 key
    (b'{"app_id":"1128","event":"like"} {}', "invalid_json"),  # two values
    (b"[1, 2]", "not_object"),
    (b'[{"app_id":"1128","event":"like"}]', "not_object"),
    (b'"video_play"', "not_object"),
    (b"42", "not_object"),
    (b"null", "not_object"),
    (b"true", "not_object"),
    (b'{"event":"like"}', "missing_app"),
    (b"{}", "missing_app"),
    (b'{"app_id":true,"event":"like"}', "bad_app"),
    (b'{"app_id":false,"event":"like"}', "bad_app"),
    (b'{"app_id":null,"event":"like"}', "bad_app"),
    (b'{"app_id":{"id":"1128"},"event":"like"}', "bad_app"),
    (b'{"app_id":["1128"],"event":"like"}', "bad_app"),
    (b'{"app_id":"1128"}', "missing_event"),
    (b'{"app_id":"1128","event":7}', "bad_event"),
    (b'{"app_id":"1128","event":null}', "bad_event"),
    (b'{"app_id":"1128","event":["like"]}', "bad_event"),
    (b'{"app_id":"1128","event":{"name":"like"}}', "bad_event"),
    (b'{"app_id":"1128","event":true}', "bad_event"),
])
def test_malformed(raw: bytes, reason: str) -> None:
    v = make().decide(raw, 0)
    assert reason in MALFORMED_REASONS
    assert (OUTCOMES[v.outcome], v.reason) == ("malformed", reason)
    assert v.outcome == MALFORMED
    assert not v.routed and v.priority == -1 and v.headers is None and not v.quarantine


def test_app_is_checked_before_event() -> None:
    assert make().decide(b'{"event":7}', 0).reason == "missing_app"
    assert make().decide(b'{"app_id":null}', 0).reason == "bad_app"


def test_whitespace_around_a_valid_object_is_fine() -> None:
    v = make().decide(b' \r\n\t{ "app_id" : "1128" , "event" : "like" }\n ', 0)
    assert (v.outcome, v.priority) == (PASSED, 1)


def test_non_ascii_names_are_just_strings() -> None:
    d = make(rules=[{"app": "应用", "event": "播放", "priority": "P0"}], apps={})
    assert d.decide(ev(app_id="应用", event="播放"), 0).outcome == PASSED
    assert d.decide(ev(app_id="应用", event="播放 "), 0).outcome == UNREGISTERED


# --- app ids: numbers are their JSON text ---------------------------------------------------

def test_numeric_app_id_equals_string_app_id() -> None:
    d = make()
    as_number = d.decide(b'{"app_id":1128,"event":"video_play"}', 0)
    as_string = d.decide(b'{"app_id":"1128","event":"video_play"}', 0)
    assert as_number is as_string
    assert (as_number.outcome, as_number.priority) == (PASSED, 0)


def test_numeric_rule_app_matches_string_event_app() -> None:
    d = make(rules=[{"app": 77, "event": "e", "priority": "P2"}], apps={})
    assert d.decide(b'{"app_id":"77","event":"e"}', 0).priority == 2
    assert d.decide(b'{"app_id":77,"event":"e"}', 0).priority == 2


@pytest.mark.parametrize("app, sent, same", [
    ("0128", b"128", False),  # leading zero: 128 is app "128"
    ("128", b"0128", None),  # not JSON: malformed
    ("-0", b"0", False),  # 0 is written "0"
    ("-5", b"-5", True),
    ("0", b"-0", True),  # JSON -0 is the integer 0
    ("9223372036854775807", b"9223372036854775807", True),  # int64 max
    ("18446744073709551615", b"18446744073709551615", True),  # uint64 max: still an integer
    ("18446744073709551616", b"18446744073709551616", False),  # beyond: orjson reads a float
    ("1.8446744073709552e+19", b"18446744073709551616", True),  # ... written like this
    ("-9223372036854775809", b"-9223372036854775809", False),
])
def test_an_integer_app_id_is_the_app_its_json_text_names(app: str, sent: bytes,
                                                          same: bool | None) -> None:
    """The compiled decide looks registered integer apps up directly
    (``_number_apps``); it must agree with SPEC section 1 at every edge."""
    d = make(rules=[{"app": app, "event": "e", "priority": "P0"}], apps={})
    v = d.decide(b'{"app_id":' + sent + b',"event":"e"}', 0)
    if same is None:
        assert v.outcome == MALFORMED
    else:
        assert (v.outcome == PASSED) is same, v
        if same:
            assert d.seen.app == app


def test_an_integer_app_added_by_a_delta_is_looked_up_too() -> None:
    d = make(rules=[{"app": "1", "event": "e"}], apps={}, version=1)
    raw = b'{"app_id":77,"event":"e"}'
    assert d.decide(raw, 0).outcome == UNREGISTERED
    d2 = d.with_delta(pack_delta(parse_delta(
        {"base_version": 1, "version": 2, "upserts": [{"app": 77, "event": "e"}]})))
    assert d2.decide(raw, 0).outcome == PASSED
    assert d.decide(raw, 0).outcome == UNREGISTERED  # the old decider is untouched
    d3 = d2.with_delta(pack_delta(parse_delta(
        {"base_version": 2, "version": 3, "apps": {"78": {"mode": "monitor"}}})))
    assert d3.decide(b'{"app_id":78,"event":"x"}', 0).priority == 2  # a monitor app, by number


def test_float_app_id_is_not_the_integer_app() -> None:
    # 1128.0 is written "1128.0" by orjson: a different app than 1128 (SPEC section 1).
    v = make().decide(b'{"app_id":1128.0,"event":"video_play"}', 0)
    assert v.outcome == UNREGISTERED


# --- configurable field paths ---------------------------------------------------------------

def test_dotted_paths_reach_into_nested_objects() -> None:
    d = make(app_path="header.app_id", event_path="header.name")
    raw = ev(header={"app_id": 1128, "name": "video_play"}, app_id="nope", event="nope")
    v = d.decide(raw, 0)
    assert (v.outcome, v.priority) == (PASSED, 0)


@pytest.mark.parametrize("raw, reason", [
    (ev(app_id="1128", event="like"), "missing_app"),  # top level does not count
    (ev(header="1128", event="like"), "missing_app"),  # not an object on the way
    (ev(header=["1128"], event="like"), "missing_app"),
    (ev(header={}, event="like"), "missing_app"),
    (ev(header={"app_id": None}, event="like"), "bad_app"),
    (ev(header={"app_id": True}, event="like"), "bad_app"),
])
def test_dotted_app_path_malformed(raw: bytes, reason: str) -> None:
    d = make(app_path="header.app_id")
    assert d.decide(raw, 0).reason == reason


def test_custom_event_path() -> None:
    d = make(event_path="name")
    assert d.decide(ev(app_id="1128", name="like"), 0).priority == 1
    assert d.decide(ev(app_id="1128", event="like"), 0).reason == "missing_event"


@pytest.mark.parametrize("app_path, event_path", [
    ('a"pp', "ev ent"),  # a quote and a space: not identifiers, not source
    ("ap\u00e9", "x) or (1"),  # non-ASCII; text that would be code if pasted into source
    ("app_id", "hdr.ev"),  # a top-level app and a nested event in one decider
    ("hdr.app", "event"),
])
def test_any_field_name_works_in_the_compiled_decide(app_path: str, event_path: str) -> None:
    """``decide`` is compiled from a template with the paths' attributes in
    it (core/decide.py): a field name reaches the source only as hex digits."""
    def put(obj: dict[str, Any], path: str, value: Any) -> None:
        *parents, last = path.split(".")
        for part in parents:
            obj = obj.setdefault(part, {})
        obj[last] = value

    d = make(app_path=app_path, event_path=event_path)
    raw: dict[str, Any] = {"app_id": "nope", "event": "nope"}
    put(raw, app_path, 1128)
    put(raw, event_path, "video_play")
    v = d.decide(orjson.dumps(raw), 0)
    assert (v.outcome, v.priority) == (PASSED, 0)
    assert (d.seen.app, d.seen.event) == ("1128", "video_play")
    del raw[event_path.split(".")[0]]
    assert d.decide(orjson.dumps(raw), 0).reason == "missing_event"


# --- step 2: lookup -------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    ev(app_id="1128", event="nope"),
    ev(app_id="9999", event="video_play"),  # an app without rules
    ev(app_id="1128", event="Video_Play"),  # names are case-sensitive
    ev(app_id="1128", event=""),
])
def test_unregistered_in_enforce_mode_is_dropped(raw: bytes) -> None:
    v = make().decide(raw, 0)
    assert v.outcome == UNREGISTERED
    assert v.priority == -1 and not v.routed and v.headers is None and not v.quarantine


def test_enforce_is_the_default_mode_for_apps_with_settings() -> None:
    d = make(apps={"1128": {"default_priority": "P0"}})
    v = d.decide(ev(app_id="1128", event="nope"), 0)
    assert (v.outcome, v.priority) == (UNREGISTERED, -1)


def test_unregistered_in_monitor_mode_passes_with_default_priority() -> None:
    d = make()
    v = d.decide(ev(app_id=2000, event="nope"), 0)
    assert v.outcome == UNREGISTERED  # still counted as unregistered
    assert v.priority == 1 and v.routed  # the app's default_priority, P1
    assert v.headers == [("priority", b"P1"), ("rules-version", b"42")]
    assert not v.quarantine


def test_monitor_default_priority_defaults_to_p2() -> None:
    v = make().decide(ev(app_id="3000", event="anything"), 0)
    assert (v.outcome, v.priority) == (UNREGISTERED, 2)
    assert v.headers == [("priority", b"P2"), ("rules-version", b"42")]


def test_registered_events_in_monitor_app_use_their_rule() -> None:
    d = make()
    v = d.decide(ev(app_id="2000", event="open"), 0)
    assert (v.outcome, v.priority) == (PASSED, 0)
    assert d.decide(ev(app_id="2000", event="old"), 0).outcome == BLOCKED


def test_offline_is_blocked() -> None:
    v = make().decide(ev(app_id="1128", event="debug_trace", user_id="u1"), 0)
    assert v.outcome == BLOCKED
    assert v.priority == -1 and v.headers is None


def test_offline_is_blocked_before_sampling_and_rate_cap() -> None:
    d = make(rules=[{"app": "a", "event": "e", "state": "offline", "sample_rate": 0.0,
                     "max_rate": 1}], apps={})
    for _ in range(3):
        assert d.decide(ev(app_id="a", event="e"), 0).outcome == BLOCKED


# --- step 5: passed, with headers -----------------------------------------------------------

def test_passed_headers_exactly() -> None:
    v = make().decide(ev(app_id="1128", event="video_play"), 0)
    assert (v.outcome, v.priority, v.routed) == (PASSED, 0, True)
    assert v.headers == [("priority", b"P0"), ("rules-version", b"42")]
    assert v.reason is None and not v.quarantine


def test_default_priority_is_p1() -> None:
    v = make().decide(ev(app_id="1128", event="like"), 0)
    assert v.headers == [("priority", b"P1"), ("rules-version", b"42")]


def test_rules_version_header_is_the_deciding_version() -> None:
    v = make(version=18446744073709551615).decide(ev(app_id="1128", event="like"), 0)
    assert v.headers == [("priority", b"P1"), ("rules-version", b"18446744073709551615")]


def test_sampled_pass_carries_sample_rate_header() -> None:
    # mmh3.hash(b"u3", 0, signed=False) == 330920505 < int(0.1 * 2**32) == 429496729: kept
    v = make().decide(ev(app_id="1128", event="feed_scroll", user_id="u3"), 0)
    assert v.outcome == PASSED
    assert v.headers == [("priority", b"P2"), ("rules-version", b"42"), ("sample-rate", b"0.1")]


@pytest.mark.parametrize("rate, text", [(0.5, b"0.5"), (0.25, b"0.25"), (0.08, b"0.08"),
                                        (0.999, b"0.999"), (0.0001, b"0.0001")])
def test_sample_rate_header_is_decimal_text(rate: float, text: bytes) -> None:
    d = make(rules=[{"app": "a", "event": "e", "sample_rate": rate}], apps={})
    # mmh3.hash(b"", 0, signed=False) == 0: the empty user id is kept at any rate > 0
    v = d.decide(ev(app_id="a", event="e", user_id=""), 0)
    assert v.outcome == PASSED
    assert v.headers is not None and v.headers[-1] == ("sample-rate", text)


@pytest.mark.parametrize("rate, text", [(0.00001, b"0.00001"), (1.5e-07, b"0.00000015"),
                                        (1 / 3, b"0.3333333333333333")])
def test_sample_rate_header_is_never_exponent_notation(rate: float, text: bytes) -> None:
    d = make(rules=[{"app": "a", "event": "e", "sample_rate": rate}], apps={})
    # mmh3.hash(b"", 0, signed=False) == 0: the empty user id is kept at any rate > 0
    v = d.decide(ev(app_id="a", event="e", user_id=""), 0)
    assert v.outcome == PASSED
    assert v.headers is not None and v.headers[-1] == ("sample-rate", text)
    assert float(text) == rate


def test_tag_headers_off() -> None:
    d = make(tag_headers=False)
    for raw in (ev(app_id="1128", event="video_play"),
                ev(app_id="1128", event="feed_scroll", user_id="u3"),
                ev(app_id="2000", event="nope")):
        v = d.decide(raw, 0)
        assert v.routed and v.headers is None
    assert d.decide(ev(app_id="1128", event="video_play"), 0).priority == 0


# --- step 4: rate caps ----------------------------------------------------------------------

def capped(max_rate: float, **settings: Any) -> Decider:
    return make(rules=[{"app": "a", "event": "e", "priority": "P0", "max_rate": max_rate},
                       {"app": "a", "event": "free"}], apps={}, **settings)


A_E = ev(app_id="a", event="e")


def outcomes(d: Decider, raws: list[bytes], ts_ms: int | None) -> list[str]:
    return [OUTCOMES[d.decide(raw, ts_ms).outcome] for raw in raws]


def test_max_rate_throttles_over_the_cap_and_refills() -> None:
    d = capped(5)
    assert outcomes(d, [A_E] * 6, 1_000) == ["passed"] * 5 + ["throttled"]
    assert d.decide(A_E, 1_199).outcome == THROTTLED  # 199 ms at 5/s: not one token yet
    assert d.decide(A_E, 1_250).outcome == PASSED  # 250 ms: one token
    assert d.decide(A_E, 1_250).outcome == THROTTLED
    assert outcomes(d, [A_E] * 6, 2_250) == ["passed"] * 5 + ["throttled"]  # a second later


def test_burst_is_at_most_one_second_of_tokens() -> None:
    d = capped(5)
    d.decide(A_E, 0)
    assert outcomes(d, [A_E] * 6, 60_000) == ["passed"] * 5 + ["throttled"]


def test_cap_is_per_rule() -> None:
    d = capped(1)
    assert d.decide(A_E, 0).outcome == PASSED
    assert d.decide(A_E, 0).outcome == THROTTLED
    free = ev(app_id="a", event="free")
    assert outcomes(d, [free] * 10, 0) == ["passed"] * 10


def test_throttled_verdict_is_not_routed() -> None:
    d = capped(1)
    d.decide(A_E, 0)
    v = d.decide(A_E, 0)
    assert (v.outcome, v.priority, v.headers) == (THROTTLED, -1, None)


def test_clock_never_goes_back() -> None:
    d = capped(2)
    assert outcomes(d, [A_E] * 3, 10_000) == ["passed", "passed", "throttled"]
    assert d.decide(A_E, 0).outcome == THROTTLED  # a lagging timestamp refills nothing
    assert d.decide(A_E, 10_500).outcome == PASSED


def test_rate_share_scales_the_cap() -> None:
    d = capped(4, rate_share=0.5)  # 2 events/s for this decider
    assert outcomes(d, [A_E] * 3, 0) == ["passed", "passed", "throttled"]
    assert outcomes(d, [A_E] * 2, 500) == ["passed", "throttled"]
    assert outcomes(d, [A_E] * 3, 1_500) == ["passed", "passed", "throttled"]


def test_without_ts_the_clock_is_the_event_time_in_seconds_or_ms() -> None:
    d = capped(2)
    t0 = 1_767_225_600  # seconds
    at = [ev(app_id="a", event="e", time=t0)] * 3
    assert outcomes(d, at, None) == ["passed", "passed", "throttled"]
    half = ev(app_id="a", event="e", time=t0 * 1000 + 500)  # milliseconds, +0.5 s: one token
    assert outcomes(d, [half, half], None) == ["passed", "throttled"]
    later = ev(app_id="a", event="e", time=t0 + 10.0)  # float seconds
    assert outcomes(d, [later] * 3, None) == ["passed", "passed", "throttled"]


def test_without_ts_events_without_time_use_the_latest_time_seen() -> None:
    d = capped(1)
    t0 = 1_767_225_600_000
    assert d.decide(ev(app_id="a", event="e", time=t0), None).outcome == PASSED
    assert d.decide(ev(app_id="a", event="e"), None).outcome == THROTTLED
    assert d.decide(ev(app_id="a", event="e", time="soon"), None).outcome == THROTTLED
    assert d.decide(ev(app_id="a", event="e", time=t0 + 1000), None).outcome == PASSED


def test_time_path_is_configurable() -> None:
    d = capped(1, time_path="meta.ts")
    t0 = 1_767_225_600_000
    assert d.decide(ev(app_id="a", event="e", meta={"ts": t0}), None).outcome == PASSED
    assert d.decide(ev(app_id="a", event="e", time=t0 + 5000), None).outcome == THROTTLED
    assert d.decide(ev(app_id="a", event="e", meta={"ts": t0 + 1000}), None).outcome == PASSED


def test_sampled_out_events_take_no_token() -> None:
    # Sampling (step 3) comes before the cap (step 4).
    # mmh3.hash(b"u2", 0, signed=False) == 3364677253 >= int(0.5 * 2**32): sampled out
    # mmh3.hash(b"u1", 0, signed=False) == 2022293920 <  int(0.5 * 2**32): kept
    d = make(rules=[{"app": "a", "event": "e", "sample_rate": 0.5, "max_rate": 1}], apps={})
    for _ in range(5):
        assert d.decide(ev(app_id="a", event="e", user_id="u2"), 0).outcome == SAMPLED_OUT
    assert d.decide(ev(app_id="a", event="e", user_id="u1"), 0).outcome == PASSED
    assert d.decide(ev(app_id="a", event="e", user_id="u1"), 0).outcome == THROTTLED


# --- quarantine of unregistered events ------------------------------------------------------

def test_quarantine_rate_one_copies_every_unregistered_event() -> None:
    d = make(quarantine_rate=1.0)
    for raw in (ev(app_id="1128", event="nope", user_id="u2"), ev(app_id="9", event="x")):
        v = d.decide(raw, 0)
        assert (v.outcome, v.quarantine, v.routed) == (UNREGISTERED, True, False)


def test_quarantine_rate_zero_copies_nothing() -> None:
    v = make(quarantine_rate=0.0).decide(ev(app_id="1128", event="nope"), 0)
    assert (v.outcome, v.quarantine) == (UNREGISTERED, False)


def test_quarantine_is_sampled_by_the_configured_keys() -> None:
    d = make(quarantine_rate=0.5)
    # mmh3.hash(b"u1", 0, signed=False) == 2022293920 <  2147483648: quarantined
    # mmh3.hash(b"u2", 0, signed=False) == 3364677253 >= 2147483648: not
    assert d.decide(ev(app_id="1128", event="nope", user_id="u1"), 0).quarantine is True
    assert d.decide(ev(app_id="1128", event="nope", user_id="u2"), 0).quarantine is False


def test_quarantine_never_applies_to_monitor_passes_or_other_outcomes() -> None:
    d = make(quarantine_rate=1.0)
    assert d.decide(ev(app_id="2000", event="nope"), 0).quarantine is False
    assert d.decide(ev(app_id="1128", event="debug_trace"), 0).quarantine is False
    assert d.decide(b"{", 0).quarantine is False
    assert d.decide(ev(app_id="1128", event="like"), 0).quarantine is False


# --- verdict objects ------------------------------------------------------------------------

def test_verdict_repr_is_readable() -> None:
    d = make()
    assert repr(d.decide(ev(app_id="1128", event="video_play"), 0)) == \
        "Verdict(passed, P0, reason=None)"
    assert repr(d.decide(b"[]", 0)) == "Verdict(malformed, -, reason=not_object)"


def test_outcome_constants_match_names() -> None:
    assert [OUTCOMES[i] for i in (PASSED, SAMPLED_OUT, UNREGISTERED, BLOCKED, MALFORMED,
                                  THROTTLED)] == ["passed", "sampled_out", "unregistered",
                                                  "blocked", "malformed", "throttled"]
