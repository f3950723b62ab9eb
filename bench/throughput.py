"""End-to-end Kafka throughput and latency, side by side on one broker (issue 6).

One command: starts its own broker (scripts/kafka.sh, free ports, temp data
dir; or ``--bootstrap``), pre-loads one input topic with N generated events
and the matching rules (untimed), then runs, interleaved and R times each, W
processes per mode (``--modes``; default all but ``gate-no-stats``):

- passthrough: W spawned worker processes, each a confluent-kafka consumer
  (the gate's consumer and producer settings, batch ``consume``, manual
  commits) producing every message unchanged (key, timestamp) to one output
  topic, with no per-message Python callback: it flushes, then commits, every
  commit interval and whenever the input runs dry. The ceiling for a Python
  process on this broker.
- etl-gate: ``etl-gate run --config X --max-events N`` with W workers
  (at-least-once, config/gate.toml defaults).
- quix: W processes of ``bench/quix_app.py``, the same job (allow-list,
  sampling, route by priority, DLQ) as a Quix Streams application in one
  consumer group; see that file for how it decides and why.
- kcat: ``kcat -C ... | kcat -P ...`` (two C processes, librdkafka, Debian's
  package): the physical reference, no Python.
- gate-no-stats (on request): the gate with per-event statistics off.

Every run has a fresh consumer group and fresh output topics, so every run
processes all N events. A run's time goes from process start until the
group's committed offsets reach the input's end offsets (polled every 0.2 s),
i.e. everything consumed, every output acknowledged and its input committed;
for kcat, which keeps no group offsets, until the output topic holds N
messages. Also measured: time to the first commit, CPU seconds of the process
tree (``RUSAGE_CHILDREN`` after it exited), peak RSS of the workers (VmHWM), the
broker's CPU, and the machine's busy and steal shares over the run.

Then the latency phase (``bench/latency.py``): passthrough, etl-gate and quix
in turn each consume a fresh LogAppendTime topic while one producer process
offers events at a fixed rate (half the gate's median events/s, the same rate
for all), for ``--latency-seconds``; latency = output append time - input
append time, matched by event id, warm-up seconds skipped.

Prints a table and appends a section to bench/RESULTS.md (``--no-append`` to
skip). See bench/README.md.

    python bench/throughput.py [--events 2000000] [--repeat 3] [--modes passthrough,etl-gate]
"""

from __future__ import annotations

import argparse
import gc
import math
import multiprocessing as mp
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common
import latency
import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from etl_gate.config import GateConfig, load_config
from etl_gate.core import MALFORMED, OUTCOMES, PRIORITIES, build_decider, parse_snapshot
from etl_gate.gen import Generator, GenSpec
from etl_gate.kafka.clients import consumer_config, producer_config
from etl_gate.kafka.loader import produce_events
from etl_gate.kafka.topics import create_topics

ROOT = _common.ROOT
POLL_S = 0.2  # committed-offset polling period (the time resolution of a run)
# "gate-no-stats": the gate with per-event statistics off (observe.stats_enabled =
# false), to measure what observability costs (issue 4: at most 10%).
MODES = ("passthrough", "etl-gate", "quix", "kcat", "gate-no-stats")
DEFAULT_MODES = ("passthrough", "etl-gate", "quix", "kcat")
LATENCY_MODES = ("passthrough", "etl-gate", "quix")
QUIX_APP = Path(__file__).resolve().parent / "quix_app.py"


# -- the broker -------------------------------------------------------------

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
                     stats: bool = True, input_topic: str | None = None) -> GateConfig:
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
consumer = {_inline_table(self.args.consumer_opt)}
producer = {_inline_table(self.args.producer_opt)}
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
""")
        return load_config(path)


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
    gen = Generator(GenSpec(count=args.events, size=args.size, unregistered_share=args.unregistered,
                            sampled_share=args.sampled, malformed_share=args.malformed,
                            seed=args.seed, start_ms=start_ms, step_ms=1))
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


# -- the passthrough worker (runs in a spawned process) ---------------------

class Passthrough:
    """Consume a batch, produce each message unchanged; flush, then commit, every
    commit interval and when the input runs dry. No per-message Python callback:
    delivery reports are on for errors only."""

    def __init__(self, cfg: GateConfig, index: int, out_topic: str, counters: Any) -> None:
        self.cfg = cfg
        self.out_topic = out_topic
        self.counters = counters  # [consumed, delivery errors]
        self.offsets: dict[int, int] = {}  # partition -> next offset, produced
        self.dirty = False
        pconf = producer_config(cfg, f"pt{index}")
        pconf.update({"delivery.report.only.error": True, "on_delivery": self._failed})
        self.producer = Producer(pconf)
        self.consumer = Consumer(consumer_config(cfg, index))

    def _failed(self, err: Any, _msg: Any) -> None:
        self.counters[1] += 1
        print(f"passthrough: delivery failed: {err}", file=sys.stderr)

    def _commit(self, asynchronous: bool = True) -> None:
        """Flush (every output acknowledged), then commit what was produced."""
        if not self.dirty:
            return
        if self.producer.flush(60) > 0:
            raise RuntimeError("passthrough: outputs unacknowledged after 60 s")
        t = self.cfg.kafka.input_topic
        offsets = [TopicPartition(t, p, o) for p, o in self.offsets.items()]
        if asynchronous:
            self.consumer.commit(offsets=offsets, asynchronous=True)
        else:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        self.dirty = False

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self._commit(asynchronous=False)
        for tp in partitions:
            self.offsets.pop(tp.partition, None)

    def run(self, stop: Any) -> None:
        k = self.cfg.kafka
        self.consumer.subscribe([k.input_topic], on_revoke=self._on_revoke)
        consume, produce, poll = self.consumer.consume, self.producer.produce, self.producer.poll
        out, offsets, counters = self.out_topic, self.offsets, self.counters
        batch_size, timeout = k.batch_size, k.batch_timeout_ms / 1000
        interval = k.commit_interval_ms / 1000
        last_commit = time.monotonic()
        while not stop.is_set():
            msgs: list[Any] = consume(batch_size, timeout)
            n = 0
            for m in msgs:
                if m.error() is not None:
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        print(f"passthrough: consumer error: {m.error()}", file=sys.stderr)
                    continue
                part = m.partition()
                ts = m.timestamp()[1]
                while True:
                    try:
                        if ts > 0:
                            produce(out, m.value(), m.key(), part, timestamp=ts)
                        else:
                            produce(out, m.value(), m.key(), part)
                        break
                    except BufferError:
                        poll(0.05)
                offsets[part] = m.offset() + 1
                n += 1
            if n:
                counters[0] += n
                self.dirty = True
            poll(0)
            now = time.monotonic()
            if self.dirty and (not msgs or now - last_commit >= interval):
                self._commit()
                last_commit = now
        self._commit(asynchronous=False)
        self.consumer.close()


def passthrough_main(cfg: GateConfig, index: int, out_topic: str, stop: Any, counters: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides on Ctrl-C
    Passthrough(cfg, index, out_topic, counters).run(stop)


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


@dataclass
class Launch:
    """One mode's processes, started: what the meter samples and how to stop them."""

    mode: str
    group: str
    outputs: list[str]
    procs: list[Any]  # mp.Process or subprocess.Popen
    pids: Callable[[], list[tuple[int, str]]]  # (pid, "worker" | "supervisor")
    stopper: Callable[[Launch, Run], None]
    extra: dict[str, Any] = field(default_factory=dict)

    def alive(self) -> bool:
        return all((p.is_alive() if isinstance(p, mp.process.BaseProcess) else p.poll() is None)
                   for p in self.procs)

    def stop(self, run: Run, live: list[Any]) -> None:
        """Stop (if it does not exit by itself), wait, reap; problems go to run.notes."""
        self.stopper(self, run)
        for p in self.procs:
            if p in live:
                live.remove(p)


