"""Each mode of bench/throughput.py: start its processes, measure one run, stop them;
and one latency run at a fixed offered load (see latency.py)."""

from __future__ import annotations

import gc
import multiprocessing as mp
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common
import _native
import latency
import orjson
from _harness import (
    ROOT,
    Meter,
    Run,
    Setup,
    admin,
    create_topic,
    delete_topics,
    end_offsets,
    not_json_at_end,
)
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from etl_gate.config import GateConfig
from etl_gate.kafka.clients import consumer_config, producer_config
from etl_gate.kafka.collector import tune_for_batches
from etl_gate.kafka.topics import create_topics

QUIX_APP = Path(__file__).resolve().parent / "quix_app.py"


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
        tune_for_batches(k.batch_size)  # as the gate's workers do (etl_gate/kafka/collector.py)
        self.consumer.subscribe([k.input_topic], on_revoke=self._on_revoke)
        consume, produce, poll = self.consumer.consume, self.producer.produce, self.producer.poll
        out, offsets, counters = self.out_topic, self.offsets, self.counters
        batch_size, timeout = k.batch_size, k.batch_timeout_ms / 1000
        interval = k.commit_interval_ms / 1000
        last_commit = last_poll = time.monotonic()
        while not stop.is_set():
            # The gate's consume pattern (kafka/worker.py).
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
                        # Positional (topic, value, key, partition, on_delivery,
                        # callback, timestamp): keywords cost 0.35 us a call.
                        produce(out, m.value(), m.key(), part, None, None, ts if ts > 0 else 0)
                        break
                    except BufferError:
                        poll(0.05)
                offsets[part] = m.offset() + 1
                n += 1
            if n:
                counters[0] += n
                self.dirty = True
            now = time.monotonic()
            if now - last_poll >= 0.02:
                poll(0)  # delivery errors only; every loop it is measurable
                last_poll = now
            if self.dirty and (not msgs or now - last_commit >= interval):
                self._commit()
                last_commit = now
        self._commit(asynchronous=False)
        self.consumer.close()


def passthrough_main(cfg: GateConfig, index: int, out_topic: str, stop: Any, counters: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides on Ctrl-C
    Passthrough(cfg, index, out_topic, counters).run(stop)


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
               max_events: int = 0, input_topic: str | None = None, tag_headers: bool = True,
               make_topics: Callable[[list[str]], None] | None = None,
               on_start: Callable[[], None] = lambda: None, engine: str = "native") -> Launch:
    """``max_events``: the gate exits by itself after that many; 0: stop() sends SIGTERM
    (the gate drains and exits)."""
    group, out = f"{setup.prefix}-{name}", f"{setup.prefix}.{name}"
    cfg = setup.write_config(name, group, out, stats=stats, input_topic=input_topic,
                             tag_headers=tag_headers, engine=engine)
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

    return Launch(gate_mode(stats, tag_headers, engine), group, outputs, [proc], pids,
                  stopper, {"log": log_path, "out": out_path})


def gate_mode(stats: bool = True, tag_headers: bool = True, engine: str = "native") -> str:
    """The mode name of a gate variant: etl-gate (the defaults), gate-python
    (kafka.engine = "python": every event in Python), gate-no-stats
    (observe.stats_enabled = false), gate-no-headers (tag.headers = false)."""
    if engine == "python":
        return "gate-python"
    return "etl-gate" if stats and tag_headers else "gate-no-stats" if tag_headers else "gate-no-headers"


def run_gate(setup: Setup, k: int, live: list[Any], stats: bool = True,
             tag_headers: bool = True, engine: str = "native") -> Run:
    mode = gate_mode(stats, tag_headers, engine)
    run = Run(mode, k, setup.n)
    name = {"etl-gate": "gate", "gate-no-stats": "gatens", "gate-no-headers": "gatenh",
            "gate-python": "gatepy"}[mode] + str(k)
    t0_outputs = [f"{setup.prefix}.{name}.{x}" for x in ("p0", "p1", "p2", "dlq")]
    meter = Meter(setup, f"{setup.prefix}-{name}", t0_outputs, run)
    launch = start_gate(setup, name, live, stats=stats, max_events=setup.n, on_start=meter.start,
                        tag_headers=tag_headers, engine=engine)
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
               on_start: Callable[[], None] = lambda: None, engine: str = "native") -> Launch:
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
            "consumer": {**quix_client_settings(consumer_config(cfg, 0), QUIX_CONSUMER_KEYS),
                         **dict(args.consumer_opt)},
            "producer": {**quix_client_settings(producer_config(cfg, 0), QUIX_PRODUCER_KEYS),
                         **dict(args.producer_opt)},
            "state_dir": str(setup.workdir / f"{name}-state")}
    conf_path = setup.workdir / f"{name}.json"
    conf_path.write_bytes(orjson.dumps(conf, option=orjson.OPT_INDENT_2))
    # Quix makes <state_dir>/<group> with mkdir(parents=True) unless it exists:
    # two workers starting together race, and the loser exits (FileExistsError,
    # seen at 2026-12-07 02:47). Made here first, it exists for both.
    (Path(conf["state_dir"]) / group).mkdir(parents=True, exist_ok=True)
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


