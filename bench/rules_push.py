"""Control-plane benchmark (issue 3): 500k-rule snapshot pushes and 1,000-rule
deltas against a live gate, under a steady event stream, in one command.

    python bench/rules_push.py [--rate 20000] [--pushes 3] [--deltas 5] [--unique-names] [--no-results]

Starts its own broker (scripts/kafka.sh, free ports, temp data dir; wiped at
the end), creates the topics with ``etl-gate topics``, runs ``etl-gate run``
(2 workers, control plane on a free loopback port, no rules file) and pushes a
small version 1 with ``etl-gate ctl push``. Then, while a producer process
offers ~350-byte events at a fixed rate (Kafka timestamp = wall clock at send)
and a consumer process reads the three priority topics (latency = receive wall
time - message timestamp, and the rules-version header, per 250 ms window):

- ``--pushes`` 500k-rule snapshots (``--apps`` x ``--events-per-app``; ~10%
  sampled, ~2% offline, priorities mixed; the stream's (app, event) pairs
  included, unchanged, so the stream keeps routing), each timed as the wall
  time of the ``etl-gate ctl push FILE --target ... --json`` subprocess and as
  the gate-reported ``apply_seconds``; the workers' VmRSS before the first push
  and ``--gap`` seconds after each; the data path in the push window vs the
  5 s before it.
- ``--deltas`` 1,000-rule deltas through ``ControlClient.apply_delta_json``
  in-process (call to response), then as many with ``etl-gate ctl delta``
  (subprocess wall time).

Prints a table and appends a dated section to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import array
import math
import multiprocessing as mp
import os
import pickle
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

ROOT = _common.ROOT
WINDOW_S = 0.25
CPUS = len(os.sched_getaffinity(0))
BEFORE_S = 5.0  # the "before" window of a push: this many seconds before it starts
TAIL_S = 1.0  # the push window runs until this long after the push returned
GEN_SEED = 3  # etl_gate.gen seed of the stream: its event names and payloads
PREFIX = "rp"
# Targets of issue 3.
PUSH_TARGET_S = 2.0
DELTA_TARGET_MS = 100.0
RSS_TARGET_MIB = 64.0
RSS_CAP_MIB = 150.0
# Synthetic event names: the same in every app by default ("ev00042"), or
# prefixed with the app (--unique-names): the gate interns names, so whether
# apps share them changes its memory (docs/DECISIONS.md, "Rules at scale").
NAME = "ev{j:05d}"
UNIQUE_NAME = "a{app}_ev{j:05d}"


def etl_gate_command() -> list[str]:
    """The installed console script next to this interpreter (no pyenv shim)."""
    script = Path(sys.executable).with_name("etl-gate")
    return [str(script)] if script.exists() else [sys.executable, "-m", "etl_gate"]


# -- rules -------------------------------------------------------------------------


def app_ids(n: int) -> list[str]:
    return [str(1000 + 128 * i) for i in range(n)]  # the same ids as etl_gate.gen


def stream_rules(apps: list[str], names: list[str]) -> list[dict[str, Any]]:
    """The stream's (app, event) pairs: plain rules (every event routed), fixed
    priorities, the same in every version so the offered rate is the output rate."""
    return [{"app": a, "event": e, "priority": ("P0", "P1", "P1", "P2", "P2")[(i + j) % 5]}
            for i, a in enumerate(apps) for j, e in enumerate(names)]


def big_snapshot(version: int, base: list[dict[str, Any]], n_apps: int, per_app: int,
                 seed: int) -> dict[str, Any]:
    """``n_apps`` x ``per_app`` rules: ``base`` (the stream's pairs) plus synthetic
    names, ~10% sampled, ~2% offline, priorities 1:4:5, a few monitor apps."""
    rng = random.Random(seed)
    taken = Counter(r["app"] for r in base)
    rules = list(base)
    prios = rng.choices(("P0", "P1", "P2"), (1, 4, 5), k=n_apps * per_app)
    rates = (0.01, 0.1, 0.25, 0.5)
    k = 0
    for app in app_ids(n_apps):
        for j in range(per_app - taken[app]):
            rule: dict[str, Any] = {"app": app, "event": NAME.format(app=app, j=j), "priority": prios[k]}
            k += 1
            roll = rng.random()
            if roll < 0.02:
                rule["state"] = "offline"
            elif roll < 0.12:
                rule["sample_rate"] = rates[j % 4]
            rules.append(rule)
    monitor = {a: {"mode": "monitor", "default_priority": "P2"} for a in app_ids(n_apps)[-5:]}
    return {"version": version, "apps": monitor, "rules": rules}


def make_delta(base: int, version: int, n: int, n_apps: int, per_app: int,
               seed: int) -> dict[str, Any]:
    """``n`` upserts on synthetic names over all apps: 90% existing names with a
    new priority (some sampled), 10% new names. The stream's rules are untouched."""
    rng = random.Random(seed)
    apps = app_ids(n_apps)
    keys: set[tuple[str, str]] = set()
    while len(keys) < n * 9 // 10:
        app = rng.choice(apps)
        keys.add((app, NAME.format(app=app, j=rng.randrange(per_app - 100))))
    keys |= {(rng.choice(apps), f"nv{version}_{i}") for i in range(n - len(keys))}
    upserts = []
    for app, event in sorted(keys):
        rule: dict[str, Any] = {"app": app, "event": event, "priority": rng.choice(("P0", "P1", "P2"))}
        if rng.random() < 0.1:
            rule["sample_rate"] = 0.5
        upserts.append(rule)
    return {"base_version": base, "version": version, "upserts": upserts}


# -- the event stream: producer and consumer processes ------------------------------


def producer_main(bootstrap: str, topic: str, n_apps: int, rate: float, stop: Any,
                  out_path: str) -> None:
    """Offer ``rate`` events/s on a fixed schedule (a process that falls behind
    catches up), Kafka timestamp = wall clock at send. Writes the per-window
    send counts to ``out_path``."""
    from confluent_kafka import Producer

    from etl_gate.gen import Generator, GenSpec

    gen = Generator(GenSpec(count=20_000, apps=n_apps, events_per_app=50, unregistered_share=0.0,
                            malformed_share=0.0, size=350, seed=GEN_SEED))
    payloads = [(p, k) for p, k, _t in gen.events()]
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "compression.type": "lz4",
                         "queue.buffering.max.messages": 1_000_000, "log_level": 3})
    errors = [0]

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors[0] += 1

    sent: Counter[int] = Counter()
    n = 0
    npay = len(payloads)
    produce = producer.produce
    clock = time.time
    started = time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - started) * rate)
        while n < due:
            payload, key = payloads[n % npay]
            now = clock()
            try:
                produce(topic, payload, key, timestamp=int(now * 1000), on_delivery=on_delivery)
            except BufferError:
                producer.poll(0.01)
                continue
            sent[int(now / WINDOW_S)] += 1
            n += 1
        producer.poll(0)
        time.sleep(0.001)
    left = producer.flush(30)
    Path(out_path).write_bytes(pickle.dumps({"sent": dict(sent), "count": n, "errors": errors[0],
                                             "undelivered": left}))


