"""End-to-end Kafka throughput: the gate next to a lean passthrough, on one broker.

One command: starts its own broker (scripts/kafka.sh, free ports, temp data
dir; or ``--bootstrap``), pre-loads one input topic with N generated events
and the matching rules (untimed), then runs, interleaved and R times each:

- passthrough: W spawned worker processes, each a confluent-kafka consumer
  (the gate's consumer and producer settings, batch ``consume``, manual
  commits) producing every message unchanged (key, timestamp) to one output
  topic, with no per-message Python callback: it flushes, then commits, every
  commit interval and whenever the input runs dry. The ceiling for a Python
  process on this broker.
- etl-gate: ``etl-gate run --config X --max-events N`` with W workers.

Every run has a fresh consumer group and fresh output topics, so every run
processes all N events. A run's time goes from process start until the
group's committed offsets reach the input's end offsets (polled every 0.2 s),
i.e. everything consumed, every output acknowledged and its input committed.
Also measured: time to the first commit, CPU seconds of the process tree
(``RUSAGE_CHILDREN`` after it exited), peak RSS of the workers (VmHWM), the
broker's CPU, and the machine's busy and steal shares over the run.

Prints a table and appends a section to bench/RESULTS.md (``--no-append`` to
skip). See bench/README.md.

    python bench/throughput.py [--events 1000000] [--repeat 3] [--bootstrap HOST:PORT]
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
import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from etl_gate.config import GateConfig, load_config
from etl_gate.core import MALFORMED, OUTCOMES, build_decider, parse_snapshot
from etl_gate.gen import Generator, GenSpec
from etl_gate.kafka.clients import consumer_config, producer_config
from etl_gate.kafka.loader import produce_events
from etl_gate.kafka.topics import create_topics

ROOT = _common.ROOT
POLL_S = 0.2  # committed-offset polling period (the time resolution of a run)
# "gate-no-stats": the gate with per-event statistics off (observe.stats_enabled =
# false), to measure what observability costs (issue 4: at most 10%).
MODES = ("passthrough", "etl-gate", "gate-no-stats")


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
                     stats: bool = True) -> GateConfig:
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
input_topic = "{self.input_topic}"
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
            if v.priority >= 0 or v.outcome == MALFORMED:
                setup.expected_outputs += 1
            nbytes += len(payload)
            yield payload, key, ts

    t0 = time.perf_counter()
    n = produce_events(cfg, setup.input_topic, events())
    setup.ends = end_offsets(broker.bootstrap, setup.input_topic)
    setup.avg_size = nbytes / max(1, n)
    if setup.n != n:
        raise RuntimeError(f"input topic holds {setup.n} events, produced {n}")
    print(f"pre-loaded {n:,} events ({setup.avg_size:.0f} bytes) into {setup.input_topic} "
          f"({args.partitions} partitions) in {time.perf_counter() - t0:.1f}s", flush=True)
    return setup


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

    def __init__(self, setup: Setup, group: str, outputs: list[str], run: Run) -> None:
        self.setup = setup
        self.run = run
        self.probe = Consumer({"bootstrap.servers": setup.bootstrap, "group.id": group,
                               "enable.auto.commit": False, "log_level": 3})
        self.parts = [TopicPartition(setup.input_topic, p) for p in sorted(setup.ends)]
        self.out_parts = [TopicPartition(t, p) for t in outputs for p in range(setup.args.partitions)]
        self.rss: dict[int, tuple[str, float]] = {}  # pid -> (role, peak MiB)

    def committed(self) -> tuple[int, bool]:
        """(events committed, all partitions at their end offset)."""
        done, complete = 0, True
        for tp in self.probe.committed(self.parts, timeout=10):
            end = self.setup.ends[tp.partition]
            off = min(max(tp.offset, 0), end)
            done += off
            complete = complete and off >= end
        return done, complete

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


def run_passthrough(setup: Setup, k: int, live: list[Any]) -> Run:
    args = setup.args
    run = Run("passthrough", k, setup.n)
    group, out = f"{setup.prefix}-pt{k}", f"{setup.prefix}.pt{k}"
    cfg = setup.write_config(f"pt{k}", group, f"{setup.prefix}.unused")
    create_topic(setup.bootstrap, out, args.partitions)
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    counters = [ctx.Array("q", 2, lock=False) for _ in range(args.workers)]
    procs = [ctx.Process(target=passthrough_main, name=f"passthrough-w{i}",
                         args=(cfg, i, out, stop, counters[i])) for i in range(args.workers)]
    meter = Meter(setup, group, [out], run)
    meter.start()
    for p in procs:
        p.start()
        live.append(p)
    meter.wait_committed(alive=lambda: all(p.is_alive() for p in procs),
                         pids=lambda: [(p.pid, "worker") for p in procs if p.pid],
                         timeout_s=args.run_timeout)
    stop.set()
    for p in procs:
        p.join(120)
        if p.exitcode is None:
            run.notes.append(f"{p.name} did not stop; killed")
            p.kill()
            p.join()
        elif p.exitcode:
            run.notes.append(f"{p.name} exited with {p.exitcode}")
        live.remove(p)
    meter.finish()
    consumed, errors = (sum(c[i] for c in counters) for i in (0, 1))
    run.outputs = sum(end_offsets(setup.bootstrap, out).values())
    if consumed != run.n or run.outputs != run.n or errors:
        run.notes.append(f"consumed {consumed:,}, wrote {run.outputs:,}, delivery errors {errors}")
    delete_topics(setup.bootstrap, [out])
    return run


def gate_command() -> list[str]:
    script = Path(sys.executable).with_name("etl-gate")
    return [str(script)] if script.exists() else [sys.executable, "-m", "etl_gate"]


_LOG_PROBLEM = re.compile(r" (WARNING|ERROR|CRITICAL) |Traceback|^%\d\|")


def run_gate(setup: Setup, k: int, live: list[Any], stats: bool = True) -> Run:
    args = setup.args
    mode = "etl-gate" if stats else "gate-no-stats"
    run = Run(mode, k, setup.n)
    name = f"gate{k}" if stats else f"gatens{k}"
    group, out = f"{setup.prefix}-{name}", f"{setup.prefix}.{name}"
    cfg = setup.write_config(name, group, out, stats=stats)
    create_topics(cfg)  # the input exists; creates the priority and DLQ topics
    gc.collect()  # create_topics leaves its AdminClient in a reference cycle when a topic exists
    t = cfg.topics
    outputs = [*t.priority_topics, t.dlq]
    cmd = [*gate_command(), "run", "--config", str(setup.workdir / f"{name}.toml"),
           "--max-events", str(setup.n)]
    log_path, out_path = setup.workdir / f"{name}.log", setup.workdir / f"{name}.out"
    meter = Meter(setup, group, outputs, run)
    with open(log_path, "wb") as log, open(out_path, "wb") as stdout:
        meter.start()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=log, cwd=ROOT)
        live.append(proc)

        def pids() -> list[tuple[int, str]]:
            kids = [(pid, "worker") for pid in _common.descendants(proc.pid)
                    if "spawn_main" in _common.proc_cmdline(pid)]
            return [(proc.pid, "supervisor"), *kids]

        meter.wait_committed(alive=lambda: proc.poll() is None, pids=pids,
                             timeout_s=args.run_timeout)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            run.notes.append("gate did not exit 120 s after the last commit; stopped")
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        live.remove(proc)
    meter.finish()
    if proc.returncode:
        run.notes.append(f"gate exited with {proc.returncode}")
    run.outputs = sum(sum(end_offsets(setup.bootstrap, name).values()) for name in outputs)
    try:
        totals = orjson.loads(out_path.read_bytes())
    except orjson.JSONDecodeError:
        totals = {}
        run.notes.append("no totals printed")
    if totals and (totals.get("events_in") != run.n
                   or totals.get("routed", 0) + totals.get("dlq", 0) != setup.expected_outputs):
        run.notes.append(f"totals {totals}; expected {setup.expected_outputs:,} outputs")
    if run.outputs != setup.expected_outputs:
        run.notes.append(f"{run.outputs:,} messages in the output topics, expected "
                         f"{setup.expected_outputs:,}")
    problems = [line for line in log_path.read_text(errors="replace").splitlines()
                if _LOG_PROBLEM.search(line)]
    if problems:
        run.notes.append(f"{len(problems)} warning/error log lines in {log_path.name}, first: "
                         f"{problems[0].strip()[:300]}")
    delete_topics(setup.bootstrap, outputs)
    return run


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


def report(setup: Setup, runs: list[Run], started: float) -> None:
    rows = [row(str(r.index + 1), r) for r in runs]
    meds = {mode: median_run(mode, runs) for mode in MODES}
    rows += [row("median", m) for m in meds.values() if m is not None]
    pt, gate = meds["passthrough"], meds["etl-gate"]
    summary: list[str] = []
    if pt and gate:
        pairs = [g.eps / p.eps for p, g in zip([r for r in runs if r.mode == "passthrough"],
                                                [r for r in runs if r.mode == "etl-gate"],
                                                strict=False) if p.ok and g.ok]
        summary.append(
            f"gate/passthrough: events/s {gate.eps / pt.eps:.2f} (ratio of medians; per pair "
            f"{', '.join(f'{x:.2f}' for x in pairs)}), CPU per event {gate.cpu_s / pt.cpu_s:.2f}x")
    nostats = meds.get("gate-no-stats")
    if gate and nostats:
        summary.append(
            f"observability cost: gate with stats / without: events/s {gate.eps / nostats.eps:.2f}, "
            f"CPU per event {gate.cpu_s / nostats.cpu_s:.2f}x (issue 4 target: events/s >= 0.90)")
    sup = gate.supervisor_rss_mib if gate else math.nan
    mix = ", ".join(f"{k} {v / setup.n:.1%}" for k, v in setup.mix.most_common())
    notes = [f"run {r.index + 1} {r.mode}: {note}" for r in runs for note in r.notes]
    if _common.code_fingerprint() != setup.fingerprint:
        notes.insert(0, "etl_gate's source files changed while this ran: later runs may have run "
                        "other code than earlier ones")

    print()
    print(_common.text_table(HEADER, rows))
    for line in summary + notes:
        print(line)
    print(f"logs and configs: {setup.workdir}")
    if setup.args.no_append:
        return
    a, cfg = setup.args, setup.cfg
    k = cfg.kafka
    broker = (f"Apache Kafka {_common.kafka_version()} (scripts/kafka.sh, KRaft, one node, "
              f"same machine, 512 MiB heap)" if setup.broker.own else f"given: {a.bootstrap}")
    lines = _common.section_header("Kafka throughput, etl-gate vs passthrough "
                                   "(bench/throughput.py)") + [
        *_common.machine_lines(),
        f"- code: {setup.code}",
        f"- broker: {broker}",
        f"- input: {setup.n:,} events of {setup.avg_size:.0f} bytes on average (`etl_gate.gen`: "
        f"unregistered {a.unregistered:.0%} of traffic, sampled {a.sampled:.0%} of rules, "
        f"malformed {a.malformed:.1%}; seed {a.seed}), {a.partitions} partitions, lz4; "
        f"decision mix: {mix}; the gate writes {setup.expected_outputs:,} of them "
        "(priority topics + DLQ)",
        f"- {a.workers} worker processes in both modes; gate config: config/gate.toml defaults "
        f"(batch {k.batch_size}, commit every {k.commit_interval_ms} ms, linger {k.linger_ms} ms, "
        f"{k.compression}, idempotent, tag headers {'on' if cfg.tag.headers else 'off'}, "
        "control plane on)"
        + "".join(f"; {role} `{key}={v}` (both modes)" for role, opts in
                  (("consumer", a.consumer_opt), ("producer", a.producer_opt)) for key, v in opts)
        + "; passthrough: same client settings, flush + commit every commit interval and when "
        f"idle; {a.warmup} untimed passthrough warm-up run(s), then {a.repeat} interleaved "
        f"repeats; wall time {time.perf_counter() - started:.0f}s in all",
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
        *([""] + [f"- {n}" for n in notes] if notes else []),
    ]
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


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=1_000_000)
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
    p.add_argument("--warmup", type=int, default=1, help="untimed passthrough runs first")
    p.add_argument("--pause", type=float, default=2.0, help="seconds of rest between runs")
    p.add_argument("--run-timeout", type=float, default=900.0, help="seconds per run")
    p.add_argument("--no-append", action="store_true", help="do not write bench/RESULTS.md")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    started = time.perf_counter()
    workdir = ROOT / "bench" / "out" / time.strftime("throughput-%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    broker = _common.Broker(args.bootstrap)
    live: list[Any] = []  # child processes to stop if we are interrupted
    setup: Setup | None = None
    runs: list[Run] = []
    try:
        broker.start()
        print(f"broker {broker.bootstrap}" + (f" (pid {broker.pid})" if broker.pid else ""),
              flush=True)
        code, fingerprint = _common.code_state(), _common.code_fingerprint()
        setup = preload(args, broker, workdir)
        setup.code, setup.fingerprint = code, fingerprint
        modes = [args.only] if args.only else list(MODES)
        for k in range(args.warmup):  # the broker's JIT and page cache, the OS's file cache
            time.sleep(args.pause)
            run = run_passthrough(setup, -1 - k, live)
            print(f"warm-up passthrough {_f(run.elapsed_s, '.2f')} s (not reported)", flush=True)
        for k in range(args.repeat):
            for mode in modes:
                time.sleep(args.pause)
                if mode == "passthrough":
                    run = run_passthrough(setup, k, live)
                else:
                    run = run_gate(setup, k, live, stats=mode == "etl-gate")
                runs.append(run)
                print(f"run {k + 1} {mode:<11} {_f(run.elapsed_s, '.2f')} s  "
                      f"{_f(run.eps, ',.0f')} events/s  " + "; ".join(run.notes), flush=True)
        report(setup, runs, started)
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