def native_settings(conf: dict[str, Any], kind: str, librdkafka: str) -> list[str]:
    """A client config of the gate as native_gate's ``-C``/``-P`` arguments: the gate's
    tuning, less what native_gate sets itself (servers, group, offset store). With a
    librdkafka older than 2.2 (Debian's 2.0.2, when confluent-kafka bundles none)
    fetch.queue.backoff.ms does not exist: kcat's queue settings stand in for it,
    as in the kcat mode."""
    legacy = tuple(int(x) for x in re.findall(r"\d+", librdkafka)[:2]) < (2, 2)
    skip = {"bootstrap.servers", "group.id", "enable.auto.offset.store"}
    if legacy:
        skip.add("fetch.queue.backoff.ms")
    args = [f"{k}={str(v).lower() if isinstance(v, bool) else v}"
            for k, v in conf.items() if k not in skip]
    if kind == "-C" and legacy:
        args += KCAT_CONSUMER
    return [a for x in args for a in (kind, x)]


def start_native(setup: Setup, name: str, live: list[Any], input_topic: str | None = None,
                 make_topics: Callable[[list[str]], None] | None = None,
                 on_start: Callable[[], None] = lambda: None, tag_headers: bool = True) -> Launch:
    """W processes of bench/native_gate.c (the gate's data path in C) in one consumer
    group, on the gate's topics, rules and client tuning; stop() sends SIGTERM, on
    which each flushes, commits and prints its counts."""
    args, cfg = setup.args, setup.cfg
    if any("." in key for key in cfg.fields.sample_keys):
        raise SystemExit("native mode: dotted sample keys are not implemented")
    binary = _native.build()
    version = _native.librdkafka_version(binary)
    rules = orjson.loads((setup.workdir / "rules.json").read_bytes())
    tsv = setup.workdir / "rules.tsv"
    tsv.write_text(_native.rules_tsv(rules))
    group, out = f"{setup.prefix}-{name}", f"{setup.prefix}.{name}"
    ncfg = setup.write_config(name, group, out, input_topic=input_topic)
    outputs = [*ncfg.topics.priority_topics, ncfg.topics.dlq]
    if make_topics is not None:
        make_topics(outputs)
    create_topics(ncfg)
    gc.collect()  # as in start_gate: create_topics' AdminClient cycle
    procs, logs, outs = [], [], []
    on_start()
    for i in range(args.workers):
        cmd = [str(binary), "run", str(tsv), str(cfg.sampling_seed),
               ",".join(cfg.fields.sample_keys), setup.bootstrap, group, ncfg.kafka.input_topic,
               ",".join(outputs), str(rules["version"]), str(cfg.kafka.commit_interval_ms),
               "-T", "on" if tag_headers else "off",
               *native_settings(consumer_config(ncfg, i), "-C", version),
               *native_settings(producer_config(ncfg, i), "-P", version)]
        logs.append(setup.workdir / f"{name}-w{i}.log")
        outs.append(setup.workdir / f"{name}-w{i}.out")
        with open(logs[-1], "wb") as log, open(outs[-1], "wb") as stdout:
            procs.append(subprocess.Popen(cmd, stdout=stdout, stderr=log, cwd=ROOT))
        live.append(procs[-1])

    def stopper(launch: Launch, run: Run) -> None:
        for i, p in enumerate(procs):
            _wait_popen(p, f"native worker {i}", run, 120, terminate_first=True)
        for path in logs:
            log_problems(path, re.compile(r"native_gate:|%\d\|"), run)

    mode = "native" if tag_headers else "native-no-headers"
    return Launch(mode, group, outputs, procs, lambda: [(p.pid, "worker") for p in procs],
                  stopper, {"outs": outs})