def _create_plain(setup: Setup) -> Callable[[list[str]], None]:
    def make(names: list[str]) -> None:
        for n in names:
            create_topic(setup.bootstrap, n, setup.args.partitions)

    return make


def _wait_popen(proc: subprocess.Popen[Any], what: str, run: Run, timeout_s: float,
                terminate_first: bool) -> None:
    if terminate_first:
        proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        run.notes.append(f"{what} did not exit {timeout_s:.0f} s after the last commit; stopped")
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.returncode and not (terminate_first and proc.returncode == -signal.SIGTERM):
        run.notes.append(f"{what} exited with {proc.returncode}")


def start_passthrough(setup: Setup, name: str, live: list[Any], input_topic: str | None = None,
                      make_topics: Callable[[list[str]], None] | None = None,
                      on_start: Callable[[], None] = lambda: None) -> Launch:
    args = setup.args
    group, out = f"{setup.prefix}-{name}", f"{setup.prefix}.{name}"
    cfg = setup.write_config(name, group, f"{setup.prefix}.unused", input_topic=input_topic)
    (make_topics or _create_plain(setup))([out])
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    counters = [ctx.Array("q", 2, lock=False) for _ in range(args.workers)]
    procs = [ctx.Process(target=passthrough_main, name=f"passthrough-w{i}",
                         args=(cfg, i, out, stop, counters[i])) for i in range(args.workers)]

    def stopper(launch: Launch, run: Run) -> None:
        stop.set()
        for p in procs:
            p.join(120)
            if p.exitcode is None:
                run.notes.append(f"{p.name} did not stop; killed")
                p.kill()
                p.join()
            elif p.exitcode:
                run.notes.append(f"{p.name} exited with {p.exitcode}")

    on_start()
    for p in procs:
        p.start()
        live.append(p)
    return Launch("passthrough", group, [out], procs,
                  lambda: [(p.pid, "worker") for p in procs if p.pid], stopper,
                  {"counters": counters})


def run_passthrough(setup: Setup, k: int, live: list[Any]) -> Run:
    run = Run("passthrough", k, setup.n)
    name = f"pt{k}"
    meter = Meter(setup, f"{setup.prefix}-{name}", [f"{setup.prefix}.{name}"], run)
    # The clock starts after the topics exist, before the processes start.
    launch = start_passthrough(setup, name, live, on_start=meter.start)
    meter.wait_committed(alive=launch.alive, pids=launch.pids, timeout_s=setup.args.run_timeout)
    launch.stop(run, live)
    meter.finish()
    counters = launch.extra["counters"]
    consumed, errors = (sum(c[i] for c in counters) for i in (0, 1))
    run.outputs = sum(end_offsets(setup.bootstrap, launch.outputs[0]).values())
    if consumed != run.n or run.outputs != run.n or errors:
        run.notes.append(f"consumed {consumed:,}, wrote {run.outputs:,}, delivery errors {errors}")
    delete_topics(setup.bootstrap, launch.outputs)
    return run


def gate_command() -> list[str]:
    script = Path(sys.executable).with_name("etl-gate")
    return [str(script)] if script.exists() else [sys.executable, "-m", "etl_gate"]


_LOG_PROBLEM = re.compile(r" (WARNING|ERROR|CRITICAL) |Traceback|^%\d\|")
# Quix Streams' log lines: "[2026-11-22 01:02:03,456] [WARNING] [quixstreams] : ..."
_QUIX_LOG_PROBLEM = re.compile(r"\[(WARNING|ERROR|CRITICAL)\]|Traceback|^%\d\|")


def log_problems(path: Path, pattern: re.Pattern[str], run: Run) -> None:
    problems = [line for line in path.read_text(errors="replace").splitlines()
                if pattern.search(line)]
    if problems:
        run.notes.append(f"{len(problems)} warning/error log lines in {path.name}, first: "
                         f"{problems[0].strip()[:300]}")


