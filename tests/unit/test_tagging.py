"""FieldTagger: ``tag.field`` adds or replaces one top-level field, byte-exactly
(SPEC section 4). Expected outputs are written out in full."""

from __future__ import annotations

import orjson
import pytest

from etl_gate.core import FieldTagger
from etl_gate.gen import Generator, GenSpec

TAG = FieldTagger("priority")


def check(raw: bytes, priority: str, expected: bytes, tagger: FieldTagger = TAG) -> None:
    out = tagger.tag(raw, priority)
    assert out == expected
    parsed = orjson.loads(out)
    assert parsed[tagger.field] == priority
    before = orjson.loads(raw)
    before.pop(tagger.field, None)
    parsed.pop(tagger.field)
    assert parsed == before  # nothing else changed in meaning either


# --- field absent: inserted right after the opening brace ----------------------------------

@pytest.mark.parametrize("raw, expected", [
    (b'{"a":1}', b'{"priority":"P0","a":1}'),
    (b'{ "a" : 1 ,\n  "b" : [1, 2.50] }', b'{"priority":"P0", "a" : 1 ,\n  "b" : [1, 2.50] }'),
    (b'\t {"a":1}\n', b'\t {"priority":"P0","a":1}\n'),
    (b"{}", b'{"priority":"P0"}'),
    (b"{ }", b'{"priority":"P0" }'),
    (b"{\r\n}", b'{"priority":"P0"\r\n}'),
    (b'{"a":{"priority":"P2"}}', b'{"priority":"P0","a":{"priority":"P2"}}'),  # nested
    (b'{"a":[{"priority":1}]}', b'{"priority":"P0","a":[{"priority":1}]}'),
    (b'{"msg":"\\"priority\\":\\"P2\\"","x":"priority"}',  # only inside string values
     b'{"priority":"P0","msg":"\\"priority\\":\\"P2\\"","x":"priority"}'),
    (b'{"priorityx":1,"xpriority":2}', b'{"priority":"P0","priorityx":1,"xpriority":2}'),
    (b'{"Priority":"P2"}', b'{"priority":"P0","Priority":"P2"}'),  # case matters
    (b'{"caf\\u00e9":"\\u00e9t\\u00e9"}', b'{"priority":"P0","caf\\u00e9":"\\u00e9t\\u00e9"}'),
    ('{"名前":"値","n":1e5}'.encode(), '{"priority":"P0","名前":"値","n":1e5}'.encode()),
])
def test_adds_when_absent(raw: bytes, expected: bytes) -> None:
    check(raw, "P0", expected)


# --- field present at top level: only its value is replaced ---------------------------------

@pytest.mark.parametrize("raw, expected", [
    (b'{"a":1,"priority":"P2","b":2}', b'{"a":1,"priority":"P1","b":2}'),
    (b'{"priority":"P2"}', b'{"priority":"P1"}'),
    (b'{"a":1,"priority":7}', b'{"a":1,"priority":"P1"}'),
    (b'{"priority": -1.5e+3 , "b":2}', b'{"priority": "P1" , "b":2}'),
    (b'{"priority":null}', b'{"priority":"P1"}'),
    (b'{ "priority" :\ttrue\n}', b'{ "priority" :\t"P1"\n}'),
    (b'{"priority":{"x":[1,{"y":"}]"}],"priority":"P0"},"b":2}', b'{"priority":"P1","b":2}'),
    (b'{"priority":[1,"]",[2,[]],{}],"b":1}', b'{"priority":"P1","b":1}'),
    (b'{"priority":"a \\"quoted\\" \\\\ value","b":1}', b'{"priority":"P1","b":1}'),
    (b'{"s":"ends with backslash \\\\","priority":"P0"}',
     b'{"s":"ends with backslash \\\\","priority":"P1"}'),
    (b'{"nested":{"priority":"P0"},"priority":"P2"}',
     b'{"nested":{"priority":"P0"},"priority":"P1"}'),
    (b'{"priority":"P2","x":"\\u00e9"}', b'{"priority":"P1","x":"\\u00e9"}'),
])
def test_replaces_when_present(raw: bytes, expected: bytes) -> None:
    check(raw, "P1", expected)


def test_replaces_every_duplicate_top_level_member() -> None:
    raw = b'{"priority":1,"a":{"priority":2},"priority":"x"}'
    assert TAG.tag(raw, "P2") == b'{"priority":"P2","a":{"priority":2},"priority":"P2"}'
    assert orjson.loads(TAG.tag(raw, "P2"))["priority"] == "P2"


def test_key_spelled_with_unicode_escape_is_the_same_field() -> None:
    raw = b'{"a":1,"pr\\u0069ority":"P2","b":2}'
    check(raw, "P0", b'{"a":1,"pr\\u0069ority":"P0","b":2}')


def test_key_spelled_with_solidus_escape_is_the_same_field() -> None:
    tagger = FieldTagger("tier/level")
    check(b'{"tier\\/level":"P2","b":2}', "P0", b'{"tier\\/level":"P0","b":2}', tagger)
    check(b'{"b":"a\\/b"}', "P0", b'{"tier/level":"P0","b":"a\\/b"}', tagger)


def test_other_field_names() -> None:
    tagger = FieldTagger("tier")
    check(b'{"priority":"x"}', "P2", b'{"tier":"P2","priority":"x"}', tagger)
    check(b'{"priority":"x","tier":0}', "P2", b'{"priority":"x","tier":"P2"}', tagger)
    quoted = FieldTagger('we"ird')
    check(b'{"a":1}', "P0", b'{"we\\"ird":"P0","a":1}', quoted)
    check(b'{"we\\"ird":1}', "P0", b'{"we\\"ird":"P0"}', quoted)


def test_unknown_priority_is_a_programming_error() -> None:
    with pytest.raises(KeyError):
        TAG.tag(b"{}", "P3")


def test_generated_payloads_gain_exactly_one_field() -> None:
    gen = Generator(GenSpec(count=300, malformed_share=0.0, seed=5))
    for raw, _key, _t in gen.events():
        out = TAG.tag(raw, "P1")
        assert out == b'{"priority":"P1",' + raw[1:]
        assert orjson.loads(out) == {"priority": "P1", **orjson.loads(raw)}
        again = TAG.tag(out, "P0")  # now present: replaced in place
        assert again == b'{"priority":"P0",' + raw[1:]
