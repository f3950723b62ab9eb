"""The decision core alone, no Kafka: ``Decider.decide(raw, 0)`` on one core.

Builds N events in memory with ``etl_gate.gen`` (the same mix as
``bench/throughput.py``), compiles the matching rules, then times a plain loop
of ``decide`` over them, and, for reference, a loop of ``orjson.loads`` alone
(the parse every decision starts with). Each is repeated; the median is
reported. Appends a section to bench/RESULTS.md unless ``--no-append``.

    python bench/core_bench.py [--events 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import _common
import orjson

from etl_gate.config import GateConfig
from etl_gate.core import OUTCOMES, build_decider, parse_snapshot
from etl_gate.gen import Generator

# The two core loops call the function under test inline: through a wrapper
# function (as until 2026-12-07), each event also paid a Python call, ~5% of a
# decision, which is the harness's cost, not the core's.


def time_decide(decide: Callable[[bytes, int], object], events: list[bytes]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    for raw in events:
        decide(raw, 0)
    return time.perf_counter() - t0


def time_loads(events: list[bytes]) -> float:
    loads, error = orjson.loads, orjson.JSONDecodeError
    gc.collect()
    t0 = time.perf_counter()
    for raw in events:
        try:
            loads(raw)
        except error:  # the malformed share
            pass
    return time.perf_counter() - t0


class StandInMessage:
    """What the worker reads of a consumed confluent-kafka Message, for clients
    that cannot construct one (``Message(...)`` came with confluent-kafka
    2.13; quixstreams pins older ones). Python methods cost a little more a
    call than the C ones, alike for the gate's loop and the passthrough's.
    tests/messages.py uses it too, and checks that it answers as a real
    Message does."""

    __slots__ = ("_topic", "_partition", "_offset", "_key", "_value", "_timestamp", "_error")

    def __init__(self, topic: str | None, partition: int, offset: int, key: bytes | None,
                 value: bytes | None, timestamp: tuple[int, int], error: Any = None) -> None:
        # A real Message answers None for an unset (negative) partition or
        # offset: normalised here, not per call.
        self._topic, self._key, self._value = topic, key, value
        self._partition = partition if partition >= 0 else None
        self._offset = offset if offset >= 0 else None
        self._timestamp, self._error = timestamp, error

    def topic(self) -> str | None:
        return self._topic

    def partition(self) -> int | None:
        return self._partition

    def offset(self) -> int | None:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp

    def headers(self) -> None:
        return None

    def error(self) -> Any:
        return self._error


def stand_ins(events: Sequence[tuple[bytes, Any, int]]) -> list[Any]:
    """``(value, key, timestamp)`` events as stand-in messages, 6 partitions."""
    return [StandInMessage("raw", i % 6, i // 6, k, v, (1, ts)) for i, (v, k, ts) in enumerate(events)]


def messages(events: Sequence[tuple[bytes, Any, int]]) -> tuple[list[Any], str]:
    """``(value, key, timestamp)`` events (``Generator.events()``) as consumer
    messages, 6 partitions: real confluent-kafka Message objects where the
    client can build them, else stand-ins; and which kind, in words."""
    from confluent_kafka import Message

    try:
        return ([Message(topic="raw", partition=i % 6, offset=i // 6, key=k, value=v,
                         timestamp=(1, ts)) for i, (v, k, ts) in enumerate(events)],
                "real confluent-kafka Message objects")
    except TypeError:  # confluent-kafka < 2.13
        return (stand_ins(events),
                "Python stand-ins for Message objects (this confluent-kafka cannot build them)")


def route_loops(msgs: list[Any], deciders: dict[str, tuple[Any, bool]], batch: int
                ) -> dict[str, Callable[[], float]]:
    """Timers of the worker's per-event loop (``Worker._route_batch``: decide,
    statistics, produce) without a broker, one per ``deciders`` entry (name ->
    (decider, statistics on)), plus "passthrough loop": the lean passthrough's
    per-event work (bench/_modes.py: produce each message as it is), over
    ``msgs`` (see ``messages``). A real Producer whose broker is
    unreachable, so produce() only queues; it is purged between batches,
    untimed. What each costs per event in Python, apart from consume(),
    poll() and librdkafka's own threads."""
    from confluent_kafka import Producer

    from etl_gate.kafka.clients import producer_config
    from etl_gate.kafka.worker import Worker

    cfg = GateConfig()
    base = {**producer_config(cfg, 0), "bootstrap.servers": "127.0.0.1:1", "log_level": 0,
            "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 4_000_000,
            "delivery.report.only.error": True}

    def timed(producer: Any, body: Callable[[list[Any]], None],
              drain: Callable[[], object] = lambda: None) -> float:
        # Only the loop over each batch is timed. Between batches, untimed,
        # the queue is purged and the purge's delivery reports served, so it
        # holds one batch, as a worker's does (its broker acknowledges).
        # Until 2026-12-07 06:30 the queue grew to every message of the run,
        # and the runs slowed as it did (349k -> 222k events/s over five).
        gc.collect()
        elapsed = 0.0
        for i in range(0, len(msgs), batch):
            chunk = msgs[i:i + batch]
            t0 = time.perf_counter()
            body(chunk)
            elapsed += time.perf_counter() - t0
            producer.purge()
            producer.poll(0)
            drain()
        return elapsed

    def timer(decider: Any, stats_on: bool) -> Callable[[], float]:
        w = Worker(cfg, 0, conn=None)
        w.stats_on = stats_on
        w.holder.swap(decider)
        w._partitions = [6] * 5
        conf = {**base, "on_delivery": w.checkpoints.on_delivery_error}

        def run() -> float:
            w.producer = Producer(conf)  # a fresh queue per run
            elapsed = timed(w.producer, w._route_batch, w.checkpoints.take_failures)
            w.telemetry.reset()
            return elapsed

        return run

    def passthrough() -> float:
        producer = Producer({**base, "on_delivery": lambda err, msg: None})
        produce, offsets = producer.produce, {}

        def body(batch: list[Any]) -> None:
            for m in batch:  # bench/_modes.py Passthrough.run, per message
                if m.error() is not None:
                    continue
                part = m.partition()
                ts = m.timestamp()[1]
                produce("out", m.value(), m.key(), part, None, None, ts if ts > 0 else 0)
                offsets[part] = m.offset() + 1

        return timed(producer, body)

    return {**{name: timer(d, on) for name, (d, on) in deciders.items()},
            "passthrough loop": passthrough}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=5)
    _common.add_data_args(p)
    p.add_argument("--batch", type=int, default=5000, help="messages per worker batch")
    p.add_argument("--no-append", action="store_true", help="do not write bench/RESULTS.md")
    args = p.parse_args()

    spec = _common.gen_spec(args, args.events)
    code = _common.code_state()  # what this process imported
    gen = Generator(spec)
    generated = list(gen.events())
    events = [payload for payload, _key, _ts in generated]
    settings = GateConfig().decision_settings()  # the gate's defaults (tag headers on)
    decider = build_decider(parse_snapshot(gen.rules()), settings)
    decide = decider.decide
    mix = Counter(OUTCOMES[decide(raw, 0).outcome] for raw in events)  # also a warm-up
    avg_size = sum(map(len, events)) / len(events)

    n = len(events)
    # The worker loop as configured by default, then without statistics, then
    # without tag headers (tag.headers = false: SPEC section 4).
    msgs, messages_kind = messages(generated)
    del generated
    plain = build_decider(parse_snapshot(gen.rules()), replace(settings, tag_headers=False))
    loops = route_loops(msgs, {"worker loop, stats on": (decider, True),
                              "worker loop, stats off": (decider, False),
                              "worker loop, no tag headers": (plain, True)}, args.batch)
    del msgs
    runs: dict[str, list[float]] = {"decide": [], "orjson.loads": [], **{k: [] for k in loops}}
    for _ in range(args.repeat):  # interleaved, so drift on a noisy machine hits all
        runs["decide"].append(n / time_decide(decide, events))
        runs["orjson.loads"].append(n / time_loads(events))
        for name, loop in loops.items():
            runs[name].append(n / loop())

    header = ["what", "median ev/s", "µs/event", "runs (ev/s)"]
    rows = []
    for name, rates in runs.items():
        med = statistics.median(rates)
        rows.append([name, f"{med:,.0f}", f"{1e6 / med:.2f}",
                     ", ".join(f"{r:,.0f}" for r in rates)])
    # Time share of the parse in a decision: t_loads / t_decide = rate_decide / rate_loads.
    parse_share = statistics.median(runs["decide"]) / statistics.median(runs["orjson.loads"])
    print(f"{n:,} events of {avg_size:.0f} bytes, {len(gen.rules()['rules'])} rules; one core\n")
    print(_common.text_table(header, rows))
    us = {k: 1e6 / statistics.median(v) for k, v in runs.items()}
    where = (f"Per event in Python: the worker loop {us['worker loop, stats on']:.2f} µs against the "
             f"passthrough loop's {us['passthrough loop']:.2f} µs "
             f"({us['worker loop, stats on'] / us['passthrough loop']:.1f}x); of the difference, "
             f"decide {us['decide']:.2f} µs, statistics "
             f"{us['worker loop, stats on'] - us['worker loop, stats off']:.2f} µs, tag headers "
             f"{us['worker loop, stats on'] - us['worker loop, no tag headers']:.2f} µs (confluent-kafka "
             "builds librdkafka headers per produce call, and frees them when the delivery is "
             "served, which this loop leaves out: end to end, bench/throughput.py's "
             "gate-no-headers mode measures it).")
    print(f"\na full orjson.loads alone costs {parse_share:.0%} of a whole decision (decide "
          "reads only the fields it needs, core/reader.py); "
          f"mix: {', '.join(f'{k} {v / n:.1%}' for k, v in mix.most_common())}\n{where}\n"
          f"The worker loops ran on {messages_kind}.")

    if not args.no_append:
        lines = _common.section_header("decision core (bench/core_bench.py)") + [
            *_common.machine_lines(),
            f"- code: {code}",
            f"- data: {n:,} in-memory events of {avg_size:.0f} bytes on average from "
            f"`etl_gate.gen` (unregistered {args.unregistered:.0%} of traffic, sampled "
            f"{args.sampled:.0%} of rules, malformed {args.malformed:.1%}; seed {args.seed}), "
            f"{len(gen.rules()['rules'])} rules; outcome mix: "
            + ", ".join(f"{k} {v / n:.1%}" for k, v in mix.most_common()),
            f"- loop calling `decider.decide(raw, 0)` inline vs one calling `orjson.loads(raw)` "
            "inline (malformed events caught), and the worker's "
            f"per-event loop (`Worker._route_batch`, batches of {args.batch}: decide, stats, "
            "produce into a real Producer whose broker is unreachable, so it only queues, "
            "purged between batches, untimed; "
            f"{messages_kind}; with statistics off, and with tag headers "
            "off), beside the lean passthrough's per-message loop on the same messages "
            "(bench/_modes.py), one process (one core), "
            f"{args.repeat} interleaved repeats, median",
            f"- command: `{_common.command_line()}`",
            "",
            *_common.md_table(header, rows),
            "",
            f"A full `orjson.loads` alone costs {parse_share:.0%} of a whole decision (decide "
            "reads only the fields it needs: core/reader.py).",
            "",
            where,
        ]
        _common.append_results(lines)
        print(f"appended to {_common.RESULTS}")


if __name__ == "__main__":
    main()