def consumer_main(bootstrap: str, topics: list[str], partitions: int, stop: Any, ready: Any,
                  out_path: str) -> None:
    """Read every message of ``topics``: per receive window the end-to-end
    latencies (ms) and rules versions; per version the first/last receive time."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{PREFIX}-probe-{os.getpid()}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10, "log_level": 3})
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(partitions)])
    lat: dict[int, array.array[float]] = {}
    versions: dict[int, Counter[bytes]] = {}
    span: dict[bytes, list[float]] = {}
    ready.set()
    consume = consumer.consume
    while not stop.is_set():
        msgs = consume(2000, 0.05)
        if not msgs:
            continue
        now = time.time()
        w = int(now / WINDOW_S)
        lw = lat.get(w)
        if lw is None:
            lw = lat[w] = array.array("f")
            versions[w] = Counter()
        vw = versions[w]
        now_ms = now * 1000.0
        seen: set[bytes] = set()
        for m in msgs:
            if m.error() is not None:
                continue
            lw.append(now_ms - m.timestamp()[1])
            headers: list[tuple[str, bytes]] = m.headers() or []  # type: ignore[assignment]
            for k, v in headers:
                if k == "rules-version":
                    vw[v] += 1
                    seen.add(v)
                    break
        for v in seen:
            s = span.get(v)
            if s is None:
                span[v] = [now, now]
            else:
                s[1] = now
    consumer.close()
    Path(out_path).write_bytes(pickle.dumps({
        "lat": {w: a.tolist() for w, a in lat.items()},
        "versions": {w: {int(k): n for k, n in c.items()} for w, c in versions.items()},
        "span": {int(k): v for k, v in span.items()}}))


# -- /proc -------------------------------------------------------------------------


def proc_status_kib(pid: int, key: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else None


def worker_pids(gate_pid: int) -> list[int]:
    """The gate's worker processes: its children spawned by multiprocessing."""
    return sorted(p for p in _common.children(gate_pid) if "spawn_main" in _common.proc_cmdline(p))


def cpu_seconds(gate_pid: int, workers: list[int]) -> dict[int, float]:
    return {pid: _common.proc_cpu_seconds(pid) or 0.0 for pid in (gate_pid, *workers)}


@dataclass
class MemReading:
    label: str
    rss_mib: dict[int, float]  # worker pid -> VmRSS
    hwm_mib: dict[int, float]  # worker pid -> VmHWM
    supervisor_mib: float


def read_mem(label: str, gate_pid: int, pids: list[int]) -> MemReading:
    def mib(pid: int, key: str) -> float:
        v = proc_status_kib(pid, key)
        return float("nan") if v is None else v / 1024

    return MemReading(label, {p: mib(p, "VmRSS") for p in pids}, {p: mib(p, "VmHWM") for p in pids},
                      mib(gate_pid, "VmRSS"))


# -- measurements ------------------------------------------------------------------


