"""Dump throughput per process: ``etl-gate dump`` on a pre-loaded priority topic.

One command: starts its own broker (scripts/kafka.sh, free ports, temp data
dir, wiped at the end; or ``--bootstrap``), pre-loads one priority topic with
N events as the gate routes them (untimed), then runs ``etl-gate dump
--priority P0 --max-events N`` R times, each with a fresh consumer group and
an empty dump root. A run's time goes from process start until the group's
committed offsets reach the topic's end (polled every 0.2 s): every event
consumed, written to Parquet, fsynced, renamed and its offset committed.

Input: ``etl_gate.gen`` events (about 350 bytes; seed 1; no malformed ones,
which the gate sends to the DLQ), each decided by the decision core with the
generator's rules; every event the gate would route (any priority) goes to
the topic with the gate's headers, so the dump sees the gate's payloads,
keys, timestamps and headers. The same decisions give the gate's P0 share,
which sets the dump rate that keeps up with the gate's throughput in
bench/RESULTS.md.

    python bench/dump_bench.py [--events 600000] [--repeat 3] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import _common
import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from etl_gate.config import load_config
from etl_gate.core import PRIORITIES, build_decider, parse_snapshot
from etl_gate.gen import Generator, GenSpec

ROOT = _common.ROOT
POLL_S = 0.2


@dataclass
class Input:
    topic: str
    events: int  # routed events in the topic
    raw_bytes: int
    generated: int  # events generated to get them
    by_priority: Counter[str]  # routed events per priority, as the gate decides them


def preload(args: argparse.Namespace, bootstrap: str, topic: str) -> Input:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    for fut in admin.create_topics([NewTopic(topic, args.partitions, 1,
                                             config={"retention.ms": "-1"})]).values():
        fut.result(30)
    # Enough generated events that `events` of them are routed; event times
    # (and Kafka timestamps, which the gate keeps) end now.
    count = int(args.events / 0.8) + 1000
    gen = Generator(GenSpec(count=count, malformed_share=0.0, size=args.size, seed=args.seed))
    # The gate's default decision settings (config/gate.toml).
    decider = build_decider(parse_snapshot(gen.rules()), load_config(None).decision_settings())
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "linger.ms": 5, "compression.type": "lz4", "batch.size": 1_000_000,
                         "log_level": 3})
    errors: list[str] = []

    def failed(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    by_prio: Counter[str] = Counter()
    n = nbytes = generated = 0
    for payload, key, ts in gen.events():
        generated += 1
        v = decider.decide(payload, ts)
        if v.priority < 0:
            continue
        by_prio[PRIORITIES[v.priority]] += 1
        if n == args.events:
            continue  # keep counting the mix over the whole generated input
        while True:
            try:
                producer.produce(topic, payload, key, n % args.partitions, timestamp=ts,
                                 headers=v.headers, on_delivery=failed)
                break
            except BufferError:
                producer.poll(0.05)
        n += 1
        nbytes += len(payload)
    if producer.flush(120) or errors:
        raise RuntimeError(f"pre-load failed: {errors[:3]}")
    return Input(topic, n, nbytes, generated, by_prio)


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 3})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        try:
            return sum(max(tp.offset, 0) for tp in c.committed(tps, timeout=10))
        except KafkaException:
            return 0  # the group's coordinator may still be loading
    finally:
        c.close()


@dataclass
class Run:
    elapsed: float
    first_commit: float
    first_committed: int  # events committed by the first commit seen
    exit_s: float
    cpu_s: float
    parquet_bytes: int
    files: int
    peak_rss_mib: float
    rows_read: int
    totals: dict[str, int]


def run_once(args: argparse.Namespace, bootstrap: str, inp: Input, workdir: Path, i: int) -> Run:
    group = f"dumpbench-{uuid.uuid4().hex[:8]}"
    root = workdir / f"dump-{i}"
    config = workdir / f"dump-{i}.toml"
    config.write_text(f"""\
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{group}-gate"
[topics]
p0 = "{inp.topic}"
[dump]
root = "{root}"
group_id = "{group}"
roll_mb = {args.roll_mb}
janitor_interval_s = 0
""")
    cmd = [sys.executable, "-m", "etl_gate", "dump", "--config", str(config), "--priority", "P0",
           "--max-events", str(inp.events)]
    log = open(workdir / f"dump-{i}.log", "wb")  # noqa: SIM115
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, cwd=ROOT)
    first = elapsed = 0.0
    first_done = 0
    peak = 0.0
    try:
        while True:
            time.sleep(POLL_S)
            done = committed(bootstrap, group, inp.topic, args.partitions)
            now = time.monotonic() - t0
            peak = max(peak, _common.proc_peak_rss_mib(proc.pid) or 0.0)
            if done and not first:
                first, first_done = now, done
            if done >= inp.events:
                elapsed = now
                break
            if proc.poll() is not None:
                raise RuntimeError(f"dump exited {proc.returncode} before committing everything "
                                   f"({done}/{inp.events}); see {log.name}")
        out, _ = proc.communicate(timeout=120)
        exit_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    totals = orjson.loads(out)
    files = sorted(root.glob("P0/dt=*/hour=*/*.parquet"))
    rows = _read_back(root)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    run = Run(elapsed, first, first_done, exit_s, cpu, sum(f.stat().st_size for f in files),
              len(files), peak, rows, totals)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return run


def _read_back(root: Path) -> int:
    """Untimed check: the dump holds every event once (unique partition/offset)."""
    import pyarrow.dataset as ds

    t = ds.dataset(root / "P0", format="parquet", partitioning="hive").to_table(
        columns=["kafka_partition", "kafka_offset"])
    pairs = set(zip(t.column("kafka_partition").to_pylist(), t.column("kafka_offset").to_pylist(),
                    strict=True))
    if len(pairs) != t.num_rows:
        raise RuntimeError(f"duplicates in the dump: {t.num_rows - len(pairs)}")
    return t.num_rows


@dataclass
class GateFigure:
    section: str
    eps: float  # median events/s, start-up included
    eps_steady: float  # median events/s after the first commit


def gate_figure(path: Path) -> GateFigure | None:
    """The fastest full-gate median in RESULTS.md (bench/throughput.py sections):
    "full gate speed" is the best the gate has shown on this machine."""
    best: GateFigure | None = None
    section = ""
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:]
        m = re.match(r"^\| median \| etl-gate \| [\d.]+ \| ([\d,]+) \| ([\d,]+) \|", line)
        if m:
            fig = GateFigure(section, float(m[1].replace(",", "")), float(m[2].replace(",", "")))
            if best is None or fig.eps_steady > best.eps_steady:
                best = fig
    return best


def warm_group_coordinator(bootstrap: str, topic: str) -> None:
    """A fresh broker creates __consumer_offsets at the first commit (seconds):
    do it before the timed runs."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"warmup-{uuid.uuid4().hex[:8]}",
                  "log_level": 3})
    try:
        for _ in range(30):
            try:
                c.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
                return
            except KafkaException:
                time.sleep(1.0)
    finally:
        c.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=600_000, help="events in the priority topic")
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--size", type=int, default=350)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--roll-mb", type=float, default=16.0,
                    help="dump.roll_mb (raw MiB per partition per roll)")
    ap.add_argument("--bootstrap", help="use a running broker (the topic is deleted at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir and dumps")
    ap.add_argument("--no-append", action="store_true", help="print only, do not append RESULTS.md")
    args = ap.parse_args()

    machine = _common.machine_lines()
    code = _common.code_state()
    broker = _common.Broker(args.bootstrap)
    workdir = Path(tempfile.mkdtemp(prefix="etl-gate-dumpbench-work-"))
    topic = f"dumpbench-{uuid.uuid4().hex[:8]}.p0"
    runs: list[Run] = []
    started = time.monotonic()
    threads = ""
    try:
        broker.start()
        threads = broker.threads()
        t = time.monotonic()
        inp = preload(args, broker.bootstrap, topic)
        warm_group_coordinator(broker.bootstrap, topic)
        print(f"pre-loaded {inp.events:,} events ({inp.raw_bytes / inp.events:.0f} B avg) into "
              f"{topic} in {time.monotonic() - t:.1f}s", file=sys.stderr)
        for i in range(args.repeat):
            r = run_once(args, broker.bootstrap, inp, workdir, i)
            runs.append(r)
            print(f"run {i + 1}: {inp.events / r.elapsed:,.0f} ev/s, "
                  f"{r.parquet_bytes / r.elapsed / 1e6:.2f} MB/s Parquet", file=sys.stderr)
    finally:
        if args.bootstrap:
            admin = AdminClient({"bootstrap.servers": broker.bootstrap, "log_level": 3})
            for fut in admin.delete_topics([topic], operation_timeout=30).values():
                try:
                    fut.result(60)
                except KafkaException as e:
                    print(f"warning: deleting {topic}: {e}", file=sys.stderr)
        broker.wipe()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report(args, inp, runs, machine, code, time.monotonic() - started, threads)
    return 0