def start_gate(setup: Setup, name: str, live: list[Any], stats: bool = True,
               max_events: int = 0, input_topic: str | None = None,
               make_topics: Callable[[list[str]], None] | None = None,
               on_start: Callable[[], None] = lambda: None) -> Launch:
    """``max_events``: the gate exits by itself after that many; 0: stop() sends SIGTERM
    (the gate drains and exits)."""
    group, out = f"{setup.prefix}-{name}", f"{setup.prefix}.{name}"
    cfg = setup.write_config(name, group, out, stats=stats, input_topic=input_topic)
    t = cfg.topics
    outputs = [*t.priority_topics, t.dlq]
    if make_topics is not None:
        make_topics(outputs)
    create_topics(cfg)  # the input exists; creates the priority and DLQ topics
    gc.collect()  # create_topics leaves its AdminClient in a reference cycle when a topic exists
    cmd = [*gate_command(), "run", "--config", str(setup.workdir / f"{name}.toml")]
    if max_events:
        cmd += ["--max-events", str(max_events)]
    log_path, out_path = setup.workdir / f"{name}.log", setup.workdir / f"{name}.out"
    with open(log_path, "wb") as log, open(out_path, "wb") as stdout:
        on_start()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=log, cwd=ROOT)
    live.append(proc)

    def pids() -> list[tuple[int, str]]:
        kids = [(pid, "worker") for pid in _common.descendants(proc.pid)
                if "spawn_main" in _common.proc_cmdline(pid)]
        return [(proc.pid, "supervisor"), *kids]

    def stopper(launch: Launch, run: Run) -> None:
        _wait_popen(proc, "gate", run, 120, terminate_first=not max_events)

    return Launch("etl-gate" if stats else "gate-no-stats", group, outputs, [proc], pids,
                  stopper, {"log": log_path, "out": out_path})


def run_gate(setup: Setup, k: int, live: list[Any], stats: bool = True) -> Run:
    mode = "etl-gate" if stats else "gate-no-stats"
    run = Run(mode, k, setup.n)
    name = f"gate{k}" if stats else f"gatens{k}"
    t0_outputs = [f"{setup.prefix}.{name}.{x}" for x in ("p0", "p1", "p2", "dlq")]
    meter = Meter(setup, f"{setup.prefix}-{name}", t0_outputs, run)
    launch = start_gate(setup, name, live, stats=stats, max_events=setup.n, on_start=meter.start)
    meter.wait_committed(alive=launch.alive, pids=launch.pids, timeout_s=setup.args.run_timeout)
    launch.stop(run, live)
    meter.finish()
    outputs = launch.outputs
    run.outputs = sum(sum(end_offsets(setup.bootstrap, name).values()) for name in outputs)
    try:
        totals = orjson.loads(launch.extra["out"].read_bytes())
    except orjson.JSONDecodeError:
        totals = {}
        run.notes.append("no totals printed")
    if totals and (totals.get("events_in") != run.n
                   or totals.get("routed", 0) + totals.get("dlq", 0) != setup.expected_outputs):
        run.notes.append(f"totals {totals}; expected {setup.expected_outputs:,} outputs")
    if run.outputs != setup.expected_outputs:
        run.notes.append(f"{run.outputs:,} messages in the output topics, expected "
                         f"{setup.expected_outputs:,}")
    log_problems(launch.extra["log"], _LOG_PROBLEM, run)
    delete_topics(setup.bootstrap, outputs)
    return run


def start_quix(setup: Setup, name: str, live: list[Any], input_topic: str | None = None,
               make_topics: Callable[[list[str]], None] | None = None,
               on_start: Callable[[], None] = lambda: None) -> Launch:
    """W processes of bench/quix_app.py in one consumer group; stop() sends SIGTERM, on
    which Quix commits its last checkpoint and exits."""
    args, cfg = setup.args, setup.cfg
    group, out = f"{setup.prefix}-{name}", f"{setup.prefix}.{name}"
    outputs = [f"{out}.p0", f"{out}.p1", f"{out}.p2", f"{out}.dlq"]
    (make_topics or _create_plain(setup))(outputs)
    conf = {"bootstrap": setup.bootstrap, "group": group, "input": input_topic or setup.input_topic,
            "priority_topics": outputs[:3], "dlq": outputs[3],
            "rules": str(setup.workdir / "rules.json"), "seed": cfg.sampling_seed,
            "sample_keys": list(cfg.fields.sample_keys),
            "commit_interval": cfg.kafka.commit_interval_ms / 1000,
            "consumer": quix_client_settings(consumer_config(cfg, 0), QUIX_CONSUMER_KEYS),
            "producer": quix_client_settings(producer_config(cfg, 0), QUIX_PRODUCER_KEYS),
            "state_dir": str(setup.workdir / f"{name}-state")}
    conf_path = setup.workdir / f"{name}.json"
    conf_path.write_bytes(orjson.dumps(conf, option=orjson.OPT_INDENT_2))
    procs, logs = [], []
    on_start()
    for i in range(args.workers):
        log_path = setup.workdir / f"{name}-w{i}.log"
        with open(log_path, "wb") as log:
            procs.append(subprocess.Popen([sys.executable, str(QUIX_APP), str(conf_path)],
                                          stdout=log, stderr=subprocess.STDOUT, cwd=ROOT))
        logs.append(log_path)
        live.append(procs[-1])

    def stopper(launch: Launch, run: Run) -> None:
        for i, p in enumerate(procs):
            _wait_popen(p, f"quix worker {i}", run, 60, terminate_first=True)

    return Launch("quix", group, outputs, procs,
                  lambda: [(p.pid, "worker") for p in procs], stopper, {"logs": logs})


# The gate's librdkafka tuning handed to Quix (consumer_extra_config /
# producer_extra_config): sizes, linger, compression, fetch behaviour. Group,
# offsets and commit settings stay Quix's own.
QUIX_CONSUMER_KEYS = ("session.timeout.ms", "heartbeat.interval.ms", "fetch.min.bytes",
                      "fetch.wait.max.ms", "queued.max.messages.kbytes", "fetch.queue.backoff.ms")
QUIX_PRODUCER_KEYS = ("linger.ms", "compression.type", "batch.size", "queue.buffering.max.messages",
                      "queue.buffering.max.kbytes", "message.timeout.ms", "acks")


def quix_client_settings(conf: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: conf[k] for k in keys if k in conf}


def quix_skipped(launch: Launch) -> int:
    """Undeserializable messages the Quix workers reported skipping (printed at exit)."""
    n = 0
    for path in launch.extra["logs"]:
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith('{"skipped_undeserializable"'):
                n += orjson.loads(line)["skipped_undeserializable"]
    return n


