"""``replay``: the file path gives the core's decisions, outputs and counts."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import orjson
import pytest

from etl_gate.config import GateConfig, parse_config
from etl_gate.core import OUTCOMES, Decider, RulesSnapshot, parse_snapshot
from etl_gate.gen import Generator, GenSpec
from etl_gate.replay import iter_lines, replay

SNAPSHOT = parse_snapshot({
    "version": 7,
    "apps": {"2000": {"mode": "monitor", "default_priority": "P1"}},
    "rules": [
        {"app": "1128", "event": "video_play", "priority": "P0"},
        {"app": "1128", "event": "like"},
        {"app": "1128", "event": "debug_trace", "state": "offline"},
        {"app": "a", "event": "s", "priority": "P2", "sample_rate": 0.3},
    ],
})

# Sampled lines have no sample key, so their raw bytes (without the line
# ending) are hashed; int(0.3 * 2**32) == 1288490188:
#   mmh3.hash(b'{"app_id":"a","event":"s","n":1}', 0, signed=False) == 1413208935  dropped
#   mmh3.hash(b'{"app_id":"a","event":"s","n":2}', 0, signed=False) == 369012223   kept
#   mmh3.hash(b'{"app_id":"a","event":"s","n":3}', 0, signed=False) == 3302532557  dropped
# Hashing b'...\r' instead would keep n=3 and drop n=2; with b'...\r\n' all three drop.
LINES = [
    b'{"app_id":1128,"event":"video_play","user_id":"u1"}\n',  # P0 (numeric app)
    b"\n",  # blank
    b'{"app_id":"1128","event":"like"}\r\n',  # P1 by default
    b'{"app_id":"1128","event":\n',  # malformed -> dlq
    b'{"app_id":"1128","event":"nope"}\n',  # unregistered, enforce: dropped
    b'{"app_id":"2000","event":"anything"}\r\n',  # unregistered, monitor: P1
    b"   \r\n",  # whitespace only
    b'{"app_id":"a","event":"s","n":1}\r\n',  # sampled out
    b'{"app_id":"a","event":"s","n":2}\r\n',  # kept -> P2
    b'{"app_id":"a","event":"s","n":3}\r\n',  # sampled out
    b'{"app_id":"1128","event":"debug_trace"}\n',  # offline: blocked
    b'{"app_id":[],"event":"like"}\n',  # malformed -> dlq
    b'{"app_id":1128,"event":"video_play","n":2}',  # P0, last line without a line ending
]

EXPECTED_DECISIONS = {"passed": 4, "sampled_out": 2, "unregistered": 2, "blocked": 1,
                      "malformed": 2, "throttled": 0}


def write_input(tmp_path: Path, lines: list[bytes] = LINES) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(lines))
    return path


def read(out: Path, topic: str) -> bytes:
    return (out / f"{topic}.jsonl").read_bytes()


def test_replay_routes_in_input_order_and_counts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = replay(parse_config({}), SNAPSHOT, str(write_input(tmp_path)), out)
    assert summary == {
        "rules_version": 7,
        "events": 11,
        "decisions": EXPECTED_DECISIONS,
        "topics": {"events.p0": 2, "events.p1": 2, "events.p2": 1, "events.dlq": 2},
    }
    assert orjson.loads((out / "summary.json").read_bytes()) == summary
    assert read(out, "events.p0") == (b'{"app_id":1128,"event":"video_play","user_id":"u1"}\n'
                                      b'{"app_id":1128,"event":"video_play","n":2}\n')
    assert read(out, "events.p1") == (b'{"app_id":"1128","event":"like"}\n'
                                      b'{"app_id":"2000","event":"anything"}\n')
    assert read(out, "events.p2") == b'{"app_id":"a","event":"s","n":2}\n'
    assert read(out, "events.dlq") == (b'{"app_id":"1128","event":\n'
                                       b'{"app_id":[],"event":"like"}\n')
    assert sorted(p.name for p in out.iterdir()) == [
        "events.dlq.jsonl", "events.p0.jsonl", "events.p1.jsonl", "events.p2.jsonl",
        "summary.json"]


def test_tag_field_is_written_into_routed_payloads_only(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = parse_config({"tag": {"field": "priority"}})
    summary = replay(cfg, SNAPSHOT, str(write_input(tmp_path)), out)
    assert summary["decisions"] == EXPECTED_DECISIONS
    assert read(out, "events.p0") == (
        b'{"priority":"P0","app_id":1128,"event":"video_play","user_id":"u1"}\n'
        b'{"priority":"P0","app_id":1128,"event":"video_play","n":2}\n')
    assert read(out, "events.p1") == (b'{"priority":"P1","app_id":"1128","event":"like"}\n'
                                      b'{"priority":"P1","app_id":"2000","event":"anything"}\n')
    assert read(out, "events.p2") == b'{"priority":"P2","app_id":"a","event":"s","n":2}\n'
    # the dead-letter copy is the input, untouched
    assert read(out, "events.dlq") == (b'{"app_id":"1128","event":\n'
                                       b'{"app_id":[],"event":"like"}\n')


def test_configured_topic_names_and_quarantine(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = parse_config({"quarantine_sample_rate": 1.0,
                        "topics": {"p0": "gold", "dlq": "bad", "quarantine": "unknown"}})
    summary = replay(cfg, SNAPSHOT, str(write_input(tmp_path)), out)
    assert summary["topics"] == {"gold": 2, "events.p1": 2, "events.p2": 1, "bad": 2,
                                 "unknown": 1}
    # only the enforce-mode unregistered event; the monitor-mode one passed to P1
    assert read(out, "unknown") == b'{"app_id":"1128","event":"nope"}\n'


def test_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeStdin:
        buffer = io.BytesIO(b"".join(LINES))

    monkeypatch.setattr(sys, "stdin", FakeStdin())
    out = tmp_path / "out"
    summary = replay(parse_config({}), SNAPSHOT, "-", out)
    assert summary["decisions"] == EXPECTED_DECISIONS
    assert read(out, "events.p2") == b'{"app_id":"a","event":"s","n":2}\n'
    assert not FakeStdin.buffer.closed  # stdin is not ours to close


def test_empty_input(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"\n\r\n  \n")
    out = tmp_path / "out"
    summary = replay(parse_config({}), SNAPSHOT, str(path), out)
    assert summary == {"rules_version": 7, "events": 0,
                       "decisions": dict.fromkeys(OUTCOMES, 0), "topics": {}}
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]


def test_iter_lines_strips_line_endings_only() -> None:
    stream = io.BytesIO(b'a\r\n\nb\n \t\r\n c \nd\re\nlast')
    assert list(iter_lines(stream)) == [b"a", b"b", b" c ", b"d\re", b"last"]


# --- agreement with the generator and the core ---------------------------------------------

def decide_each(cfg: GateConfig, snapshot: RulesSnapshot,
                events: list[tuple[bytes, bytes, int]]) -> tuple[dict[str, int],
                                                                 dict[str, list[bytes]]]:
    """Counts and per-topic payloads from calling the core directly, with the Kafka
    timestamp that ``gen`` would produce (event time)."""
    decider = Decider(snapshot, cfg.decision_settings())
    counts = dict.fromkeys(OUTCOMES, 0)
    routed: dict[str, list[bytes]] = {}
    for payload, _key, ts in events:
        v = decider.decide(payload, ts)
        counts[OUTCOMES[v.outcome]] += 1
        if v.routed:
            routed.setdefault(cfg.topics.priority_topics[v.priority], []).append(payload)
        elif v.reason is not None:
            routed.setdefault(cfg.topics.dlq, []).append(payload)
    return counts, routed


@pytest.mark.parametrize("spec", [
    GenSpec(count=5000),
    GenSpec(count=5000, seed=3, monitor_apps=1, max_rate=40, malformed_share=0.02),
], ids=["default", "monitor-and-caps"])
def test_replay_agrees_with_deciding_each_generated_event(tmp_path: Path, spec: GenSpec) -> None:
    gen = Generator(spec)
    snapshot = parse_snapshot(gen.rules())
    events = list(gen.events())
    path = tmp_path / "gen.jsonl"
    path.write_bytes(b"".join(payload + b"\n" for payload, _, _ in events))
    cfg = parse_config({})

    summary = replay(cfg, snapshot, str(path), tmp_path / "out")
    counts, routed = decide_each(cfg, snapshot, events)

    assert summary["events"] == 5000
    assert summary["decisions"] == counts
    assert summary["topics"] == {topic: len(p) for topic, p in routed.items()}
    for topic, payloads in routed.items():
        assert read(tmp_path / "out", topic) == b"".join(p + b"\n" for p in payloads)
    # the generated mix exercises every outcome it is meant to
    assert counts["passed"] and counts["sampled_out"] and counts["unregistered"]
    assert counts["malformed"] and counts["blocked"]
    assert (counts["throttled"] > 0) is bool(spec.max_rate)
    assert set(summary["topics"]) <= {*cfg.topics.priority_topics, cfg.topics.dlq}
