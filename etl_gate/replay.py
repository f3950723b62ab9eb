"""``etl-gate replay``: the gate's decisions on a file of newline-delimited events.

Same core, same verdicts, same output payloads as the Kafka path; outputs go to
``DIR/<topic>.jsonl`` (one payload per line, input order) and the counts to
``DIR/summary.json``. The rate-cap clock is each event's own time field (a
file has no Kafka timestamps); ``etl-gate gen`` writes Kafka timestamps equal
to event time, so both paths agree on the same data.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import orjson

from .config import GateConfig
from .core import MALFORMED, OUTCOMES, PRIORITIES, FieldTagger, RulesSnapshot, build_decider
from .progress import Progress


def iter_lines(stream: BinaryIO) -> Iterator[bytes]:
    """Event lines without their line ending; blank lines skipped."""
    for line in stream:
        if line.endswith(b"\n"):
            line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        if line.strip():
            yield line


def replay(cfg: GateConfig, snapshot: RulesSnapshot, input_path: str,
           output_dir: str | Path) -> dict[str, object]:
    decider = build_decider(snapshot, cfg.decision_settings())
    tagger = FieldTagger(cfg.tag.field) if cfg.tag.field else None
    topics = cfg.topics.priority_topics
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, BinaryIO] = {}
    per_topic: dict[str, int] = {}

    def write(topic: str, payload: bytes) -> None:
        f = files.get(topic)
        if f is None:
            f = files[topic] = open(out_dir / f"{topic}.jsonl", "wb")  # noqa: SIM115
            per_topic[topic] = 0
        f.write(payload)
        f.write(b"\n")
        per_topic[topic] += 1

    counts = [0] * len(OUTCOMES)
    decide = decider.decide
    stream: BinaryIO = sys.stdin.buffer if input_path == "-" else open(input_path, "rb")  # noqa: SIM115
    size = _regular_file_size(stream)
    # A file's size gives the ETA (bytes read of size); a pipe has no total.
    progress = Progress("replay", total=size)
    position: Callable[[], float] | None = stream.tell if size else None
    try:
        for raw in progress.track(iter_lines(stream), at=position):
            v = decide(raw)
            counts[v.outcome] += 1
            if v.priority >= 0:
                write(topics[v.priority],
                      tagger.tag(raw, PRIORITIES[v.priority]) if tagger else raw)
            elif v.outcome == MALFORMED:
                write(cfg.topics.dlq, raw)
            elif v.quarantine:
                write(cfg.topics.quarantine, raw)
    finally:
        progress.close()
        if stream is not sys.stdin.buffer:
            stream.close()
        for f in files.values():
            f.close()
    summary: dict[str, object] = {
        "rules_version": snapshot.version,
        "events": sum(counts),
        "decisions": dict(zip(OUTCOMES, counts, strict=True)),
        "topics": per_topic,
    }
    (out_dir / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return summary


def _regular_file_size(stream: BinaryIO) -> int | None:
    """Size of a regular file behind ``stream`` (stdin included), else None."""
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):  # no file descriptor (a test's BytesIO, pytest's capture)
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None