def run_quix(setup: Setup, k: int, live: list[Any]) -> Run:
    run = Run("quix", k, setup.n)
    name = f"quix{k}"
    outputs = [f"{setup.prefix}.{name}.{x}" for x in ("p0", "p1", "p2", "dlq")]
    meter = Meter(setup, f"{setup.prefix}-{name}", outputs, run, slack=setup.slack)
    launch = start_quix(setup, name, live, on_start=meter.start)
    meter.wait_committed(alive=launch.alive, pids=launch.pids, timeout_s=setup.args.run_timeout)
    launch.stop(run, live)
    meter.finish()
    got = {role: sum(end_offsets(setup.bootstrap, t).values())
           for role, t in zip(("P0", "P1", "P2", "dlq"), outputs, strict=True)}
    run.outputs = sum(got.values())
    want = dict(setup.expected_by)
    want["dlq"] = want.get("dlq", 0) - setup.undeserializable  # skipped by its deserializer
    if any(got[r] != want.get(r, 0) for r in got):
        run.notes.append(f"outputs {got}, expected {want} (the gate's decisions, minus the "
                         f"{setup.undeserializable} non-JSON events Quix skips)")
    skipped = quix_skipped(launch)
    if skipped != setup.undeserializable:
        run.notes.append(f"quix skipped {skipped} undeserializable events, expected "
                         f"{setup.undeserializable}")
    for path in launch.extra["logs"]:
        log_problems(path, _QUIX_LOG_PROBLEM, run)
    delete_topics(setup.bootstrap, outputs)
    return run


KCAT_CONSUMER = ["queued.min.messages=10000000", "queued.max.messages.kbytes=131072"]


def _kcat_x(conf: dict[str, Any], key: str) -> str:
    v = conf[key]
    return f"{key}={str(v).lower() if isinstance(v, bool) else v}"


def run_kcat(setup: Setup, k: int, live: list[Any]) -> Run:
    """``kcat -C`` (all partitions, from the beginning, exits at the end) piped into
    ``kcat -P``, with the gate's producer tuning (linger, lz4, batch size,
    idempotence). Done when the output topic holds N messages: kcat -C keeps no
    group offsets."""
    args, cfg = setup.args, setup.cfg
    run = Run("kcat", k, setup.n)
    out = f"{setup.prefix}.kcat{k}"
    _create_plain(setup)([out])
    pconf, cconf = producer_config(cfg, "kcat"), consumer_config(cfg, 0)
    xs = [_kcat_x(pconf, key) for key in ("linger.ms", "compression.type", "batch.size",
                                          "queue.buffering.max.messages",
                                          "queue.buffering.max.kbytes", "enable.idempotence",
                                          "acks")]
    # fetch.queue.backoff.ms is newer than kcat's librdkafka (2.0.2 in Debian 12).
    cxs = [_kcat_x(cconf, key) for key in ("fetch.wait.max.ms",)]
    # Its fetchers back off whenever the prefetch queue holds queued.min.messages
    # (100k by default), which halves kcat's rate here (~280k/s instead of ~580k/s
    # at 2M events): raised, so that only a 128 MiB bound on the queue applies.
    cxs += KCAT_CONSUMER + [f"{key}={v}" for key, v in args.kcat_opt]
    kcat = args.kcat
    consume = [kcat, "-C", "-b", setup.bootstrap, "-t", setup.input_topic, "-o", "beginning",
               "-e", "-q", "-f", "%k\t%s\n", *(a for x in cxs for a in ("-X", x))]
    produce = [kcat, "-P", "-b", setup.bootstrap, "-t", out, "-K", "\t", "-q",
               *(a for x in xs for a in ("-X", x))]
    meter = Meter(setup, f"{setup.prefix}-kcat{k}", [out], run, by_outputs=True)
    log_path = setup.workdir / f"kcat{k}.log"
    with open(log_path, "wb") as log:
        meter.start()
        c = subprocess.Popen(consume, stdout=subprocess.PIPE, stderr=log)
        p = subprocess.Popen(produce, stdin=c.stdout, stderr=log)
    assert c.stdout is not None
    c.stdout.close()  # the producer holds the pipe
    live += [c, p]

    def stopper(launch: Launch, run: Run) -> None:
        _wait_popen(c, "kcat -C", run, 120, terminate_first=False)
        _wait_popen(p, "kcat -P", run, 120, terminate_first=False)

    launch = Launch("kcat", "", [out], [c, p], lambda: [(c.pid, "worker"), (p.pid, "worker")],
                    stopper)
    # Either one may exit first: the consumer at the end of the input.
    meter.wait_committed(alive=lambda: p.poll() is None, pids=launch.pids,
                         timeout_s=args.run_timeout)
    launch.stop(run, live)
    meter.finish()
    run.outputs = sum(end_offsets(setup.bootstrap, out).values())
    if run.outputs != run.n:
        run.notes.append(f"wrote {run.outputs:,} messages, expected {run.n:,}")
    log_problems(log_path, re.compile(r"%\d\||ERROR|error"), run)
    delete_topics(setup.bootstrap, [out])
    return run


# -- latency at a fixed offered load --------------------------------------------

def wait_group(bootstrap: str, group: str, members: int, partitions: int,
               alive: Callable[[], bool], timeout_s: float = 120.0) -> float:
    """Wait until ``group`` is stable with ``members`` members owning every partition;
    returns the seconds waited."""
    from confluent_kafka import ConsumerGroupState

    client = admin(bootstrap)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if not alive():
            raise RuntimeError(f"group {group}: a process exited before joining")
        try:
            d = client.describe_consumer_groups([group])[group].result(10)
            owned = sum(len(m.assignment.topic_partitions) for m in d.members
                        if m.assignment is not None)
            if d.state == ConsumerGroupState.STABLE and len(d.members) == members \
                    and owned >= partitions:
                return time.perf_counter() - t0
        except KafkaException:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"group {group} not stable with {members} members after {timeout_s:.0f} s")