def report(args: argparse.Namespace, inp: Input, runs: list[Run], machine: list[str], code: str,
           wall: float, threads: str) -> None:
    n = inp.events
    rows = []
    for i, r in enumerate(runs, 1):
        after = (n - r.first_committed) / max(r.elapsed - r.first_commit, 1e-9)
        rows.append([str(i), f"{r.elapsed:.2f}", f"{n / r.elapsed:,.0f}", f"{after:,.0f}",
                     f"{inp.raw_bytes / r.elapsed / 1e6:.1f}", f"{r.parquet_bytes / r.elapsed / 1e6:.2f}",
                     f"{r.parquet_bytes / 1e6:.1f}", f"{inp.raw_bytes / max(r.parquet_bytes, 1):.1f}x",
                     str(r.files), f"{r.first_commit:.2f}", f"{r.exit_s:.2f}",
                     f"{r.cpu_s / n * 1e6:.2f}", f"{r.peak_rss_mib:.0f}"])
    med_eps = statistics.median(n / r.elapsed for r in runs)
    med_mbs = statistics.median(r.parquet_bytes / r.elapsed / 1e6 for r in runs)
    med_raw = statistics.median(inp.raw_bytes / r.elapsed / 1e6 for r in runs)
    header = ["run", "elapsed s", "events/s", "ev/s after 1st commit", "raw MB/s", "Parquet MB/s",
              "Parquet MB", "raw/Parquet", "files", "1st commit s", "exit s", "CPU s/1M ev",
              "peak RSS MiB"]
    routed = sum(inp.by_priority.values())
    p0_in = inp.by_priority["P0"] / inp.generated
    p0_routed = inp.by_priority["P0"] / routed
    gate = gate_figure(_common.RESULTS)
    lines = _common.section_header("dump throughput per process (bench/dump_bench.py)")
    lines += machine + [
        f"- code: {code}",
        f"- broker: Apache Kafka {_common.kafka_version()} (scripts/kafka.sh, KRaft, one node, "
        f"same machine, {threads})" if not args.bootstrap else f"- broker: {args.bootstrap}",
        f"- input: {n:,} events of {inp.raw_bytes / n:.0f} bytes on average in one priority topic "
        f"({args.partitions} partitions, lz4): the events the gate routes out of {inp.generated:,} "
        f"generated by `etl_gate.gen` (seed {args.seed}, no malformed), with the gate's headers "
        f"(priority, rules-version, sample-rate) and key; Kafka timestamp = event time, the last "
        f"~{inp.generated / 60000:.0f} minutes",
        f"- dump: one `etl-gate dump --priority P0 --max-events {n}` process; config defaults "
        f"(zstd, row groups of 32 MiB Arrow memory, kafka.batch_size 5000) except "
        f"roll_mb = {args.roll_mb:g}; each run a fresh group and an empty root on the local disk",
        "- elapsed: process start until the group's committed offsets reach the topic's end "
        "(polled every 0.2 s): consumed, written, fsynced, renamed, committed; process start-up "
        "and group join included. `ev/s after 1st commit` leaves start-up and join out. CPU: "
        "user+sys of the dump process (RUSAGE_CHILDREN). Read back untimed with pyarrow.dataset: "
        f"{', '.join(f'{r.rows_read:,}' for r in runs)} rows, no (partition, offset) twice",
        f"- command: `{_common.command_line()}`; wall time {wall:.0f}s in all",
        "",
    ]
    lines += _common.md_table(header, rows)
    lines += ["", f"Median: **{med_eps:,.0f} events/s**, {med_raw:.1f} MB/s of raw events in, "
              f"**{med_mbs:.2f} MB/s of Parquet** out (one process, one core at most)."]
    lines += ["", f"Gate's P0 share with the generator's rules (P0 is given to ~10% of rules, "
              f"picked with weights 1:4:5; traffic is Zipf over event names): "
              f"{p0_in:.1%} of the gate's input events ({p0_routed:.1%} of what it routes; "
              f"P1 {inp.by_priority['P1'] / routed:.1%}, P2 {inp.by_priority['P2'] / routed:.1%})."]
    med_steady = statistics.median((n - r.first_committed) / max(r.elapsed - r.first_commit, 1e-9)
                                   for r in runs)
    if gate is not None:
        need = gate.eps_steady * p0_in
        verdict = "keeps up" if med_eps >= need else "does NOT keep up"
        lines += [f"Full gate speed: the fastest gate median in RESULTS.md (\"{gate.section}\"): "
                  f"{gate.eps:,.0f} events/s in, {gate.eps_steady:,.0f} after its first commit; "
                  f"its P0 output at the latter: **{need:,.0f} events/s**. One dump process "
                  f"**{verdict}** with the gate's P0 share at full gate speed: "
                  f"{med_eps / need:.1f}x with its start-up included, {med_steady / need:.1f}x "
                  f"after its first commit ({med_steady:,.0f} events/s). All three priorities "
                  f"at that speed would be {gate.eps_steady * routed / inp.generated:,.0f} "
                  "events/s, for three processes (one per priority, as deployed). Both figures "
                  "come from this machine, where the broker and the clients share 2 CPUs."]
    text = "\n".join(lines)
    print(text)
    if not args.no_append:
        _common.append_results(lines)


if __name__ == "__main__":
    sys.exit(main())
