"""End-to-end latency at a fixed offered load, for bench/throughput.py.

Every topic of the latency phase is created with
``message.timestamp.type=LogAppendTime``, so an input message's timestamp is
the time the broker appended it and an output's is the time the broker
appended the copy: latency = output append time - input append time, both
from the broker's clock (millisecond resolution), with the offering
producer's own batching left out and nothing measured on the side of the
process under test.

The offering process pre-builds a pool of generated events (``etl_gate.gen``,
the benchmark's mix), then produces them round the pool at a fixed rate,
splicing a unique id ``L<seq>`` into each (in place of the generator's
``"id":"e<i>"``) so that every output can be matched to its input after the
run: the outputs and the input are read back once the process under test
has committed everything, not while it runs.
"""

from __future__ import annotations

import math
import os
import re
import signal
import statistics
import sys
import time
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from etl_gate.gen import Generator, GenSpec

APPEND_TIME = {"message.timestamp.type": "LogAppendTime", "retention.ms": "-1"}
_ID = re.compile(rb'"id":"L(\d+)"')
_GEN_ID = re.compile(rb'"id":"e\d+"')


def create_topics(bootstrap: str, names: Iterable[str], partitions: int) -> None:
    """Topics whose timestamps are the broker's append times."""
    client = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    topics = [NewTopic(n, partitions, 1, config=APPEND_TIME) for n in names]
    for fut in client.create_topics(topics).values():
        fut.result(30)


# -- the offering producer (a spawned process) -------------------------------

def offer_main(pconf: dict[str, Any], topic: str, rate: float, seconds: float, spec: GenSpec,
               ready: Any, go: Any, result: Any, nice: int = 0) -> None:
    """Produce ``rate`` events/s for ``seconds`` to ``topic``; result = [sent, elapsed s,
    longest lag behind schedule in s, CPU s of this process while offering, its niceness].

    ``nice`` is added to the process's niceness before librdkafka's threads
    start (they inherit it). The offering producer stands for the apps' SDKs,
    which do not run on the gate's machine: niced, it takes the CPU the mode
    under test and the broker leave, instead of competing with them for it.
    A producer that could not keep up shows as its lag behind schedule."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    result[4] = os.nice(nice)  # the niceness it now runs at
    pool: list[tuple[bytes, bytes, bytes]] = []
    for payload, key, _ts in Generator(spec).events():
        m = _GEN_ID.search(payload)
        if m is None:  # a malformed variant that lost its id: skip it
            continue
        pool.append((payload[:m.start()] + b'"id":"L', b'"' + payload[m.end():], key))
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        errors.append(str(err))

    producer = Producer({**pconf, "delivery.report.only.error": True, "on_delivery": on_delivery})
    produce, poll = producer.produce, producer.poll
    total = int(rate * seconds)
    npool = len(pool)
    ready.set()
    go.wait()
    started = time.perf_counter()
    cpu0 = time.process_time()  # every thread of the process: librdkafka's too
    worst = 0.0
    seq = 0
    step = max(1, int(rate / 2000))  # check the schedule every 0.5 ms of events
    while seq < total:
        due = started + seq / rate
        now = time.perf_counter()
        if now < due:
            time.sleep(due - now)
        else:
            worst = max(worst, now - due)
        for _ in range(min(step, total - seq)):
            head, tail, key = pool[seq % npool]
            value = head + str(seq).encode() + tail
            while True:
                try:
                    produce(topic, value, key)
                    break
                except BufferError:
                    poll(0.01)
            seq += 1
        poll(0)
    elapsed = time.perf_counter() - started
    producer.flush(60)
    result[0], result[1], result[2], result[3] = seq, elapsed, worst, time.process_time() - cpu0
    if errors:
        print(f"latency offer: {len(errors)} delivery errors, first: {errors[0]}", file=sys.stderr)


# -- reading back ---------------------------------------------------------------

def _read_all(bootstrap: str, topics: list[str], on_message: Any) -> int:
    """Every message of ``topics`` from the beginning to the current end."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-latency-reader",
                  "enable.auto.commit": False, "log_level": 3})
    try:
        ends: dict[tuple[str, int], int] = {}
        for t in topics:
            md = c.list_topics(t, timeout=10)
            for p in md.topics[t].partitions:
                lo, hi = c.get_watermark_offsets(TopicPartition(t, p), timeout=10)
                if hi > lo:
                    ends[(t, p)] = hi
        if not ends:
            return 0
        c.assign([TopicPartition(t, p, 0) for t, p in ends])
        n = 0
        left = dict(ends)
        idle_since = time.monotonic()
        while left:
            msgs = c.consume(10000, 1.0)
            if not msgs:
                if time.monotonic() - idle_since > 30:
                    raise RuntimeError(f"latency: reading {topics} stalled; left {left}")
                continue
            idle_since = time.monotonic()
            for m in msgs:
                if m.error() is not None:
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"latency: reading: {m.error()}")
                    continue
                on_message(m)
                n += 1
                tp = (m.topic(), m.partition())
                if m.offset() + 1 >= left.get(tp, math.inf):
                    del left[tp]
        return n
    finally:
        c.close()


