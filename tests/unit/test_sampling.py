"""Sampling (SPEC section 3.3) against fixed vectors that can be checked by hand.

Every hash below was computed once, in a shell, with
``mmh3.hash(key, seed, signed=False)`` and pasted here as a literal. A test
keeps an event iff ``hash < int(rate * 4294967296)``; the expected outcome is
computed from the literals, never from the code under test.
"""

from __future__ import annotations

from typing import Any

import mmh3
import orjson
import pytest

from etl_gate.core import PASSED, SAMPLED_OUT, Decider, DecisionSettings, parse_snapshot

TWO_32 = 4294967296


def threshold(rate: float) -> int:
    return int(rate * TWO_32)


def decider(rate: float, seed: int = 0, sample_key: str | None = None,
            **settings: Any) -> Decider:
    rule: dict[str, Any] = {"app": "a", "event": "s", "priority": "P1", "sample_rate": rate}
    if sample_key is not None:
        rule["sample_key"] = sample_key
    snap = parse_snapshot({"version": 3, "rules": [rule]})
    return Decider(snap, DecisionSettings(seed=seed, **settings))


def kept(d: Decider, raw: bytes) -> bool:
    outcome = d.decide(raw, 0).outcome
    assert outcome in (PASSED, SAMPLED_OUT)
    return outcome == PASSED


def with_user(value_json: bytes) -> bytes:
    """The event ``{"app_id":"a","event":"s","user_id":<value_json>}``, byte for byte."""
    return b'{"app_id":"a","event":"s","user_id":' + value_json + b"}"


# --- key bytes per JSON type ---------------------------------------------------------------

# (user_id as written in the event, key bytes, seed, hash, rate, keep?)
VECTORS = [
    # mmh3.hash(b"u1", 0, signed=False) == 2022293920
    (b'"u1"', b"u1", 0, 2022293920, 0.5, True),
    # mmh3.hash(b"u2", 0, signed=False) == 3364677253
    (b'"u2"', b"u2", 0, 3364677253, 0.5, False),
    # mmh3.hash(b"u1", 7, signed=False) == 2104134967
    (b'"u1"', b"u1", 7, 2104134967, 0.5, True),
    # mmh3.hash(b"u3", 0, signed=False) == 330920505
    (b'"u3"', b"u3", 0, 330920505, 0.5, True),
    # mmh3.hash(b"u3", 7, signed=False) == 3935921900: the seed flips the decision
    (b'"u3"', b"u3", 7, 3935921900, 0.5, False),
    # non-ASCII: the UTF-8 bytes, whether written raw or as \u escapes in the JSON
    # mmh3.hash("usér-ü漢".encode(), 0, signed=False) == 3841556792
    ('"usér-ü漢"'.encode(), "usér-ü漢".encode(), 0, 3841556792, 0.9, True),
    ('"usér-ü漢"'.encode(), "usér-ü漢".encode(), 0, 3841556792, 0.85, False),
    (b'"us\\u00e9r-\\u00fc\\u6f22"', "usér-ü漢".encode(), 0, 3841556792, 0.85, False),
    # mmh3.hash("usér-ü漢".encode(), 7, signed=False) == 1010716449
    ('"usér-ü漢"'.encode(), "usér-ü漢".encode(), 7, 1010716449, 0.25, True),
    # int 123 -> b"123"; mmh3.hash(b"123", 0, signed=False) == 2662625771
    (b"123", b"123", 0, 2662625771, 0.7, True),
    (b"123", b"123", 0, 2662625771, 0.6, False),
    # the string "123" has the same bytes as the number 123
    (b'"123"', b"123", 0, 2662625771, 0.6, False),
    # mmh3.hash(b"-7", 0, signed=False) == 1918780564
    (b"-7", b"-7", 0, 1918780564, 0.45, True),
    (b"-7", b"-7", 0, 1918780564, 0.44, False),
    # true -> b"true"; mmh3.hash(b"true", 0, signed=False) == 888000370
    (b"true", b"true", 0, 888000370, 0.25, True),
    (b"true", b"true", 0, 888000370, 0.2, False),
    # float -> orjson text; mmh3.hash(b"1.5", 0, signed=False) == 4025916689
    (b"1.5", b"1.5", 0, 4025916689, 0.95, True),
    (b"1.50", b"1.5", 0, 4025916689, 0.9, False),  # re-serialised, not the raw text
    # nested object -> compact orjson text, key order kept, whitespace gone
    # mmh3.hash(b'{"b":1,"a":[1,2]}', 0, signed=False) == 2830570368
    (b'{ "b" : 1, "a" : [1, 2] }', b'{"b":1,"a":[1,2]}', 0, 2830570368, 0.7, True),
    (b'{ "b" : 1, "a" : [1, 2] }', b'{"b":1,"a":[1,2]}', 0, 2830570368, 0.6, False),
    # the empty string is a key like any other; mmh3.hash(b"", 0, signed=False) == 0
    (b'""', b"", 0, 0, 0.000001, True),
    # mmh3.hash(b"", 7, signed=False) == 415870660
    (b'""', b"", 7, 415870660, 0.09, False),
]