def run_latency(setup: Setup, mode: str, rate: float, live: list[Any]) -> latency.Latency:
    """One mode consumes a fresh LogAppendTime topic while a producer process offers
    ``rate`` events/s; then every output is matched to its input."""
    args = setup.args
    lat = latency.Latency(mode, rate)
    run = Run(mode, -1, 0)  # collects the notes of stopping
    name = f"lat{mode.replace('-', '')}"
    in_topic = f"{setup.prefix}.{name}.raw"

    def make(names: list[str]) -> None:
        latency.create_topics(setup.bootstrap, names, args.partitions)

    make([in_topic])
    if mode == "passthrough":
        launch = start_passthrough(setup, name, live, input_topic=in_topic, make_topics=make)
    elif mode == "etl-gate":
        launch = start_gate(setup, name, live, input_topic=in_topic, make_topics=make)
    else:
        launch = start_quix(setup, name, live, input_topic=in_topic, make_topics=make)
    try:
        wait_group(setup.bootstrap, launch.group, args.workers, args.partitions, launch.alive)
        time.sleep(1.0)  # let the assignment settle (fetchers started)
        ctx = mp.get_context("spawn")
        ready, go = ctx.Event(), ctx.Event()
        result = ctx.Array("d", 3, lock=False)
        spec = GenSpec(count=args.latency_pool, size=args.size,
                       unregistered_share=args.unregistered, sampled_share=args.sampled,
                       malformed_share=args.malformed, seed=args.seed, start_ms=0, step_ms=1)
        offer = ctx.Process(target=latency.offer_main, name="latency-offer",
                            args=(producer_config(setup.cfg, "offer"), in_topic, rate,
                                  args.latency_seconds, spec, ready, go, result))
        offer.start()
        live.append(offer)
        if not ready.wait(300):
            raise RuntimeError("latency: the offering process did not get ready")

        def cpu() -> float:
            return sum(_common.proc_cpu_seconds(pid) or 0.0 for pid, _ in launch.pids())

        cpu0, t0 = cpu(), time.perf_counter()
        go.set()
        offer.join(args.latency_seconds + 300)
        cpu1, window = cpu(), time.perf_counter() - t0
        live.remove(offer)
        if offer.exitcode != 0:
            lat.notes.append(f"offering process exited with {offer.exitcode}")
        lat.sent, lat.offer_s, lat.offer_lag_s = int(result[0]), result[1], result[2]
        lat.cpu_cores = (cpu1 - cpu0) / window
        if lat.sent:
            lat.cpu_us_per_event = (cpu1 - cpu0) / lat.sent * 1e6
        ends = end_offsets(setup.bootstrap, in_topic)
        slack = not_json_at_end(setup.bootstrap, in_topic, ends) if mode == "quix" else set()
        meter = Meter(setup, launch.group, launch.outputs, Run(mode, -1, sum(ends.values())),
                      input_topic=in_topic, ends=ends, slack=slack)
        meter.start()
        meter.wait_committed(alive=launch.alive, pids=launch.pids, timeout_s=120)
        if not meter.run.ok:
            lat.notes += meter.run.notes
        meter.probe.close()
    finally:
        launch.stop(run, live)
    lat.notes += run.notes
    latency.measure(setup.bootstrap, in_topic, launch.outputs, args.latency_warmup, lat,
                    csv=setup.workdir / f"latency-{mode}.csv")
    delete_topics(setup.bootstrap, [in_topic, *launch.outputs])
    return lat


# -- report -----------------------------------------------------------------