@dataclass
class Latency:
    mode: str
    rate: float  # offered, events/s (the target)
    round: int = 0  # 0-based; -1: the median of the rounds (``median_of``)
    sent: int = 0
    offer_s: float = math.nan
    offer_lag_s: float = math.nan  # the producer's worst lag behind its schedule
    offer_nice: float = math.nan  # the niceness the producer ran at
    samples: int = 0  # outputs matched to an input, after the warm-up
    warmup_skipped: int = 0
    unmatched: int = 0
    p50: float = math.nan  # milliseconds
    p99: float = math.nan
    p999: float = math.nan
    max: float = math.nan
    p99_by_5s: list[float] = field(default_factory=list)  # after the warm-up, by input append time
    p99_warmup: float = math.nan  # of the skipped inputs
    cpu_cores: float = math.nan  # CPU of the mode's processes over the offered window, in cores
    cpu_us_per_event: float = math.nan
    # The rest of the machine over the same window: the offering process, the
    # broker, and all CPUs together (busy share), so a tail can be read
    # against how saturated the two CPUs were.
    offer_cores: float = math.nan
    broker_cores: float = math.nan
    machine_busy: float = math.nan
    outputs: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def achieved(self) -> float:
        return self.sent / self.offer_s if self.offer_s else math.nan


def measure(bootstrap: str, input_topic: str, outputs: list[str], warmup_s: float,
            lat: Latency, csv: Path | None = None) -> None:
    """Match outputs to inputs by id; fill the percentiles (ms) of ``lat``; ``csv``: write
    every sample there (input append time in ms since the first input, latency in ms)."""
    appended = array("q", [-1]) * lat.sent

    def on_input(m: Any) -> None:
        hit = _ID.search(m.value() or b"")
        if hit is not None:
            seq = int(hit.group(1))
            if seq < len(appended):
                appended[seq] = m.timestamp()[1]

    _read_all(bootstrap, [input_topic], on_input)
    valid = [t for t in appended if t >= 0]
    if not valid:
        lat.notes.append("no input read back")
        return
    cutoff = min(valid) + int(warmup_s * 1000)
    delays: list[int] = []
    sent_at: list[int] = []
    warm: list[int] = []
    skipped = unmatched = 0

    def on_output(m: Any) -> None:
        nonlocal skipped, unmatched
        hit = _ID.search(m.value() or b"")
        seq = int(hit.group(1)) if hit is not None else -1
        t_in = appended[seq] if 0 <= seq < len(appended) else -1
        if t_in < 0:
            unmatched += 1
        elif t_in < cutoff:
            skipped += 1
            warm.append(m.timestamp()[1] - t_in)
        else:
            delays.append(m.timestamp()[1] - t_in)
            sent_at.append(t_in)

    lat.outputs = _read_all(bootstrap, outputs, on_output)
    lat.samples, lat.warmup_skipped, lat.unmatched = len(delays), skipped, unmatched
    if csv is not None:
        first = min(valid)
        csv.write_text("in_ms,latency_ms\n" + "".join(
            f"{t - first},{d}\n" for t, d in sorted(zip(sent_at, delays, strict=True))))
    if warm:
        warm.sort()
        lat.p99_warmup = _pct(warm, 0.99)
    windows: dict[int, list[int]] = {}
    for t, d in zip(sent_at, delays, strict=True):
        windows.setdefault((t - cutoff) // 5000, []).append(d)
    # A window cut short by the end of the offer (under half the usual
    # samples) is left out.
    full = statistics.median(len(ds) for ds in windows.values()) if windows else 0
    lat.p99_by_5s = [_pct(sorted(ds), 0.99) for _, ds in sorted(windows.items())
                     if len(ds) >= full / 2]
    if delays:
        delays.sort()
        lat.p50 = statistics.median(delays)
        lat.p99 = _pct(delays, 0.99)
        lat.p999 = _pct(delays, 0.999)
        lat.max = delays[-1]


# The figures a median row takes as the median of its rounds' figures.
_MEDIAN_FIELDS = ("offer_lag_s", "offer_nice", "p50", "p99", "p999", "max", "p99_warmup",
                  "cpu_cores", "cpu_us_per_event", "offer_cores", "broker_cores", "machine_busy")


def median_of(rounds: list[Latency]) -> Latency:
    """One mode at one rate over its rounds: each figure is the median of the
    rounds that have samples (a single run's p99 swings 2-4x with this shared
    host, so targets are judged on the median); ``samples`` and the achieved
    rate are the rounds' totals."""
    ok = [x for x in rounds if x.samples]
    m = Latency(rounds[0].mode, rounds[0].rate, round=-1)
    m.samples = sum(x.samples for x in ok)
    m.sent = sum(x.sent for x in ok)
    m.offer_s = sum(x.offer_s for x in ok) if ok else math.nan
    for name in _MEDIAN_FIELDS:
        vals = [getattr(x, name) for x in ok if not math.isnan(getattr(x, name))]
        setattr(m, name, statistics.median(vals) if vals else math.nan)
    if len(ok) < len(rounds):
        m.notes.append(f"{len(rounds) - len(ok)} of {len(rounds)} rounds had no samples")
    return m


def _pct(xs: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted ``xs``."""
    return float(xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))])
