"""The parts of bench/throughput.py every mode shares: topics, the pre-loaded input
(``Setup``), one measured run (``Run``) and what samples it (``Meter``)."""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common
import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from etl_gate.config import GateConfig, load_config
from etl_gate.core import MALFORMED, OUTCOMES, PRIORITIES, build_decider, parse_snapshot
from etl_gate.gen import Generator
from etl_gate.kafka.loader import produce_events

ROOT = _common.ROOT
POLL_S = 0.2  # committed-offset polling period (the time resolution of a run)


# -- topics -----------------------------------------------------------------

def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    client = admin(bootstrap)  # must outlive its futures
    topic = NewTopic(name, partitions, 1, config={"retention.ms": "-1"})
    for fut in client.create_topics([topic]).values():
        fut.result(30)


def delete_topics(bootstrap: str, names: list[str]) -> None:
    client = admin(bootstrap)
    for fut in client.delete_topics(names, operation_timeout=30).values():
        try:
            fut.result(60)
        except KafkaException as e:
            print(f"warning: deleting a topic: {e}", file=sys.stderr)


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-probe", "log_level": 3})
    try:
        md = c.list_topics(topic, timeout=10)
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in md.topics[topic].partitions}
    finally:
        c.close()


# -- setup (untimed) --------------------------------------------------------

@dataclass
class Setup:
    args: argparse.Namespace
    broker: _common.Broker
    workdir: Path
    prefix: str
    input_topic: str
    ends: dict[int, int]
    mix: Counter[str]  # outcome -> count, as the decision core decides the input
    expected_outputs: int  # routed + DLQ messages the gate must write
    avg_size: float
    expected_by: Counter[str] = field(default_factory=Counter)  # P0/P1/P2/dlq -> messages
    undeserializable: int = 0  # not JSON at all: Quix's deserializer skips them
    slack: set[int] = field(default_factory=set)  # partitions whose last event is not JSON
    topics: list[str] = field(default_factory=list)  # created, to delete at the end
    cfg: GateConfig = field(default_factory=GateConfig)  # the settings both modes share
    code: str = ""  # which etl_gate code, at the start
    fingerprint: tuple[tuple[str, int, int], ...] = ()  # its source files, at the start

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    @property
    def n(self) -> int:
        return sum(self.ends.values())

    def write_config(self, name: str, group: str, out_prefix: str,
                     stats: bool = True, input_topic: str | None = None,
                     tag_headers: bool = True, engine: str = "native") -> GateConfig:
        """A gate config with the defaults of config/gate.toml, but its own group, outputs,
        control-plane port and state dir."""
        path = self.workdir / f"{name}.toml"
        path.write_text(f"""\
workers = {self.args.workers}
rules_file = "rules.json"
log_level = "INFO"
[kafka]
bootstrap_servers = "{self.bootstrap}"
group_id = "{group}"
input_topic = "{input_topic or self.input_topic}"
engine = "{engine}"
consumer = {_inline_table(self.args.consumer_opt)}
producer = {_inline_table(self.args.producer_opt)}
{_assignments(getattr(self.args, "gate_kafka_opt", []))}
[topics]
p0 = "{out_prefix}.p0"
p1 = "{out_prefix}.p1"
p2 = "{out_prefix}.p2"
dlq = "{out_prefix}.dlq"
partitions = {self.args.partitions}
[control]
listen = "127.0.0.1:{_common.free_port(set())}"
state_dir = "state-{name}"
[observe]
metrics_listen = "127.0.0.1:{_common.free_port(set())}"
stats_enabled = {"true" if stats else "false"}
[tag]
headers = {"true" if tag_headers else "false"}
""")
        return load_config(path)


def _assignments(options: list[tuple[str, Any]]) -> str:
    """KEY=VALUE options as TOML lines (the gate's own [kafka] settings)."""
    return "\n".join(f"{k} = {v if isinstance(v, int | float) else orjson.dumps(v).decode()}"
                     for k, v in options)


def _inline_table(options: list[tuple[str, Any]]) -> str:
    """KEY=VALUE options as a TOML inline table (JSON strings are TOML strings)."""
    return "{" + ", ".join(f"{orjson.dumps(k).decode()} = "
                           f"{v if isinstance(v, int | float) else orjson.dumps(v).decode()}"
                           for k, v in options) + "}"