def _f(x: float, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


HEADER = ["run", "mode", "elapsed s", "events/s", "ev/s after 1st commit", "1st output s",
          "1st commit s", "exit s", "CPU s/1M ev", "worker peak RSS MiB", "broker CPU s/1M ev",
          "machine busy", "steal", "other CPU s"]


def row(label: str, r: Run) -> list[str]:
    return [label, r.mode, _f(r.elapsed_s, ".2f"), _f(r.eps, ",.0f"), _f(r.steady_eps, ",.0f"),
            _f(r.first_output_s, ".2f"), _f(r.first_commit_s, ".2f"), _f(r.exit_s, ".2f"),
            _f(r.per_million(r.cpu_s), ".2f"), _f(r.worker_rss_mib, ".0f"),
            _f(r.per_million(r.broker_cpu_s), ".2f"), _f(r.busy * 100, ".0f") + "%",
            _f(r.steal * 100, ".1f") + "%", _f(r.other_cpu_s, ".1f")]


def median_run(mode: str, runs: list[Run]) -> Run | None:
    ok = [r for r in runs if r.mode == mode and r.ok]
    if not ok:
        return None

    def med(attr: str) -> float:
        vals = [getattr(r, attr) for r in ok if not math.isnan(getattr(r, attr))]
        return statistics.median(vals) if vals else math.nan

    m = Run(mode, 0, ok[0].n)
    for attr in ("elapsed_s", "first_output_s", "first_commit_s", "exit_s", "cpu_s", "broker_cpu_s",
                 "worker_rss_mib", "supervisor_rss_mib", "busy", "steal", "other_cpu_s", "steady_eps"):
        setattr(m, attr, med(attr))
    m.elapsed_s = m.n / statistics.median(r.eps for r in ok)  # so m.eps is the median rate
    return m


def _pairs(runs: list[Run], num: str, den: str) -> list[float]:
    """Per-repeat ratios of events/s (interleaved runs of the same repeat)."""
    by = {(r.mode, r.index): r for r in runs if r.ok}
    return [by[(num, i)].eps / by[(den, i)].eps for i in sorted({r.index for r in runs})
            if (num, i) in by and (den, i) in by]


def _ratio_line(label: str, runs: list[Run], num: Run, den: Run, target: str = "") -> str:
    pairs = _pairs(runs, num.mode, den.mode)
    return (f"{label}: events/s {num.eps / den.eps:.2f}x (ratio of medians; per repeat "
            f"{', '.join(f'{x:.2f}' for x in pairs) or '-'}), CPU per event "
            f"{num.cpu_s / den.cpu_s:.2f}x" + (f"; target {target}" if target else ""))


LAT_HEADER = ["mode", "offered ev/s", "achieved ev/s", "offer lag max ms", "samples",
              "p50 ms", "p99 ms", "p99.9 ms", "max ms", "CPU cores", "CPU µs/ev",
              "half own max ev/s"]


def _eps(run: Run | None) -> float:
    return run.eps if run is not None else math.nan


def lat_row(lat: latency.Latency, own_max: float) -> list[str]:
    return [lat.mode, _f(lat.rate, ",.0f"), _f(lat.achieved, ",.0f"),
            _f(lat.offer_lag_s * 1000, ".0f"), f"{lat.samples:,}", _f(lat.p50, ".0f"),
            _f(lat.p99, ".0f"), _f(lat.p999, ".0f"), _f(lat.max, ".0f"),
            _f(lat.cpu_cores, ".2f"), _f(lat.cpu_us_per_event, ".1f"), _f(own_max / 2, ",.0f")]


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


def targets(meds: dict[str, Run | None], lats: list[latency.Latency]) -> list[str]:
    """Issue 6's targets, one line each, with the figure that decides them."""
    pt, gate, quix, kcat = (meds.get(m) for m in ("passthrough", "etl-gate", "quix", "kcat"))
    glat = next((x for x in lats if x.mode == "etl-gate" and x.samples), None)
    mb = 1.048576  # MiB -> MB
    out = ["Targets (issue 6):", ""]
    if gate is None:
        return out + ["- no etl-gate run: nothing to judge"]
    r_pt = gate.eps / pt.eps if pt else math.nan
    r_qx = gate.eps / quix.eps if quix else math.nan
    out += [
        f"- etl-gate >= 0.7x passthrough: {_f(r_pt, '.2f')}x "
        f"{_verdict(None if pt is None else r_pt >= 0.7)}",
        f"- etl-gate >= 2x Quix Streams: {_f(r_qx, '.2f')}x "
        f"{_verdict(None if quix is None else r_qx >= 2.0)}",
        f"- etl-gate >= 100,000 events/s: {gate.eps:,.0f} {_verdict(gate.eps >= 100_000)}",
        f"- p99 end-to-end < 25 ms at half load: "
        f"{_f(glat.p99 if glat else math.nan, '.0f')} ms "
        f"{_verdict(None if glat is None else glat.p99 < 25)}",
        f"- p99.9 < 100 ms at half load: {_f(glat.p999 if glat else math.nan, '.0f')} ms "
        f"{_verdict(None if glat is None else glat.p999 < 100)}",
        f"- worker RSS < 300 MB each: peak {gate.worker_rss_mib * mb:.0f} MB "
        f"{_verdict(gate.worker_rss_mib * mb < 300)}",
        f"- CPU per event (stated): {gate.cpu_s / gate.n * 1e6:.1f} µs flat out (process tree, "
        "start-up included)"
        + (f", {glat.cpu_us_per_event:.1f} µs at the fixed load ({glat.cpu_cores:.2f} cores)"
           if glat else ""),
    ]
    if kcat:
        out.append(f"- share of the C passthrough (kcat): etl-gate {gate.eps / kcat.eps:.2f}x"
                   + (f", Python passthrough {pt.eps / kcat.eps:.2f}x" if pt else ""))
    return out


def software_line() -> str:
    parts = []
    try:
        from importlib.metadata import version

        parts.append(f"quixstreams {version('quixstreams')}")
    except Exception:  # noqa: BLE001 - not installed: no quix mode
        pass
    try:
        r = subprocess.run(["kcat", "-V"], capture_output=True, text=True, timeout=10)
        m = re.search(r"Version (\S+) .*librdkafka (\S+)", r.stdout)
        if m:
            parts.append(f"kcat {m.group(1)} (Debian package, librdkafka {m.group(2)})")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        parts.append(f"mmh3 {version('mmh3')}")
    except Exception:  # noqa: BLE001
        pass
    return "- also: " + ", ".join(parts) if parts else ""


def report(setup: Setup, runs: list[Run], started: float, lats: list[latency.Latency],
           rate_note: str) -> None:
    rows = [row(str(r.index + 1), r) for r in runs]
    meds = {mode: median_run(mode, runs) for mode in MODES}
    rows += [row("median", m) for m in meds.values() if m is not None]
    pt, gate, quix, kcat = (meds[m] for m in ("passthrough", "etl-gate", "quix", "kcat"))
    summary: list[str] = []
    if pt and gate:
        summary.append(_ratio_line("gate/passthrough", runs, gate, pt, ">= 0.70"))
    if quix and gate:
        summary.append(_ratio_line("gate/quix", runs, gate, quix, ">= 2.0"))
    if kcat and gate:
        summary.append(_ratio_line("gate/kcat (the gate's share of the C passthrough)", runs,
                                   gate, kcat))
    if kcat and pt:
        summary.append(_ratio_line("passthrough/kcat", runs, pt, kcat))
    nostats = meds.get("gate-no-stats")
    if gate and nostats:
        summary.append(
            f"observability cost: gate with stats / without: events/s {gate.eps / nostats.eps:.2f}, "
            f"CPU per event {gate.cpu_s / nostats.cpu_s:.2f}x (issue 4 target: events/s >= 0.90)")
    lat_rows = [lat_row(x, _eps(meds.get(x.mode))) for x in lats]
    verdicts = targets(meds, lats)
    sup = gate.supervisor_rss_mib if gate else math.nan
    mix = ", ".join(f"{k} {v / setup.n:.1%}" for k, v in setup.mix.most_common())
    notes = [f"run {r.index + 1} {r.mode}: {note}" for r in runs for note in r.notes]
    notes += [f"latency {x.mode}: {note}" for x in lats for note in x.notes]
    if _common.code_fingerprint() != setup.fingerprint:
        notes.insert(0, "etl_gate's source files changed while this ran: later runs may have run "
                        "other code than earlier ones")

    print()
    print(_common.text_table(HEADER, rows))
    for line in summary:
        print(line)
    if lats:
        print()
        print(rate_note)
        print(_common.text_table(LAT_HEADER, lat_rows))
    print()
    for line in verdicts + [""] + notes:
        print(line)
    print(f"logs and configs: {setup.workdir}")
    if setup.args.no_append:
        return
    a, cfg = setup.args, setup.cfg
    k = cfg.kafka
    modes = sorted({r.mode for r in runs}, key=MODES.index)
    broker = (f"Apache Kafka {_common.kafka_version()} (scripts/kafka.sh, KRaft, one node, "
              f"same machine, 512 MiB heap)" if setup.broker.own else f"given: {a.bootstrap}")
    title = ("Kafka side by side: " + ", ".join(modes) + " (bench/throughput.py)"
             if {"quix", "kcat"} & set(modes) or lats
             else "Kafka throughput, etl-gate vs passthrough (bench/throughput.py)")
    mode_lines = []
    if "quix" in modes or any(x.mode == "quix" for x in lats):
        mode_lines.append(
            f"- quix: {a.workers} processes of `bench/quix_app.py` in one group (JSON "
            "deserializer, `sdf.filter` + `sdf.to_topic(callable)`; decision reimplemented on the "
            "parsed dict: same allow-list, SPEC sampling, routing, DLQ for parseable malformed; "
            f"the {setup.undeserializable:,} non-JSON events are skipped by its deserializer), "
            f"commit_interval {k.commit_interval_ms / 1000:g} s (the gate's), the gate's librdkafka "
            "tuning as extra config; stopped with SIGTERM once committed")
    if "kcat" in modes:
        mode_lines.append(
            "- kcat: `kcat -C -t IN -o beginning -e -f '%k\\t%s\\n' | kcat -P -t OUT -K '\\t'` "
            "(one consumer of all partitions, one producer; the gate's linger/lz4/batch/idempotence "
            f"settings; consumer `{'`, `'.join(KCAT_CONSUMER + [f'{k}={v}' for k, v in a.kcat_opt])}`"
            ": no fetch back-off); done when the output holds N messages (kcat keeps no group "
            "offsets)")
    lines = _common.section_header(title) + [
        *_common.machine_lines(),
        *([software_line()] if software_line() else []),
        f"- code: {setup.code}",
        f"- broker: {broker}",
        f"- input: {setup.n:,} events of {setup.avg_size:.0f} bytes on average (`etl_gate.gen`: "
        f"unregistered {a.unregistered:.0%} of traffic, sampled {a.sampled:.0%} of rules, "
        f"malformed {a.malformed:.1%}; seed {a.seed}), {a.partitions} partitions, lz4; "
        f"decision mix: {mix}; the gate writes {setup.expected_outputs:,} of them "
        "(priority topics + DLQ)",
        f"- {a.workers} worker processes in the Python modes; gate config: config/gate.toml "
        f"defaults (at-least-once, batch {k.batch_size}, commit every {k.commit_interval_ms} ms, "
        f"linger {k.linger_ms} ms, {k.compression}, idempotent, tag headers "
        f"{'on' if cfg.tag.headers else 'off'}, control plane on)"
        + "".join(f"; {role} `{key}={v}` (all modes)" for role, opts in
                  (("consumer", a.consumer_opt), ("producer", a.producer_opt)) for key, v in opts)
        + "; passthrough: same client settings, flush + commit every commit interval and when "
        f"idle; {a.warmup} untimed passthrough warm-up run(s), then {a.repeat} interleaved "
        f"repeats; wall time {time.perf_counter() - started:.0f}s in all",
        *mode_lines,
        "- elapsed: process start until the group's committed offsets reach the input's end "
        f"(polled every {POLL_S} s); CPU: user+sys of the process tree; broker CPU over the "
        f"elapsed time; machine busy/steal/other from /proc/stat ({os.cpu_count()} CPUs shared "
        "by workers, broker and neighbours)"
        + (f"; gate supervisor peak RSS {sup:.0f} MiB" if not math.isnan(sup) else ""),
        f"- command: `{_common.command_line()}`",
        "",
        *_common.md_table(HEADER, rows),
        "",
        *summary,
    ]
    if lats:
        lines += [
            "",
            f"End-to-end latency at a fixed offered load ({rate_note}): output append time - "
            "input append time (LogAppendTime topics, broker clock, ms), matched by event id, "
            f"the first {a.latency_warmup:g} s of input skipped; {a.latency_seconds:g} s per mode, "
            "one producer process on the same machine (pre-built events, lz4, linger "
            f"{k.linger_ms} ms); CPU: the mode's processes over the offered window; a mode whose "
            "half maximum is below the common rate is measured again at half its own maximum",
            "",
            *_common.md_table(LAT_HEADER, lat_rows),
        ]
    lines += ["", *verdicts, *([""] + [f"- {n}" for n in notes] if notes else [])]
    _common.append_results(lines)
    print(f"appended to {_common.RESULTS}")


# -- main -------------------------------------------------------------------

def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            pass
    return key, value


def _modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"unknown mode(s) {bad}; choose from {', '.join(MODES)}")
    return modes


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=2_000_000)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--size", type=int, default=350, help="approximate bytes per event")
    p.add_argument("--unregistered", type=float, default=0.10, help="share of traffic")
    p.add_argument("--sampled", type=float, default=0.10, help="share of rules sampled")
    p.add_argument("--malformed", type=float, default=0.005, help="share of traffic")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--consumer-opt", type=_option, action="append", default=[], metavar="KEY=VALUE",
                   help="extra librdkafka consumer setting for both modes (kafka.consumer)")
    p.add_argument("--producer-opt", type=_option, action="append", default=[], metavar="KEY=VALUE",
                   help="extra librdkafka producer setting for both modes (kafka.producer)")
    p.add_argument("--bootstrap", help="use this broker instead of starting one")
    p.add_argument("--only", choices=MODES, help="run one mode only")
    p.add_argument("--modes", type=_modes, default=list(DEFAULT_MODES),
                   help=f"comma-separated, of {', '.join(MODES)} (default: all but gate-no-stats)")
    p.add_argument("--kcat", default="kcat", help="the kcat binary (Debian: apt-get install kcat)")
    p.add_argument("--kcat-opt", type=_option, action="append", default=[], metavar="KEY=VALUE",
                   help="extra librdkafka setting for the kcat consumer")
    p.add_argument("--no-latency", action="store_true", help="skip the latency phase")
    p.add_argument("--latency-rate", type=float, default=0.0,
                   help="offered events/s in the latency phase (default: half the gate's median)")
    p.add_argument("--latency-seconds", type=float, default=20.0)
    p.add_argument("--latency-warmup", type=float, default=3.0, help="seconds of input skipped")
    p.add_argument("--latency-modes", type=_modes, default=list(LATENCY_MODES))
    p.add_argument("--no-latency-own", dest="latency_own", action="store_false",
                   help="do not also measure a mode whose half maximum is below the common rate "
                        "at its own half maximum")
    p.add_argument("--latency-pool", type=int, default=50_000,
                   help="distinct generated events the offering producer cycles through")
    p.add_argument("--warmup", type=int, default=1, help="untimed passthrough runs first")
    p.add_argument("--pause", type=float, default=2.0, help="seconds of rest between runs")
    p.add_argument("--run-timeout", type=float, default=900.0, help="seconds per run")
    p.add_argument("--no-append", action="store_true", help="do not write bench/RESULTS.md")
    return p.parse_args()