@dataclass
class Push:
    version: int
    t0: float  # wall clock at subprocess start
    t1: float  # at exit
    wall_s: float
    apply_s: float
    received_s: float | None = None  # from the gate log: stream received and converted
    acks: list[Any] = field(default_factory=list)
    # data path, filled by analyse()
    before: dict[str, float] = field(default_factory=dict)
    during: dict[str, float] = field(default_factory=dict)
    switch_first_s: float | None = None  # first message with the new version, after t0
    switch_last_old_s: float | None = None  # last message with an older version, after t0
    cpu_ctl: float = 0.0  # CPU seconds of the ctl subprocess
    cpu_extra: dict[int, float] = field(default_factory=dict)  # pid -> CPU s over its rate before


@dataclass
class Delta:
    how: str  # "client" or "cli"
    version: int
    seconds: float  # call to response (client) or subprocess wall time (cli)
    apply_s: float


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[i]


def window_stats(lat: dict[int, list[float]], sent: dict[int, int], w0: int, w1: int) -> dict[str, float]:
    """Windows w0..w1-1: output rate per window (min, mean), latency p50/p99/max,
    and the producer's send rate (min) over the same windows."""
    counts = [len(lat.get(w, ())) / WINDOW_S for w in range(w0, w1)]
    k = round(1.0 / WINDOW_S)  # windows per second
    per_s = [sum(len(lat.get(x, ())) for x in range(w, w + k)) for w in range(w0, max(w0 + 1, w1 - k + 1))]
    offered = [sent.get(w, 0) / WINDOW_S for w in range(w0, w1)]
    values = sorted(v for w in range(w0, w1) for v in lat.get(w, ()))
    return {"out_min": min(counts, default=float("nan")), "out_min_1s": min(per_s),
            "out_mean": statistics.fmean(counts) if counts else float("nan"),
            "sent_min": min(offered, default=float("nan")),
            "sent_mean": statistics.fmean(offered) if offered else float("nan"),
            "p50": percentile(values, 0.50), "p99": percentile(values, 0.99),
            "max": values[-1] if values else float("nan"), "n": float(len(values))}


def analyse(push: Push, stream: dict[str, Any], sent: dict[int, int]) -> None:
    lat = stream["lat"]
    w_start = int(push.t0 / WINDOW_S)
    push.before = window_stats(lat, sent, int((push.t0 - BEFORE_S) / WINDOW_S), w_start)
    push.during = window_stats(lat, sent, w_start, int((push.t1 + TAIL_S) / WINDOW_S) + 1)
    span = stream["span"].get(push.version)
    if span is not None:
        push.switch_first_s = span[0] - push.t0
    old = [s[1] for v, s in stream["span"].items() if v < push.version and s[1] >= push.t0]
    if old:
        push.switch_last_old_s = max(old) - push.t0


def timeline(push: Push, stream: dict[str, Any], sent: dict[int, int],
             before_s: float = 1.0, after_s: float = 3.0) -> list[str]:
    """Per-window lines around one push: offset, sent/s, out/s, p50, p99, max, versions."""
    out = []
    for w in range(int((push.t0 - before_s) / WINDOW_S), int((push.t1 + after_s) / WINDOW_S) + 1):
        values = sorted(stream["lat"].get(w, ()))
        vers = stream["versions"].get(w, {})
        out.append(f"{w * WINDOW_S - push.t0:+6.2f}s  sent {sent.get(w, 0) / WINDOW_S:>7.0f}/s  "
                   f"out {len(values) / WINDOW_S:>7.0f}/s  p50 {percentile(values, 0.5):>7.1f}  "
                   f"p99 {percentile(values, 0.99):>7.1f}  max {(values[-1] if values else 0):>7.1f} ms  "
                   f"versions {dict(sorted(vers.items()))}")
    return out


# -- the run -------------------------------------------------------------------------


def write_config(workdir: Path, bootstrap: str, control: str, metrics: str, partitions: int) -> Path:
    path = workdir / "gate.toml"
    path.write_text(f"""
workers = 2
log_level = "INFO"
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{PREFIX}-gate"
input_topic = "{PREFIX}.raw"
[topics]
p0 = "{PREFIX}.p0"
p1 = "{PREFIX}.p1"
p2 = "{PREFIX}.p2"
dlq = "{PREFIX}.dlq"
partitions = {partitions}
[control]
enabled = true
listen = "{control}"
state_dir = "state"
[observe]
metrics_listen = "{metrics}"
""")
    return path


def run_cli(*args: str, timeout: float = 120.0) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    r = subprocess.run([*etl_gate_command(), *args], capture_output=True, text=True, timeout=timeout,
                       cwd=ROOT)
    return time.perf_counter() - started, r


def ctl_result(r: subprocess.CompletedProcess[str], what: str) -> dict[str, Any]:
    """The one target's result of ``ctl ... --json``."""
    if r.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")
    (doc,) = orjson.loads(r.stdout)
    if not doc["ok"]:
        raise RuntimeError(f"{what}: {doc['error']}")
    result: dict[str, Any] = doc["result"]
    return result