def preload(args: argparse.Namespace, broker: _common.Broker, workdir: Path) -> Setup:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    setup = Setup(args, broker, workdir, prefix, f"{prefix}.raw", {}, Counter(), 0, 0.0)
    # Event times (also the Kafka timestamps) end now: older ones fall to the
    # topics' retention, and the broker refuses any more than 1 h ahead
    # (log.message.timestamp.after.max.ms), which a start of "now" reaches at 3.6M events.
    start_ms = int(time.time() * 1000) - args.events
    gen = Generator(_common.gen_spec(args, args.events, start_ms=start_ms, step_ms=1))
    rules = gen.rules()
    (workdir / "rules.json").write_bytes(orjson.dumps(rules, option=orjson.OPT_INDENT_2))
    cfg = setup.cfg = setup.write_config("load", f"{prefix}-load", f"{prefix}.load")
    create_topic(broker.bootstrap, setup.input_topic, args.partitions)
    setup.topics.append(setup.input_topic)
    # Decide every event on its way in: the gate's expected totals.
    decide = build_decider(parse_snapshot(rules), cfg.decision_settings()).decide
    nbytes = 0

    def events() -> Iterator[tuple[bytes, bytes, int]]:
        nonlocal nbytes
        for payload, key, ts in gen.events():
            v = decide(payload, ts)
            setup.mix[OUTCOMES[v.outcome]] += 1
            if v.priority >= 0:
                setup.expected_outputs += 1
                setup.expected_by[PRIORITIES[v.priority]] += 1
            elif v.outcome == MALFORMED:
                setup.expected_outputs += 1
                setup.expected_by["dlq"] += 1
                if v.reason == "invalid_json":
                    setup.undeserializable += 1
            nbytes += len(payload)
            yield payload, key, ts

    t0 = time.perf_counter()
    n = produce_events(cfg, setup.input_topic, events())
    setup.ends = end_offsets(broker.bootstrap, setup.input_topic)
    setup.avg_size = nbytes / max(1, n)
    if setup.n != n:
        raise RuntimeError(f"input topic holds {setup.n} events, produced {n}")
    setup.slack = not_json_at_end(broker.bootstrap, setup.input_topic, setup.ends)
    print(f"pre-loaded {n:,} events ({setup.avg_size:.0f} bytes) into {setup.input_topic} "
          f"({args.partitions} partitions) in {time.perf_counter() - t0:.1f}s", flush=True)
    return setup