def run_native(setup: Setup, k: int, live: list[Any], tag_headers: bool = True) -> Run:
    """The native mode's run (native-no-headers: tag.headers = false): its outputs are
    checked per topic against the Python core's decisions, and its printed counts
    against the input."""
    run = Run("native" if tag_headers else "native-no-headers", k, setup.n)
    name = f"native{k}" if tag_headers else f"nativenh{k}"
    t0_outputs = [f"{setup.prefix}.{name}.{x}" for x in ("p0", "p1", "p2", "dlq")]
    meter = Meter(setup, f"{setup.prefix}-{name}", t0_outputs, run)
    launch = start_native(setup, name, live, on_start=meter.start, tag_headers=tag_headers)
    meter.wait_committed(alive=launch.alive, pids=launch.pids, timeout_s=setup.args.run_timeout)
    launch.stop(run, live)
    meter.finish()
    counts = {"consumed": 0, "delivery_errors": 0}
    for path in launch.extra["outs"]:
        try:
            printed = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError:
            run.notes.append(f"no totals printed in {path.name}")
            continue
        for key in counts:
            counts[key] += printed[key]
    by_topic = {key: sum(end_offsets(setup.bootstrap, topic).values())
                for key, topic in zip(("P0", "P1", "P2", "dlq"), launch.outputs, strict=True)}
    run.outputs = sum(by_topic.values())
    want = {key: setup.expected_by[key] for key in by_topic}
    if by_topic != want:
        run.notes.append(f"outputs by topic {by_topic}, the core decides {want}")
    if counts["consumed"] != run.n or counts["delivery_errors"]:
        run.notes.append(f"consumed {counts['consumed']:,}, delivery errors "
                         f"{counts['delivery_errors']}")
    delete_topics(setup.bootstrap, launch.outputs)
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


def run_latency(setup: Setup, mode: str, rate: float, live: list[Any],
                round_: int = 0) -> latency.Latency:
    """One mode consumes a fresh LogAppendTime topic while a producer process offers
    ``rate`` events/s; then every output is matched to its input. Each round has
    its own topics, group and sample file."""
    args = setup.args
    lat = latency.Latency(mode, rate, round=round_)
    run = Run(mode, -1, 0)  # collects the notes of stopping
    name = f"lat{mode.replace('-', '')}r{round_ + 1}"
    in_topic = f"{setup.prefix}.{name}.raw"

    def make(names: list[str]) -> None:
        latency.create_topics(setup.bootstrap, names, args.partitions)

    make([in_topic])
    if mode == "passthrough":
        launch = start_passthrough(setup, name, live, input_topic=in_topic, make_topics=make)
    elif mode in ("etl-gate", "gate-python"):
        launch = start_gate(setup, name, live, input_topic=in_topic, make_topics=make,
                            engine="python" if mode == "gate-python" else "native")
    elif mode == "native":
        launch = start_native(setup, name, live, input_topic=in_topic, make_topics=make)
    else:
        launch = start_quix(setup, name, live, input_topic=in_topic, make_topics=make)
    try:
        wait_group(setup.bootstrap, launch.group, args.workers, args.partitions, launch.alive)
        time.sleep(1.0)  # let the assignment settle (fetchers started)
        ctx = mp.get_context("spawn")
        ready, go = ctx.Event(), ctx.Event()
        result = ctx.Array("d", 5, lock=False)
        spec = _common.gen_spec(args, args.latency_pool, start_ms=0, step_ms=1)
        offer = ctx.Process(target=latency.offer_main, name="latency-offer",
                            args=(producer_config(setup.cfg, "offer"), in_topic, rate,
                                  args.latency_seconds, spec, ready, go, result,
                                  args.offer_nice))
        offer.start()
        live.append(offer)
        if not ready.wait(300):
            raise RuntimeError("latency: the offering process did not get ready")

        def cpu() -> float:
            return sum(_common.proc_cpu_seconds(pid) or 0.0 for pid, _ in launch.pids())

        cpu0, t0, broker0 = cpu(), time.perf_counter(), setup.broker.cpu_seconds()
        machine = _common.MachineCpu()
        go.set()
        offer.join(args.latency_seconds + 300)
        cpu1, window = cpu(), time.perf_counter() - t0
        broker1 = setup.broker.cpu_seconds()
        lat.machine_busy = machine.busy_and_steal()[0]
        lat.offer_cores = result[3] / window
        if broker0 is not None and broker1 is not None:
            lat.broker_cores = (broker1 - broker0) / window
        live.remove(offer)
        if offer.exitcode != 0:
            lat.notes.append(f"offering process exited with {offer.exitcode}")
        lat.sent, lat.offer_s, lat.offer_lag_s = int(result[0]), result[1], result[2]
        lat.offer_nice = result[4]
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
                    csv=setup.workdir / f"latency-{mode}-r{round_ + 1}.csv")
    delete_topics(setup.bootstrap, [in_topic, *launch.outputs])
    return lat