def test_vectors_cover_keep_and_drop() -> None:
    expectations = {h < threshold(rate) for _, _, _, h, rate, _ in VECTORS}
    assert expectations == {True, False}


@pytest.mark.parametrize("value_json, key, seed, h, rate, keep", VECTORS)
def test_vector(value_json: bytes, key: bytes, seed: int, h: int, rate: float,
                keep: bool) -> None:
    assert (h < threshold(rate)) is keep  # the hand check, from the literal
    assert kept(decider(rate, seed), with_user(value_json)) is keep


@pytest.mark.parametrize("key, seed, h", sorted({(k, s, h) for _, k, s, h, _, _ in VECTORS}))
def test_pasted_hashes_are_what_mmh3_computes(key: bytes, seed: int, h: int) -> None:
    # Guards the literals above (and the unsigned 32-bit variant of the hash).
    assert mmh3.hash(key, seed, signed=False) == h


def test_threshold_is_strict() -> None:
    # mmh3.hash(b"u1", 0, signed=False) == 2022293920; these rates are exact binary fractions.
    raw = with_user(b'"u1"')
    assert threshold(2022293920 / TWO_32) == 2022293920
    assert not kept(decider(2022293920 / TWO_32), raw)  # h == threshold: dropped
    assert kept(decider(2022293921 / TWO_32), raw)  # h == threshold - 1: kept


# --- which key --------------------------------------------------------------------------------

def test_user_id_comes_before_device_id() -> None:
    raw = b'{"app_id":"a","event":"s","user_id":"u1","device_id":"d42"}'
    # mmh3.hash(b"u1", 0, signed=False) == 2022293920 <  int(0.48 * 2**32) == 2061584302
    # mmh3.hash(b"d42", 0, signed=False) == 2132776767 >= 2061584302
    assert 2022293920 < threshold(0.48) <= 2132776767
    assert kept(decider(0.48), raw)


@pytest.mark.parametrize("raw", [
    b'{"app_id":"a","event":"s","user_id":null,"device_id":"d42"}',
    b'{"app_id":"a","event":"s","device_id":"d42"}',
])
def test_null_or_missing_user_id_falls_back_to_device_id(raw: bytes) -> None:
    # mmh3.hash(b"d42", 0, signed=False) == 2132776767
    # mmh3.hash(b"null", 0, signed=False) == 1727035794 (what a wrong "null" key would give)
    # mmh3.hash(<the first raw line>, 0, signed=False) == 3366893813
    assert 1727035794 < threshold(0.45) <= 2132776767  # d42 dropped, "null" would be kept
    assert not kept(decider(0.45), raw)
    assert 2132776767 < threshold(0.6) <= 3366893813  # d42 kept, the raw bytes would not be
    assert kept(decider(0.6), raw)


def test_configured_sample_keys_replace_the_defaults() -> None:
    raw = b'{"app_id":"a","event":"s","user_id":"u1","session":{"id":"s-1"}}'
    # mmh3.hash(b"s-1", 0, signed=False) == 947320101 <  int(0.25 * 2**32) == 1073741824
    # mmh3.hash(b"u1", 0, signed=False) == 2022293920 (not used)
    assert kept(decider(0.25, sample_keys=("session.id",)), raw)
    assert 947320101 >= threshold(0.2)
    assert not kept(decider(0.2, sample_keys=("session.id",)), raw)


def test_rule_sample_key_is_used_when_present() -> None:
    raw = b'{"app_id":"a","event":"s","user_id":"u1","ctx":{"dev":"ctx-9"}}'
    # mmh3.hash(b"ctx-9", 0, signed=False) == 2314696128 >= int(0.5 * 2**32) == 2147483648
    # mmh3.hash(b"u1", 0, signed=False) == 2022293920 would be kept at 0.5
    assert not kept(decider(0.5, sample_key="ctx.dev"), raw)
    assert kept(decider(0.5), raw)
    assert 2314696128 < threshold(0.55)
    assert kept(decider(0.55, sample_key="ctx.dev"), raw)