def latency_rate(args: argparse.Namespace, runs: list[Run]) -> tuple[float, str]:
    """The fixed offered load: --latency-rate, else half the gate's median events/s."""
    if args.latency_rate:
        return args.latency_rate, f"{args.latency_rate:,.0f} events/s, set by --latency-rate"
    gate = median_run("etl-gate", runs)
    if gate is None:
        return 0.0, "no etl-gate run to take half of: give --latency-rate"
    rate = round(gate.eps / 2, -3)
    return rate, (f"{rate:,.0f} events/s = half the etl-gate's median {gate.eps:,.0f} events/s, "
                  "the same rate for every mode")


RUNNERS: dict[str, Callable[[Setup, int, list[Any]], Run]] = {
    "passthrough": run_passthrough,
    "etl-gate": lambda setup, k, live: run_gate(setup, k, live, stats=True),
    "gate-no-stats": lambda setup, k, live: run_gate(setup, k, live, stats=False),
    "quix": run_quix,
    "kcat": run_kcat,
}


def check_tools(args: argparse.Namespace, modes: list[str]) -> None:
    import shutil

    if "kcat" in modes and shutil.which(args.kcat) is None:
        raise SystemExit(f"{args.kcat} not found: `apt-get install -y kcat` "
                         "(or scripts/kcat.sh install), or leave kcat out of --modes")
    if "quix" in modes or (not args.no_latency and "quix" in args.latency_modes):
        from importlib.util import find_spec

        if find_spec("quixstreams") is None:  # not imported here: it takes a second or two
            raise SystemExit("quixstreams is not installed: pip install -e '.[bench]', or leave "
                             "quix out of --modes and --latency-modes")


