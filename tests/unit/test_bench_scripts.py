"""The broker-free benchmark scripts run and measure what they say, with
whichever confluent-kafka is installed (quixstreams pins one that cannot
construct Message objects; bench/core_bench.py then uses stand-ins)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tests.checkout import ROOT, bench_module, env_checkout_first

BENCH = ROOT / "bench"


def _run(*argv: str) -> str:
    r = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=env_checkout_first())
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def _rate(out: str, what: str) -> float:
    m = re.search(rf"^{re.escape(what)}\s+([\d,]+)\s", out, re.M)
    assert m is not None, out
    return float(m.group(1).replace(",", ""))


def test_core_bench_times_every_loop() -> None:
    out = _run(str(BENCH / "core_bench.py"), "--events", "3000", "--repeat", "1", "--batch", "500",
               "--no-append")
    rates = {w: _rate(out, w) for w in ("decide", "orjson.loads", "worker loop, stats on",
                                       "worker loop, stats off", "worker loop, no tag headers",
                                       "passthrough loop")}
    assert all(r > 0 for r in rates.values()), rates
    # The worker loop decides and produces: it cannot beat decide alone.
    assert rates["worker loop, stats on"] < rates["decide"]
    assert "The worker loops ran on" in out


def test_route_loops_on_stand_in_messages() -> None:
    """The older-client path, whatever client this machine has: the stand-ins
    carry what the worker reads, and every event is decided and counted."""
    core_bench = bench_module("core_bench")
    from etl_gate.config import GateConfig
    from etl_gate.core import build_decider, parse_snapshot
    from etl_gate.gen import Generator, GenSpec

    gen = Generator(GenSpec(count=2000, seed=3))
    msgs = core_bench.stand_ins(list(gen.events()))
    decider = build_decider(parse_snapshot(gen.rules()), GateConfig().decision_settings())
    loop = core_bench.route_loops(msgs, {"gate": (decider, True)}, 500)
    assert loop["gate"]() > 0
    assert loop["passthrough loop"]() > 0


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="needs the git checkout")
def test_paired_compares_two_trees() -> None:
    out = _run(str(BENCH / "paired.py"), "--base", "HEAD", "--pairs", "1", "--events", "2000",
               "--batch", "500")
    for w in ("decide", "loop"):
        m = re.search(rf"^{w}\s+base ([\d.]+) µs/event, tree ([\d.]+) µs/event: "
                      r"tree/base time ([\d.]+)x", out, re.M)
        assert m is not None, out
        assert all(float(g) > 0 for g in m.groups())
    assert "both sides imported the same etl_gate" not in out