def not_json_at_end(bootstrap: str, topic: str, ends: dict[int, int]) -> set[int]:
    """Partitions whose last message is not JSON. Quix skips such a message in its
    deserializer without storing its offset, so its commit stops one short there."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-probe", "log_level": 3,
                  "enable.auto.commit": False})
    out: set[int] = set()
    try:
        for p, end in ends.items():
            if end <= 0:
                continue
            c.assign([TopicPartition(topic, p, end - 1)])
            m = c.poll(10)
            if m is None or m.error() is not None:
                raise RuntimeError(f"reading the last message of {topic} [{p}]: "
                                   f"{m.error() if m else 'timeout'}")
            try:
                orjson.loads(m.value())
            except orjson.JSONDecodeError:
                out.add(p)
    finally:
        c.close()
    return out


# -- one measured run -------------------------------------------------------

@dataclass
class Run:
    mode: str
    index: int
    n: int
    elapsed_s: float = math.nan  # start -> all N committed
    first_output_s: float = math.nan  # start -> first output acknowledged (startup overhead)
    first_commit_s: float = math.nan
    steady_eps: float = math.nan  # after the first commit
    exit_s: float = math.nan  # start -> every process exited
    cpu_s: float = math.nan  # user+sys of the whole process tree
    broker_cpu_s: float = math.nan  # over start -> all committed
    worker_rss_mib: float = math.nan  # the largest worker's peak RSS
    supervisor_rss_mib: float = math.nan
    busy: float = math.nan  # machine CPU busy share over the run
    steal: float = math.nan
    other_cpu_s: float = math.nan  # CPU used by anything else on the machine, start -> exit
    outputs: int = 0  # messages in the run's output topics
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not math.isnan(self.elapsed_s)

    @property
    def eps(self) -> float:
        return self.n / self.elapsed_s if self.ok else math.nan

    def per_million(self, seconds: float) -> float:
        return seconds / self.n * 1e6


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class Meter:
    """Everything sampled around one run: committed offsets, first output, RSS, CPU."""

    def __init__(self, setup: Setup, group: str, outputs: list[str], run: Run,
                 input_topic: str | None = None, ends: dict[int, int] | None = None,
                 slack: set[int] | frozenset[int] = frozenset(),
                 by_outputs: bool = False) -> None:
        """``slack``: partitions done one offset short of the end (see not_json_at_end);
        ``by_outputs``: done when the outputs hold ``run.n`` messages (no group offsets)."""
        self.setup = setup
        self.run = run
        self.ends = setup.ends if ends is None else ends
        self.slack = slack
        self.by_outputs = by_outputs
        self.probe = Consumer({"bootstrap.servers": setup.bootstrap, "group.id": group,
                               "enable.auto.commit": False, "log_level": 3})
        topic = input_topic or setup.input_topic
        self.parts = [TopicPartition(topic, p) for p in sorted(self.ends)]
        self.out_parts = [TopicPartition(t, p) for t in outputs for p in range(setup.args.partitions)]
        self.rss: dict[int, tuple[str, float]] = {}  # pid -> (role, peak MiB)

    def committed(self) -> tuple[int, bool]:
        """(events committed, all partitions at their end offset)."""
        if self.by_outputs:
            done = self.output_count()
            return done, done >= self.run.n
        done, complete = 0, True
        for tp in self.probe.committed(self.parts, timeout=10):
            end = self.ends[tp.partition]
            off = min(max(tp.offset, 0), end)
            done += off
            complete = complete and off >= end - (tp.partition in self.slack)
        return done, complete

    def output_count(self) -> int:
        return sum(self.probe.get_watermark_offsets(tp, timeout=5)[1] for tp in self.out_parts)

    def any_output(self) -> bool:
        try:
            return any(self.probe.get_watermark_offsets(tp, timeout=5)[1] > 0
                       for tp in self.out_parts)
        except KafkaException:  # e.g. a topic this new is not known to every part yet
            return False

    def sample_rss(self, pids: list[tuple[int, str]]) -> None:
        for pid, role in pids:
            peak = _common.proc_peak_rss_mib(pid)
            if peak is not None:
                self.rss[pid] = (role, peak)

    def _cpu_now(self) -> tuple[float, float | None, float]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return children_cpu(), self.setup.broker.cpu_seconds(), ru.ru_utime + ru.ru_stime

    def start(self) -> None:
        self.cpu0 = self._cpu_now()
        self.machine = _common.MachineCpu()
        self.t0 = time.perf_counter()

    def wait_committed(self, alive: Callable[[], bool], pids: Callable[[], list[tuple[int, str]]],
                       timeout_s: float) -> None:
        """Poll until every input event is committed; fills the timings and the CPU shares."""
        run, first = self.run, None
        tick = self.t0
        while True:
            tick += POLL_S
            time.sleep(max(0.0, tick - time.perf_counter()))
            running = alive()
            self.sample_rss(pids())
            try:
                if math.isnan(run.first_output_s) and self.any_output():
                    run.first_output_s = time.perf_counter() - self.t0
                done, complete = self.committed()
            except KafkaException as e:
                done, complete = 0, False
                run.notes.append(f"offset probe failed: {e}")
            now = time.perf_counter() - self.t0
            if done and first is None:
                first = (now, done)
            if complete:
                run.elapsed_s = now
                break
            if not running:
                run.notes.append(f"exited after {now:.1f}s with {done:,} of {run.n:,} committed")
                break
            if now > timeout_s:
                run.notes.append(f"timed out after {now:.0f}s with {done:,} of {run.n:,} committed")
                break
        run.busy, run.steal = self.machine.busy_and_steal()
        broker = self.setup.broker.cpu_seconds()
        if broker is not None and self.cpu0[1] is not None:
            run.broker_cpu_s = broker - self.cpu0[1]
        if first is not None and run.ok:
            run.first_commit_s = first[0]
            if run.elapsed_s > first[0]:
                run.steady_eps = (run.n - first[1]) / (run.elapsed_s - first[0])

    def finish(self) -> None:
        """After every process of the run exited (and was reaped)."""
        run = self.run
        run.exit_s = time.perf_counter() - self.t0
        tree, broker, me = self._cpu_now()
        run.cpu_s = tree - self.cpu0[0]
        # Whatever else ran on the machine from start to exit (neighbours, and
        # the broker when its pid is unknown): the noise in this run.
        known = run.cpu_s + (me - self.cpu0[2])
        if broker is not None and self.cpu0[1] is not None:
            known += broker - self.cpu0[1]
        run.other_cpu_s = max(0.0, self.machine.busy_seconds() - known)
        workers = [mib for role, mib in self.rss.values() if role == "worker"]
        sup = [mib for role, mib in self.rss.values() if role == "supervisor"]
        run.worker_rss_mib = max(workers, default=math.nan)
        run.supervisor_rss_mib = max(sup, default=math.nan)
        self.probe.close()


