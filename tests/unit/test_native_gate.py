"""bench/native_gate.c, the C data path that throughput.py's "native" mode runs,
decides as the Python core does (SPEC section 3): outcome, priority and malformed
reason, event by event, on what `etl-gate gen` writes and on hand-written edge
cases. Its Kafka side is exercised by tests/integration/test_bench_throughput.py.
Needs a C compiler and librdkafka's headers (scripts/test.sh installs them)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest

from etl_gate.core import OUTCOMES, build_decider, parse_snapshot
from etl_gate.core.decide import DecisionSettings
from etl_gate.gen import Generator, GenSpec
from tests.checkout import bench_module

native = bench_module("_native")

RULES = {"version": 7, "rules": [
    {"app": "1128", "event": "play", "priority": "P0"},
    {"app": "1128", "event": "scroll", "priority": "P2", "sample_rate": 0.5},
    {"app": "1128", "event": "like", "priority": "P1", "sample_rate": 0.25, "sample_key": "dev"},
    {"app": "1128", "event": "gone", "state": "offline"},
    {"app": "é", "event": "ünï", "priority": "P1"},
]}

EDGE_CASES = [
    b'{"app_id":"1128","event":"play"}',
    b'{"app_id":1128,"event":"play"}',
    b'  {"app_id" : "1128" ,\t"event":"play" , "x": [1, {"y": null}]}  ',
    b'{"app_id":"1128","event":"nope"}',
    b'{"app_id":"1128","event":"gone"}',
    b'{"app_id":"\\u0031128","event":"pl\\u0061y"}',       # escapes in the values
    b'{"\\u0061pp_id":"1128","event":"play"}',              # and in a key
    b'{"app_id":"x","event":"play","app_id":"1128"}',       # duplicate: the last wins
    b'{"app_id":"\xc3\xa9","event":"\xc3\xbcn\xc3\xaf"}',    # UTF-8 names
    b'{"app_id":"\\u00e9","event":"\\u00fcn\\u00ef"}',
    b'{"app_id":"1128","event":"play","p":"\xf0\x9f\x98\x80"}',
    b'{"app_id":"1128","event":"play","p":"\\ud83d\\ude00"}',
    b'{"app_id":"1128","event":"play","p":"\xed\xa0\x80"}',   # an encoded surrogate: invalid
    b'{"app_id":"1128","event":"play","p":"\xc0\xaf"}',       # overlong: invalid
    b'{"app_id":"1128","event":"play","p":"a\tb"}',           # raw control character
    b'{"app_id":"1128","event":"play","p":01}',
    b'{"app_id":"1128","event":"play","p":1.}',
    b'{"app_id":"1128","event":"play","p":-1.5e+3}',
    b'{"app_id":"1128","event":"play","p":123456789012345678901234567890}',
    b'{"app_id":"1128","event":"play",}',
    b'{"app_id":"1128","event":"play"} x',
    b'{"app_id":"1128","event":"play"',
    b'[{"app_id":"1128","event":"play"}]',
    b'"play"',
    b'',
    b'{}',
    b'{"event":"play"}',
    b'{"app_id":true,"event":"play"}',
    b'{"app_id":null,"event":"play"}',
    b'{"app_id":{"a":1},"event":"play"}',
    b'{"app_id":"1128"}',
    b'{"app_id":"1128","event":5}',
    b'{"app_id":"1128","event":"play","p":tru}',
    b'{"app_id":"1128","event":"play","p":[1,2,]}',
    b'{"app_id":"1128","event":"play","p":"\\x"}',
    b'{"app_id":"1128","event":"play","p":"\\u12"}',
    b'[' * 1100 + b']' * 1100,
]
# Sampling: every kind of key value, 40 users each, kept or not by the hash.
for i in range(40):
    EDGE_CASES += [
        b'{"app_id":"1128","event":"scroll","user_id":"u%d"}' % i,
        b'{"app_id":"1128","event":"scroll","user_id":%d}' % i,
        b'{"app_id":"1128","event":"scroll","user_id":null,"device_id":"d%d"}' % i,
        b'{"app_id":"1128","event":"scroll","user_id":"\\u00e9%d"}' % i,
        b'{"app_id":"1128","event":"scroll","user_id":true,"n":%d}' % i,
        b'{"app_id":"1128","event":"scroll","user_id":[%d,"a"]}' % i,
        b'{"app_id":"1128","event":"scroll","n":%d}' % i,  # no key: the raw bytes
        b'{"app_id":"1128","event":"like","user_id":"u1","dev":"d%d"}' % i,
        b'{"app_id":"1128","event":"like","user_id":"u%d"}' % i,  # the rule's key only
    ]


def _python(rules: dict, lines: list[bytes], seed: int) -> list[str]:
    decide = build_decider(parse_snapshot(rules), DecisionSettings(seed=seed)).decide
    out = []
    for raw in lines:
        v = decide(raw, 0)
        out.append(f"{OUTCOMES[v.outcome]} {v.priority} {v.reason or '-'}")
    return out


def _native(binary: Path, tmp_path: Path, rules: dict, lines: list[bytes], seed: int) -> list[str]:
    tsv = tmp_path / "rules.tsv"
    tsv.write_text(native.rules_tsv(rules))
    assert all(b"\n" not in raw for raw in lines)
    r = subprocess.run([str(binary), "decide", str(tsv), str(seed), "user_id,device_id"],
                       input=b"".join(raw + b"\n" for raw in lines), capture_output=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode().splitlines()


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return native.build(tmp_path_factory.mktemp("native"))


@pytest.mark.parametrize("seed", [0, 42])
def test_edge_cases_decide_as_the_core(binary: Path, tmp_path: Path, seed: int) -> None:
    want = _python(RULES, EDGE_CASES, seed)
    got = _native(binary, tmp_path, RULES, EDGE_CASES, seed)
    assert len(got) == len(want)
    diffs = [(raw[:80], w, g) for raw, w, g in zip(EDGE_CASES, want, got, strict=True) if w != g]
    assert not diffs, diffs[:5]
    # The cases reach every outcome, both ways of sampling and every malformed reason.
    seen = {w.split()[0] for w in want} | {w.split()[2] for w in want}
    assert {"passed", "unregistered", "blocked", "sampled_out", "malformed", "invalid_json",
            "not_object", "missing_app", "bad_app", "missing_event", "bad_event"} <= seen


def test_generated_traffic_decides_as_the_core(binary: Path, tmp_path: Path) -> None:
    gen = Generator(GenSpec(count=30_000, seed=3, malformed_share=0.02, sampled_share=0.3))
    rules = gen.rules()
    lines = [payload for payload, _key, _ts in gen.events()]
    want = _python(rules, lines, 0)
    got = _native(binary, tmp_path, rules, lines, 0)
    assert len(got) == len(want)
    diffs = [(raw[:80], w, g) for raw, w, g in zip(lines, want, got, strict=True) if w != g]
    assert not diffs, diffs[:5]
    assert len({w.split()[0] for w in want}) == 5


def test_rules_it_cannot_follow_are_refused() -> None:
    for bad in ({"apps": {"1": {"mode": "monitor"}}, "rules": []},
                {"rules": [{"app": "1", "event": "e", "max_rate": 10}]},
                {"rules": [{"app": "1", "event": "e", "sample_rate": 0.5, "sample_key": "a.b"}]}):
        with pytest.raises(ValueError, match="not implemented"):
            native.rules_tsv(bad)
    tsv = native.rules_tsv({"rules": [{"app": 1, "event": "e", "sample_rate": 0.00001}]})
    assert tsv == f"1\te\t1\t{int(0.00001 * 2**32)}\t\t0.00001\n"
    assert orjson.loads(orjson.dumps(RULES)) == RULES  # the module's rules are plain JSON