def test_rule_sample_key_absent_hashes_raw_bytes_not_user_id() -> None:
    raw = b'{"app_id":"a","event":"s","user_id":"u1"}'
    # mmh3.hash(raw, 0, signed=False) == 1037857641 <  int(0.3 * 2**32) == 1288490188: kept
    # mmh3.hash(b"u1", 0, signed=False) == 2022293920 >= 1288490188: a fallback would drop it
    assert 1037857641 < threshold(0.3) <= 2022293920
    assert kept(decider(0.3, sample_key="device_id"), raw)
    assert not kept(decider(0.3), raw)  # without the rule's key, user_id decides


def test_rule_sample_key_null_hashes_raw_bytes() -> None:
    raw = b'{"app_id":"a","event":"s","user_id":"u1","device_id":null}'
    # mmh3.hash(raw, 0, signed=False) == 784443948 <  int(0.2 * 2**32) == 858993459: kept
    # mmh3.hash(b"u1", 0, signed=False) == 2022293920: a fallback would drop it
    assert kept(decider(0.2, sample_key="device_id"), raw)
    assert not kept(decider(0.2), raw)


def test_no_key_at_all_hashes_the_raw_bytes() -> None:
    raw = b'{"app_id":"a","event":"s"}'
    # mmh3.hash(b'{"app_id":"a","event":"s"}', 0, signed=False) == 986275692
    assert threshold(0.2) <= 986275692 < threshold(0.25)
    assert kept(decider(0.25), raw)
    assert not kept(decider(0.2), raw)


def test_raw_bytes_are_the_exact_payload() -> None:
    # The same object with different spacing has different raw bytes, so may differ:
    # mmh3.hash(b'{"app_id":"a","event":"s","n":1}', 0, signed=False) == 1413208935
    # mmh3.hash(b'{"app_id":"a","event":"s","n":2}', 0, signed=False) == 369012223
    d = decider(0.3)
    assert not kept(d, b'{"app_id":"a","event":"s","n":1}')
    assert kept(d, b'{"app_id":"a","event":"s","n":2}')


# --- rates 0 and 1 -------------------------------------------------------------------------

USERS = [f"user-{i}" for i in range(2000)]


def user_event(user: str, event: str = "s") -> bytes:
    return orjson.dumps({"app_id": "a", "event": event, "user_id": user})


def test_rate_zero_drops_everything() -> None:
    d = decider(0.0)
    assert not any(kept(d, user_event(u)) for u in USERS)
    assert not kept(d, with_user(b'""'))  # hash 0 is not < threshold 0
    assert not kept(d, b'{"app_id":"a","event":"s"}')


def test_rate_one_does_not_sample() -> None:
    snap = parse_snapshot({"version": 3, "rules": [{"app": "a", "event": "s"}]})
    d = Decider(snap, DecisionSettings())
    for u in USERS:
        v = d.decide(user_event(u), 0)
        assert v.outcome == PASSED
        assert v.headers == [("priority", b"P1"), ("rules-version", b"3")]


def test_sampled_rate_header_present_only_below_one() -> None:
    v = decider(0.5).decide(with_user(b'"u1"'), 0)  # hash 2022293920: kept
    assert v.headers == [("priority", b"P1"), ("rules-version", b"3"), ("sample-rate", b"0.5")]


# --- consistent cohorts --------------------------------------------------------------------

def cohort_decider(seed: int) -> Decider:
    snap = parse_snapshot({"version": 1, "rules": [
        {"app": "a", "event": "view", "sample_rate": 0.1},
        {"app": "a", "event": "click", "sample_rate": 0.25},
        {"app": "a", "event": "buy", "sample_rate": 0.1},
    ]})
    return Decider(snap, DecisionSettings(seed=seed))


@pytest.mark.parametrize("seed", [0, 7, 2**32 - 1])
def test_consistent_cohorts(seed: int) -> None:
    d = cohort_decider(seed)
    at_10 = {u for u in USERS if kept(d, user_event(u, "view"))}
    at_25 = {u for u in USERS if kept(d, user_event(u, "click"))}
    other_10 = {u for u in USERS if kept(d, user_event(u, "buy"))}
    assert 120 < len(at_10) < 280  # about 10% of 2000
    assert 400 < len(at_25) < 600  # about 25%
    assert at_10 <= at_25  # kept at 10% for one event -> kept at 25% for another
    assert at_10 == other_10  # and for every other event at 10%


def test_cohorts_follow_the_formula() -> None:
    d = cohort_decider(7)
    for u in USERS:
        h = mmh3.hash(u.encode(), 7, signed=False)
        assert kept(d, user_event(u, "click")) is (h < threshold(0.25))


def test_seed_changes_the_cohort() -> None:
    a = {u for u in USERS if kept(cohort_decider(0), user_event(u, "view"))}
    b = {u for u in USERS if kept(cohort_decider(7), user_event(u, "view"))}
    assert a != b