def wait_for(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except SystemExit:
            raise
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


EXPECTED = "no rules yet: workers wait"  # the gate starts without rules, by design
_RECEIVED = re.compile(r"push: version (\d+), \d+ rules, \d+ apps received from .* in ([\d.]+)s")


_ASSIGNED = re.compile(r"worker (\d+) (assigned|revoked) \[([\d, ]*)\]")


def assignment(log_text: str) -> dict[int, set[int]]:
    """Each worker's partitions now, from the gate log's assigned/revoked lines."""
    owned: dict[int, set[int]] = {}
    for m in _ASSIGNED.finditer(log_text):
        parts = {int(x) for x in m.group(3).split(",") if x.strip()}
        mine = owned.setdefault(int(m.group(1)), set())
        if m.group(2) == "assigned":
            mine |= parts
        else:
            mine -= parts
    return owned


def log_findings(log_text: str) -> tuple[dict[int, float], list[str]]:
    """(version -> seconds the gate took to receive and convert a push,
    warning/error lines)."""
    received = {int(m.group(1)): float(m.group(2)) for m in _RECEIVED.finditer(log_text)}
    bad = [line for line in log_text.splitlines()
           if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback", line) and EXPECTED not in line]
    return received, bad


@dataclass
class Results:
    args: argparse.Namespace
    started: float
    load_at_start: str = ""
    pushes: list[Push] = field(default_factory=list)
    deltas: list[Delta] = field(default_factory=list)
    mem: list[MemReading] = field(default_factory=list)
    baseline: dict[str, float] = field(default_factory=dict)
    produced: int = 0
    producer_errors: int = 0
    consumed: int = 0
    log_problems: list[str] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)
    snapshot_mib: float = 0.0
    gate_pid: int = 0
    broker_threads: str = ""
    bytecode: str = ""
    broker_jit_s: float = math.nan  # the broker's JIT compiler threads during the measurements
    # Whole-machine CPU over the measurements, and the part not used by this
    # benchmark's processes (broker, gate, producer, consumer, ctl, this one).
    measured_s: float = 0.0
    machine_busy_s: float = 0.0
    other_cpu_s: float = 0.0
    steal: float = 0.0
    load_at_end: str = ""


def run(args: argparse.Namespace, workdir: Path) -> Results:
    res = Results(args, time.time(),
                  load_at_start=" ".join(Path("/proc/loadavg").read_text().split()[:3]),
                  bytecode=_common.compile_package())
    ports: set[int] = set()
    broker = _common.Broker()
    ctx = mp.get_context("spawn")
    stop_producer, stop_consumer, ready = ctx.Event(), ctx.Event(), ctx.Event()
    procs: list[Any] = []
    gate: subprocess.Popen[bytes] | None = None
    gate_log = workdir / "gate.log"
    try:
        print("broker: starting ...", flush=True)
        broker.start()
        print(f"broker: {broker.bootstrap}", flush=True)
        res.broker_threads = broker.threads()
        target = f"127.0.0.1:{_common.free_port(ports)}"
        config = write_config(workdir, broker.bootstrap, target, f"127.0.0.1:{_common.free_port(ports)}",
                              args.partitions)
        _, r = run_cli("topics", "--config", str(config))
        if r.returncode != 0:
            raise RuntimeError(f"etl-gate topics failed:\n{r.stdout}\n{r.stderr}")

        # Rules files: the stream's pairs, the 500k snapshots, the CLI deltas (not timed).
        print("rules: generating snapshots ...", flush=True)
        gen_names = _stream_names(args.stream_apps)
        base = stream_rules(app_ids(args.stream_apps), gen_names)
        small = workdir / "rules-v1.json"
        small.write_bytes(orjson.dumps({"version": 1, "rules": base}))
        version = 1
        snapshots = []
        for i in range(args.pushes):
            path = workdir / f"rules-500k-{i}.json"
            path.write_bytes(orjson.dumps(big_snapshot(version + 1 + i, base, args.apps,
                                                       args.events_per_app, seed=100 + i)))
            snapshots.append((version + 1 + i, path))
        res.snapshot_mib = snapshots[0][1].stat().st_size / 2**20 if snapshots else 0.0

        with gate_log.open("wb") as log:
            gate = subprocess.Popen([*etl_gate_command(), "run", "--config", str(config)],
                                    stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        res.gate_pid = gate.pid
        from etl_gate.control.client import ClientOptions, ControlClient

        client = ControlClient(target, ClientOptions(timeout=60.0))
        def gate_up() -> bool:
            assert gate is not None
            if gate.poll() is not None:
                raise SystemExit(f"etl-gate run exited with {gate.returncode}:\n"
                                 + gate_log.read_text(errors="replace")[-3000:])
            return client.status() is not None

        wait_for(gate_up, 60, "the gate's control plane")
        _, r = run_cli("ctl", "push", str(small), "--target", target, "--json")
        ctl_result(r, "push of version 1")
        def settled() -> bool:  # both workers own partitions, together all of them
            owned = assignment(gate_log.read_text(errors="replace")).values()
            return (sum(1 for s in owned if s) == 2
                    and set().union(*owned) == set(range(args.partitions)))

        wait_for(settled, 90, "both workers assigned their partitions")

        cons = ctx.Process(target=consumer_main, name="rp-consumer",
                           args=(broker.bootstrap, [f"{PREFIX}.p0", f"{PREFIX}.p1", f"{PREFIX}.p2"],
                                 args.partitions, stop_consumer, ready, str(workdir / "consumer.pkl")))
        cons.start()
        procs.append(cons)
        if not ready.wait(60):
            raise RuntimeError("consumer did not start")
        prod = ctx.Process(target=producer_main, name="rp-producer",
                           args=(broker.bootstrap, f"{PREFIX}.raw", args.stream_apps, args.rate,
                                 stop_producer, str(workdir / "producer.pkl")))
        prod.start()
        procs.append(prod)
        print(f"stream: {args.rate:.0f} events/s; warming up {args.warmup:.0f}s", flush=True)
        stream_start = time.time() + args.warmup / 2  # steady state from here

        def own_cpu() -> float:
            assert gate is not None
            pids = [broker.pid, gate.pid, *_common.descendants(gate.pid), prod.pid, cons.pid]
            ru = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
            return (sum(_common.proc_cpu_seconds(p) or 0.0 for p in pids if p)
                    + sum(r.ru_utime + r.ru_stime for r in ru))

        machine, own0, measure0 = _common.MachineCpu(), own_cpu(), time.time()
        jit0 = broker.jit_cpu_seconds()
        time.sleep(max(0.0, args.warmup - BEFORE_S))

        pids = worker_pids(gate.pid)
        if len(pids) != 2:
            raise RuntimeError(f"expected 2 worker processes under pid {gate.pid}, found {pids}")
        res.mem.append(read_mem(f"before (version 1, {len(base)} rules)", gate.pid, pids))

        for i, (v, path) in enumerate(snapshots):
            pre_t, pre = time.time(), cpu_seconds(gate.pid, pids)
            time.sleep(BEFORE_S)
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0, at_t0 = time.time(), cpu_seconds(gate.pid, pids)
            wall, r = run_cli("ctl", "push", str(path), "--target", target, "--json")
            t1, at_t1 = time.time(), cpu_seconds(gate.pid, pids)
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            out = ctl_result(r, f"push of version {v}")
            push = Push(v, t0, t1, wall, out["apply_seconds"], acks=out["acks"])
            push.cpu_ctl = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
            # CPU the push cost each process: its CPU during the push minus its rate before.
            for pid in at_t0:
                rate = (at_t0[pid] - pre[pid]) / (t0 - pre_t)
                push.cpu_extra[pid] = at_t1[pid] - at_t0[pid] - rate * (t1 - t0)
            res.pushes.append(push)
            print(f"push {i + 1}: version {v}: ctl wall {wall:.2f}s, apply {out['apply_seconds']:.2f}s",
                  flush=True)
            version = v
            time.sleep(args.gap)
            if worker_pids(gate.pid) != pids:
                raise RuntimeError(f"worker pids changed: {pids} -> {worker_pids(gate.pid)}")
            res.mem.append(read_mem(f"{args.gap:.0f}s after push {i + 1} (version {v})", gate.pid, pids))

        # Deltas: in-process client (warm channel), then the CLI.
        for i in range(args.deltas):
            delta = make_delta(version, version + 1, args.delta_rules, args.apps, args.events_per_app,
                               seed=1000 + i)
            started = time.perf_counter()
            result = client.apply_delta_json(delta)
            seconds = time.perf_counter() - started
            version += 1
            res.deltas.append(Delta("client", version, seconds, result.apply_seconds))
            print(f"delta (client) version {version}: {seconds * 1000:.1f} ms", flush=True)
            time.sleep(args.delta_gap)
        for i in range(args.deltas):
            path = workdir / f"delta-{i}.json"
            path.write_bytes(orjson.dumps(make_delta(version, version + 1, args.delta_rules, args.apps,
                                                     args.events_per_app, seed=2000 + i)))
            wall, r = run_cli("ctl", "delta", str(path), "--target", target, "--json")
            out = ctl_result(r, f"delta to version {version + 1}")
            version += 1
            res.deltas.append(Delta("cli", version, wall, out["apply_seconds"]))
            print(f"delta (cli) version {version}: {wall * 1000:.1f} ms", flush=True)
            time.sleep(args.delta_gap)
        client.close()

        res.machine_busy_s = machine.busy_seconds()
        jit1 = broker.jit_cpu_seconds()
        res.broker_jit_s = (jit1 - jit0) if jit0 is not None and jit1 is not None else math.nan
        res.steal = machine.busy_and_steal()[1]
        res.other_cpu_s = res.machine_busy_s - (own_cpu() - own0)
        res.measured_s = time.time() - measure0
        res.load_at_end = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        stop_producer.set()
        prod.join(60)
        time.sleep(2.0)  # the last events through the gate
        stop_consumer.set()
        cons.join(60)
        produced = pickle.loads((workdir / "producer.pkl").read_bytes())
        stream = pickle.loads((workdir / "consumer.pkl").read_bytes())
        sent: dict[int, int] = produced["sent"]
        res.produced = produced["count"]
        res.producer_errors = produced["errors"] + produced["undelivered"]
        res.consumed = sum(len(v) for v in stream["lat"].values())
        first_push = res.pushes[0].t0 if res.pushes else time.time()
        res.baseline = window_stats(stream["lat"], sent, int(stream_start / WINDOW_S),
                                    int(first_push / WINDOW_S))
        for p in res.pushes:
            analyse(p, stream, sent)
        if res.pushes:
            res.timeline = timeline(res.pushes[0], stream, sent)
    finally:
        stop_producer.set()
        stop_consumer.set()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
        if gate is not None and gate.poll() is None:
            gate.send_signal(signal.SIGTERM)
            try:
                gate.wait(90)
            except subprocess.TimeoutExpired:
                gate.kill()
                gate.wait()
        broker.wipe()
    received, res.log_problems = log_findings(gate_log.read_text(errors="replace")
                                              if gate_log.exists() else "")
    for p in res.pushes:
        p.received_s = received.get(p.version)
    return res


def _stream_names(n_apps: int) -> list[str]:
    from etl_gate.gen import Generator, GenSpec

    gen = Generator(GenSpec(count=0, apps=n_apps, events_per_app=50, seed=GEN_SEED))
    return gen.registered[gen.apps[0]]


# -- report ---------------------------------------------------------------------------


def git_describe() -> str:
    def git(*a: str) -> str:
        r = subprocess.run(["git", *a], capture_output=True, text=True, cwd=ROOT)
        return r.stdout.strip() if r.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "etl_gate")
    return f"commit {head}" + (" + uncommitted changes in etl_gate/" if dirty else "")


def _f(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(res: Results) -> list[str]:
    args = res.args
    from etl_gate.config import parse_config

    k = parse_config({}).kafka  # the gate runs with these defaults
    lines = _common.section_header("control plane: 500k-rule pushes and 1,000-rule deltas "
                                   "(bench/rules_push.py)")
    machine = _common.machine_lines()
    lines += machine
    lines[-len(machine)] = machine[0].rsplit("; load average", 1)[0] + \
        f"; load average at start {res.load_at_start}, at the end {res.load_at_end}"
    lines += [
        f"- command: `{_common.command_line()}`; code: {git_describe()}; {res.bytecode}",
        f"- CPU during the {res.measured_s:.0f} s of measurements: the machine was busy "
        f"{res.machine_busy_s:.0f} CPU-s of {res.measured_s * CPUS:.0f}; processes outside this "
        f"benchmark used {res.other_cpu_s:.1f} CPU-s; steal {res.steal * 100:.1f}%; the broker's JIT "
        f"compiler threads {res.broker_jit_s:.1f} CPU-s (after {args.warmup:.0f} s of stream)",
        f"- broker: Apache Kafka {_common.kafka_version()} (scripts/kafka.sh, one node, "
        f"{res.broker_threads}) on the same machine; gate: `etl-gate run`, 2 workers, "
        f"{args.partitions} partitions, config defaults otherwise (batch {k.batch_size}, "
        f"batch_timeout {k.batch_timeout_ms} ms, linger {k.linger_ms} ms, {k.compression})",
        f"- stream during the whole run: one producer process at {args.rate:.0f} events/s offered "
        f"(~350 B, {args.stream_apps} apps x 50 names, all registered and plain, Kafka timestamp = "
        "send time), one consumer process on the three priority topics; latency = receive wall time "
        f"- message timestamp; {WINDOW_S * 1000:.0f} ms windows. Produced {res.produced:,}, consumed "
        f"{res.consumed:,}, producer errors {res.producer_errors}",
        f"- snapshots: {args.apps} apps x {args.events_per_app:,} names = "
        f"{args.apps * args.events_per_app:,} rules (~10% sampled, ~2% offline, P0:P1:P2 1:4:5, "
        f"5 monitor apps, the stream's pairs included; synthetic names "
        f"{'unique per app (--unique-names)' if NAME == UNIQUE_NAME else 'the same in every app'}), "
        f"{res.snapshot_mib:.0f} MiB of JSON each; "
        f"deltas: {args.delta_rules:,} upserts over all {args.apps} apps (90% re-prioritised, 10% new)",
        "",
    ]

    # 500k pushes
    ph = ["push", "version", "ctl wall s", "gate recv+convert s", "apply_seconds",
          "new version first seen s", "old version last seen s", "CPU s: ctl", "supervisor", "workers"]
    prows = [[str(i + 1), str(p.version), _f(p.wall_s), _f(p.received_s), _f(p.apply_s),
              _f(p.switch_first_s), _f(p.switch_last_old_s), _f(p.cpu_ctl),
              _f(p.cpu_extra.get(res.gate_pid)),
              " + ".join(_f(c) for pid, c in sorted(p.cpu_extra.items()) if pid != res.gate_pid)]
             for i, p in enumerate(res.pushes)]
    walls = [p.wall_s for p in res.pushes]
    applies = [p.apply_s for p in res.pushes]
    recvs = [p.received_s for p in res.pushes if p.received_s is not None]
    if res.pushes:
        prows.append(["median", "", _f(statistics.median(walls)),
                      _f(statistics.median(recvs) if recvs else None), _f(statistics.median(applies)),
                      "", "", "", "", ""])
    lines += ["### a. 500k-rule snapshot push", "",
              "`ctl wall`: the `etl-gate ctl push FILE --target ... --json` subprocess from start to "
              "exit (CLI start-up, reading the file and checking its syntax, upload, the gate's parse, "
              "every worker's apply). `gate recv+convert`: the gate's log line for the document "
              "received, parsed and validated. `apply_seconds`: the push response (persist + "
              "publish + every worker built its tables and acknowledged). Version first/last "
              "seen: receive time of the first output tagged with the new version and of the last "
              "one tagged older, relative to the ctl start. CPU s: what the push cost each "
              "process: the ctl subprocess's user+sys, and for the supervisor and each worker "
              f"its CPU during the push minus its rate over the {BEFORE_S:.0f} s before (the "
              "workers also decide the stream meanwhile).", ""]
    lines += _common.md_table(ph, prows) + [""]

    # deltas
    dh = ["delta", "how", "version", "call to response ms", "apply_seconds ms"]
    drows = [[str(i + 1), d.how, str(d.version), _f(d.seconds * 1000, ".1f"), _f(d.apply_s * 1000, ".1f")]
             for i, d in enumerate(res.deltas)]
    med: dict[str, float] = {}
    for how in ("client", "cli"):
        ds = [d.seconds * 1000 for d in res.deltas if d.how == how]
        if ds:
            med[how] = statistics.median(ds)
            drows.append([f"median {how}", "", "",
                          _f(med[how], ".1f"),
                          _f(statistics.median(d.apply_s * 1000 for d in res.deltas if d.how == how),
                             ".1f")])
    lines += ["### b. 1,000-rule delta", "",
              "`client`: `ControlClient.apply_delta_json(delta)` in this process on a warm channel, "
              "from the call to the response (JSON-to-protobuf conversion included). `cli`: the "
              "`etl-gate ctl delta FILE --json` subprocess wall time (interpreter start-up included).",
              ""]
    lines += _common.md_table(dh, drows) + [""]

    # memory
    pids = sorted(res.mem[0].rss_mib) if res.mem else []
    mh = ["reading", *[f"worker pid {p} RSS MiB" for p in pids], "supervisor RSS MiB"]
    mrows = [[m.label, *[_f(m.rss_mib[p], ".1f") for p in pids], _f(m.supervisor_mib, ".1f")]
             for m in res.mem]
    added_first: list[float] = []
    added_last: list[float] = []
    if len(res.mem) >= 2:
        added_first = [res.mem[1].rss_mib[p] - res.mem[0].rss_mib[p] for p in pids]
        added_last = [res.mem[-1].rss_mib[p] - res.mem[0].rss_mib[p] for p in pids]
        mrows.append(["added after push 1", *[_f(a, "+.1f") for a in added_first],
                      _f(res.mem[1].supervisor_mib - res.mem[0].supervisor_mib, "+.1f")])
        if len(res.mem) > 2:
            mrows.append([f"added after push {len(res.mem) - 1}", *[_f(a, "+.1f") for a in added_last],
                          _f(res.mem[-1].supervisor_mib - res.mem[0].supervisor_mib, "+.1f")])
        mrows.append(["peak (VmHWM) at the end", *[_f(res.mem[-1].hwm_mib[p], ".1f") for p in pids], ""])
    lines += ["### c. Resident memory per worker", "",
              "VmRSS from /proc/PID/status of each worker process (the gate's children whose command "
              "line holds `spawn_main`) and of the supervisor, read while the stream runs: before the "
              f"first 500k push (400 rules in force) and {args.gap:.0f} s after each push. VmHWM is "
              "the peak RSS over the worker's life (it includes the old and the new tables side by "
              "side during a swap).", ""]
    lines += _common.md_table(mh, mrows) + [""]

    # data path
    b = res.baseline
    dph = ["window", "sent/s mean", "sent/s min", "out/s mean", "out/s min", "out/s min over 1 s",
           "p50 ms", "p99 ms", "max ms"]

    def dp(label: str, s: dict[str, float]) -> list[str]:
        return [label, _f(s.get("sent_mean"), ".0f"), _f(s.get("sent_min"), ".0f"),
                _f(s.get("out_mean"), ".0f"), _f(s.get("out_min"), ".0f"), _f(s.get("out_min_1s"), ".0f"),
                _f(s.get("p50"), ".1f"),
                _f(s.get("p99"), ".1f"), _f(s.get("max"), ".1f")]

    dprows = [dp("steady state, warm-up to push 1", b)]
    for i, p in enumerate(res.pushes):
        dprows.append(dp(f"push {i + 1}: {BEFORE_S:.0f} s before", p.before))
        dprows.append(dp(f"push {i + 1}: during (+{TAIL_S:.0f} s)", p.during))
    lines += ["### d. Data path during a 500k push", "",
              f"Per {WINDOW_S * 1000:.0f} ms receive window. `during`: from the ctl start to "
              f"{TAIL_S:.0f} s after it exited; `before`: the {BEFORE_S:.0f} s before the ctl start. "
              "`sent/s`: what the producer process managed to send in the same windows (it shares "
              "the two CPUs, so a dip there is load on the machine, not the gate).", ""]
    lines += _common.md_table(dph, dprows) + [""]
    dips = [p.during["out_min"] / args.rate for p in res.pushes if p.during]
    dips_1s = [p.during["out_min_1s"] / args.rate for p in res.pushes if p.during]
    dips_before = [p.before["out_min"] / args.rate for p in res.pushes if p.before]
    if res.timeline:
        lines += ["Push 1, window by window (offset from the ctl start):", "", "```", *res.timeline,
                  "```", ""]

    # targets
    t = []
    if res.pushes:
        mw, ma = statistics.median(walls), statistics.median(applies)
        mr = statistics.median(recvs) if recvs else float("nan")
        t.append(f"- 500k push applied by all workers < {PUSH_TARGET_S:.0f} s: ctl wall median "
                 f"{mw:.2f} s **{_verdict(mw < PUSH_TARGET_S)}**; gate side (receive+convert + "
                 f"apply_seconds) median {mr + ma:.2f} s **{_verdict(mr + ma < PUSH_TARGET_S)}**")
    if "client" in med:
        t.append(f"- 1,000-rule delta < {DELTA_TARGET_MS:.0f} ms: client median {med['client']:.1f} ms "
                 f"**{_verdict(med['client'] < DELTA_TARGET_MS)}** (max "
                 f"{max(d.seconds for d in res.deltas if d.how == 'client') * 1000:.1f} ms; CLI median "
                 f"{med.get('cli', float('nan')):.1f} ms, interpreter start-up included)")
    if added_first:
        worst = max(max(added_first), max(added_last))
        t.append(f"- added RSS per worker < {RSS_TARGET_MIB:.0f} MiB (cap {RSS_CAP_MIB:.0f}): "
                 f"{', '.join(f'{a:+.1f}' for a in added_first)} MiB after push 1"
                 + (f", {', '.join(f'{a:+.1f}' for a in added_last)} MiB after push {len(res.mem) - 1}"
                    if len(res.mem) > 2 else "") + ": "
                 f"**{_verdict(worst < RSS_TARGET_MIB)}** target, "
                 f"**{_verdict(worst < RSS_CAP_MIB)}** cap")
    if dips and res.pushes:
        t.append(f"- data path: lowest window during a push {min(dips) * 100:.0f}% of the offered "
                 f"{args.rate:.0f}/s (per push: {', '.join(f'{d * 100:.0f}%' for d in dips)}; lowest 1 s: "
                 f"{', '.join(f'{d * 100:.0f}%' for d in dips_1s)}; lowest 250 ms window in the 5 s "
                 f"before: {', '.join(f'{d * 100:.0f}%' for d in dips_before)}"
                 "); latency "
                 f"p99 {statistics.median(p.before['p99'] for p in res.pushes):.0f} ms before vs "
                 f"{statistics.median(p.during['p99'] for p in res.pushes):.0f} ms during (medians), "
                 f"max during {max(p.during['max'] for p in res.pushes):.0f} ms")
    t.append(f"- gate log: {len(res.log_problems)} WARNING/ERROR lines"
             + (": " + "; ".join(f"`{x[:160]}`" for x in res.log_problems[:5]) if res.log_problems else ""))
    lines += ["### Targets", "", *t, ""]
    return lines


def print_summary(res: Results, lines: list[str]) -> None:
    print()
    print("\n".join(lines))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rate", type=float, default=20_000, help="events/s offered throughout")
    p.add_argument("--pushes", type=int, default=3, help="500k snapshot pushes")
    p.add_argument("--deltas", type=int, default=5, help="deltas per way (client, then CLI)")
    p.add_argument("--apps", type=int, default=50)
    p.add_argument("--events-per-app", type=int, default=10_000)
    p.add_argument("--delta-rules", type=int, default=1_000)
    p.add_argument("--stream-apps", type=int, default=8, help="apps the event stream uses")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--warmup", type=float, default=60.0,
                   help="seconds of stream before the first push: a fresh broker's JIT compiles "
                        "its hot paths in its first minute under load (C2 10.7 CPU-s of the first "
                        "67 s), and a push measured meanwhile shares the CPUs with it")
    p.add_argument("--gap", type=float, default=10.0,
                   help="seconds after each push (RSS read at its end; the next push's 'before')")
    p.add_argument("--delta-gap", type=float, default=1.0)
    p.add_argument("--keep", action="store_true", help="keep the work dir (gate log, rules files)")
    p.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    p.add_argument("--unique-names", action="store_true",
                   help="synthetic event names unique per app (default: the same names in every app)")
    args = p.parse_args()
    if args.stream_apps > args.apps:
        p.error("--stream-apps must be <= --apps")
    return args


def main() -> int:
    global NAME
    args = parse_args()
    if args.unique_names:
        NAME = UNIQUE_NAME
    workdir = Path(tempfile.mkdtemp(prefix="etl-gate-rules-push-"))
    try:
        res = run(args, workdir)
        lines = report(res)
        print_summary(res, lines)
        if res.log_problems:
            print("\ngate log problems:\n" + "\n".join(res.log_problems[:20]))
        if not args.no_results:
            _common.append_results(lines)
            print(f"\nappended to {_common.RESULTS}")
    finally:
        if args.keep:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