def main() -> int:
    args = parse_args()
    modes = [args.only] if args.only else args.modes
    check_tools(args, modes)
    started = time.perf_counter()
    workdir = ROOT / "bench" / "out" / time.strftime("throughput-%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    broker = _common.Broker(args.bootstrap)
    live: list[Any] = []  # child processes to stop if we are interrupted
    setup: Setup | None = None
    runs: list[Run] = []
    lats: list[latency.Latency] = []
    try:
        broker.start()
        print(f"broker {broker.bootstrap}" + (f" (pid {broker.pid})" if broker.pid else ""),
              flush=True)
        code, fingerprint = _common.code_state(), _common.code_fingerprint()
        setup = preload(args, broker, workdir)
        setup.code, setup.fingerprint = code, fingerprint
        for k in range(args.warmup):  # the broker's JIT and page cache, the OS's file cache
            time.sleep(args.pause)
            run = run_passthrough(setup, -1 - k, live)
            print(f"warm-up passthrough {_f(run.elapsed_s, '.2f')} s (not reported)", flush=True)
        for k in range(args.repeat):
            for mode in modes:
                time.sleep(args.pause)
                run = RUNNERS[mode](setup, k, live)
                runs.append(run)
                print(f"run {k + 1} {mode:<13} {_f(run.elapsed_s, '.2f')} s  "
                      f"{_f(run.eps, ',.0f')} events/s  " + "; ".join(run.notes), flush=True)
        rate, rate_note = latency_rate(args, runs)
        if not args.no_latency and rate > 0:
            print(f"latency phase: {rate_note}", flush=True)
            plan = [(m, rate) for m in args.latency_modes if m in LATENCY_MODES]
            # A mode whose own maximum is below the common rate only queues at it:
            # also measure it at half its own maximum.
            for m in list(plan) if args.latency_own else []:
                own = median_run(m[0], runs)
                if own is not None and own.eps / 2 < 0.9 * rate:
                    plan.append((m[0], round(own.eps / 2, -3)))
            for mode, r in plan:
                time.sleep(args.pause)
                try:
                    lat = run_latency(setup, mode, r, live)
                except (RuntimeError, KafkaException) as e:  # keep the throughput figures
                    lat = latency.Latency(mode, r, notes=[f"failed: {e}"])
                own = median_run(mode, runs)
                if own is not None and own.eps < r:
                    lat.notes.insert(0, f"offered {r:,.0f} ev/s is above this mode's median "
                                        f"{own.eps:,.0f} ev/s: its latency is queueing")
                lats.append(lat)
                print(f"latency {mode:<11} @ {r:,.0f}/s {lat.samples:,} samples  "
                      f"p50 {_f(lat.p50, '.0f')} ms  p99 {_f(lat.p99, '.0f')} ms  "
                      f"p99.9 {_f(lat.p999, '.0f')} ms  (achieved {_f(lat.achieved, ',.0f')} ev/s)"
                      "  " + "; ".join(lat.notes), flush=True)
        elif not args.no_latency:
            print(f"latency phase skipped: {rate_note}", flush=True)
        report(setup, runs, started, lats, rate_note)
    finally:
        for proc in live:  # interrupted: the gate drains on SIGTERM, then we insist
            proc.terminate()
        for proc in live:
            (proc.wait if isinstance(proc, subprocess.Popen) else proc.join)(60)
            proc.kill()
        if setup is not None and not broker.own:
            delete_topics(broker.bootstrap, setup.topics)
        broker.wipe()
    return 0 if runs and all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
