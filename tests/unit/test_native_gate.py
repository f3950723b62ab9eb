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
from tests.edge_events import EDGE_CASES, RULES

native = bench_module("_native")

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
