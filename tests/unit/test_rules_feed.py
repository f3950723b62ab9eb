"""The worker's rules feed thread (etl_gate/kafka/rules_feed.py), over a real
pipe and without Kafka: applies snapshots, then returns freed memory."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time

import pytest

from etl_gate.core import DecisionSettings, parse_snapshot
from etl_gate.core.packed import pack
from etl_gate.kafka import rules_feed
from etl_gate.rules_source import RulesHolder


def test_a_snapshot_is_applied_then_memory_is_trimmed_when_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rules_feed, "TRIM_AFTER_S", (0.05, 0.1))
    parent, child = mp.Pipe()
    holder = RulesHolder(DecisionSettings())
    applied: list[int] = []
    closed = threading.Event()
    feed = rules_feed.RulesFeed(child, holder, applied.append, closed.set)
    trims: list[float] = []
    feed.trim = lambda: trims.append(time.monotonic())
    feed.start()
    blob = pack(parse_snapshot({"version": 3, "rules": [{"app": "a", "event": "x"}]})).to_bytes()
    sent = time.monotonic()
    parent.send(("snapshot", blob))
    deadline = time.monotonic() + 5
    while len(trims) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert applied == [3] and holder.version == 3
    assert len(trims) == 2 and trims[0] - sent >= 0.05  # once idle, twice, then no more
    time.sleep(0.3)
    assert len(trims) == 2
    parent.close()
    assert closed.wait(5)


def test_malloc_trim_is_callable() -> None:
    from etl_gate.memory import malloc_trim

    malloc_trim()  # glibc: returns memory; elsewhere: a no-op
