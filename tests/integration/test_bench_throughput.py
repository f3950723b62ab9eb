"""bench/throughput.py, the issue-6 harness, on the real broker at a token size:
every mode it can run here writes exactly what the gate's own decisions say
(the harness checks each run's outputs and notes any difference), the latency
phase matches outputs to inputs (offered by a niced producer), and the harness
deletes the topics it made.
Figures are not asserted: they belong to bench/RESULTS.md, not to tests."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib.util import find_spec

import pytest
from confluent_kafka.admin import AdminClient

from tests.checkout import ROOT, env_checkout_first

pytestmark = pytest.mark.integration

RUN_LINE = re.compile(r"^run 1 (\S+)\s+[\d.]+ s  ([\d,]+) events/s  (.*)$", re.M)
LATENCY_LINE = re.compile(r"^latency etl-gate\s+@ ([\d,]+)/s ([\d,]+) samples .*"
                          r"\(achieved ([\d,]+) ev/s, offered at nice (\d+)\)  (.*)$", re.M)


def _bench_topics(bootstrap: str) -> set[str]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return {t for t in md.topics if t.startswith("bench-")}


def test_every_mode_writes_what_the_gate_decides(kafka_bootstrap: str) -> None:
    modes = ["passthrough", "etl-gate"]
    if shutil.which("kcat"):
        modes.append("kcat")
    if find_spec("quixstreams") is not None:
        modes.append("quix")
    before = _bench_topics(kafka_bootstrap)
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "throughput.py"), "--bootstrap", kafka_bootstrap,
         "--events", "6000", "--partitions", "3", "--repeat", "1", "--modes", ",".join(modes),
         "--latency-modes", "etl-gate", "--latency-rate", "2000", "--latency-seconds", "3",
         "--latency-warmup", "1", "--no-latency-own", "--warmup", "0", "--pause", "0",
         "--no-append"],
        cwd=ROOT, env=env_checkout_first(), capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    runs = {m.group(1): (int(m.group(2).replace(",", "")), m.group(3).strip())
            for m in RUN_LINE.finditer(r.stdout)}
    assert sorted(runs) == sorted(modes), r.stdout
    for mode, (eps, notes) in runs.items():
        # A note is a mismatch: outputs other than the decisions, a log problem.
        assert notes == "" and eps > 0, (mode, eps, notes)

    lat = LATENCY_LINE.search(r.stdout)
    assert lat is not None, r.stdout
    rate, samples, achieved = (int(lat.group(i).replace(",", "")) for i in (1, 2, 3))
    assert rate == 2000 and samples > 0 and achieved > 0.8 * rate, lat.group(0)
    # The offering producer stands for apps on other machines: by default it
    # yields the CPU to the mode under test and the broker.
    assert int(lat.group(4)) >= 19, lat.group(0)
    assert lat.group(5).strip() == "", lat.group(0)
    assert "Targets (issue 6):" in r.stdout

    assert _bench_topics(kafka_bootstrap) <= before  # its topics are gone
