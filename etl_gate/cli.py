"""``etl-gate`` command line: the composition root. Parses arguments, loads and
validates config and rules, and hands them to the module that owns the job."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from .config import ConfigError, GateConfig, load_config
from .control.ctl import add_ctl_parser
from .core import RulesError
from .logs import setup_logging
from .progress import Progress


def _config(args: argparse.Namespace) -> GateConfig:
    cfg = load_config(getattr(args, "config", None))
    if getattr(args, "bootstrap", None):
        import dataclasses

        cfg = dataclasses.replace(
            cfg, kafka=dataclasses.replace(cfg.kafka, bootstrap_servers=args.bootstrap))
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    from .supervisor import run_gate

    cfg = _config(args)
    setup_logging(cfg.log_level, cfg.log_format)
    if cfg.rules_path() is None and not cfg.control.enabled:
        raise ConfigError("rules_file: required when the control plane is disabled")
    totals = run_gate(cfg, max_events=args.max_events)
    print(orjson.dumps(totals, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from .kafka.topics import create_topics

    cfg = _config(args)
    for name, state in create_topics(cfg).items():
        print(f"{name}: {state}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from .replay import replay
    from .rules_source import load_rules_file

    cfg = _config(args)
    summary = replay(cfg, load_rules_file(args.rules), args.input, args.output_dir)
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_gen(args: argparse.Namespace) -> int:
    from .gen import Generator, GenSpec

    spec = GenSpec(count=args.count, apps=args.apps, events_per_app=args.events_per_app,
                   unregistered_share=args.unregistered, malformed_share=args.malformed,
                   sampled_share=args.sampled, monitor_apps=args.monitor_apps, size=args.size,
                   seed=args.seed, rules_version=args.rules_version, max_rate=args.max_rate,
                   id_prefix=args.id_prefix,
                   **({"start_ms": args.start_ms} if args.start_ms is not None else {}),
                   step_ms=args.step_ms)
    gen = Generator(spec)
    if args.rules_out:
        Path(args.rules_out).write_bytes(orjson.dumps(gen.rules(), option=orjson.OPT_INDENT_2))
    progress = Progress("gen", total=spec.count)
    if args.topic:
        from .kafka.loader import produce_events

        with progress:
            n = produce_events(_config(args), args.topic, progress.track(gen.events()), rate=args.rate)
        print(f"gen: {n} events to topic {args.topic}", file=sys.stderr)
    elif args.output:
        out = sys.stdout.buffer if args.output == "-" else open(args.output, "wb")  # noqa: SIM115
        try:
            for payload, _key, _ts in progress.track(gen.events()):
                out.write(payload)
                out.write(b"\n")
        finally:
            progress.close()
            if out is not sys.stdout.buffer:
                out.close()
    elif not args.rules_out:
        raise ConfigError("gen: give --output FILE, --topic TOPIC or --rules-out FILE")
    return 0


def cmd_dump(args: argparse.Namespace) -> int:
    import signal

    from .dump.consumer import Dumper
    from .dump.fs import StorageError, open_storage
    from .dump.janitor import Janitor
    from .dump.metrics import DumpMetrics

    cfg = _config(args)
    setup_logging(cfg.log_level, cfg.log_format)
    priorities = list(dict.fromkeys(args.priority or cfg.dump.priorities))
    try:
        storage = open_storage(cfg.dump.root, cfg.base_dir)
    except StorageError as e:
        raise ConfigError(str(e)) from None
    dry_run = True if args.dry_run else None
    if args.janitor_once:
        ttl = cfg.ttl_days
        janitor = Janitor(storage, {"P0": ttl.P0, "P1": ttl.P1, "P2": ttl.P2},
                          dry_run=cfg.dump.janitor_dry_run or args.dry_run)
        reports = [janitor.run(p).as_dict() for p in priorities]
        print(orjson.dumps(reports, option=orjson.OPT_INDENT_2).decode())
        return 0
    metrics = DumpMetrics()
    if cfg.dump.metrics_listen:
        try:
            metrics.serve(cfg.dump.metrics_listen)
        except OSError as e:
            raise ConfigError(f"dump.metrics_listen: {cfg.dump.metrics_listen}: {e}") from None
    dumper = Dumper(cfg, priorities, storage, metrics=metrics, janitor_dry_run=dry_run)
    signal.signal(signal.SIGTERM, dumper.stop)
    signal.signal(signal.SIGINT, dumper.stop)
    totals = dumper.run(max_events=args.max_events)
    print(orjson.dumps(totals, option=orjson.OPT_INDENT_2).decode())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="etl-gate", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the gate: supervisor + worker pool on Kafka")
    run.add_argument("--config", required=True)
    run.add_argument("--bootstrap", help="override kafka.bootstrap_servers")
    run.add_argument("--max-events", type=int, default=0,
                     help="stop cleanly once this many events were consumed (demos, benchmarks)")
    run.set_defaults(func=cmd_run)

    topics = sub.add_parser("topics", help="create input, priority, DLQ and quarantine topics")
    topics.add_argument("--config", required=True)
    topics.add_argument("--bootstrap")
    topics.set_defaults(func=cmd_topics)

    rp = sub.add_parser("replay", help="decide a file of newline-delimited events")
    rp.add_argument("--rules", required=True)
    rp.add_argument("--input", required=True, help="events file, '-' for stdin")
    rp.add_argument("--output-dir", required=True)
    rp.add_argument("--config")
    rp.set_defaults(func=cmd_replay)

    g = sub.add_parser("gen", help="generate synthetic events and matching rules")
    g.add_argument("--count", type=int, default=10_000)
    g.add_argument("--apps", type=int, default=4)
    g.add_argument("--events-per-app", type=int, default=50)
    g.add_argument("--unregistered", type=float, default=0.10, help="share of traffic")
    g.add_argument("--malformed", type=float, default=0.005, help="share of traffic")
    g.add_argument("--sampled", type=float, default=0.10, help="share of rules sampled")
    g.add_argument("--monitor-apps", type=int, default=0)
    g.add_argument("--size", type=int, default=350, help="approximate bytes per event")
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--rules-version", type=int, default=1)
    g.add_argument("--max-rate", type=float, default=0.0,
                   help="cap (events/s) on each app's hottest event")
    g.add_argument("--id-prefix", default="e")
    g.add_argument("--start-ms", type=int, default=None, help="event time of the first event")
    g.add_argument("--step-ms", type=int, default=1, help="event time step per event")
    g.add_argument("--rate", type=float, default=0.0, help="events/s to a topic (0: flat out)")
    g.add_argument("--rules-out", help="write the matching rules snapshot here")
    g.add_argument("--output", help="events file ('-' for stdout)")
    g.add_argument("--topic", help="produce to this Kafka topic instead")
    g.add_argument("--config", help="gate config (for kafka.bootstrap_servers)")
    g.add_argument("--bootstrap")
    g.set_defaults(func=cmd_gen)

    d = sub.add_parser("dump", help="dump priority topics to Parquet (Hive partitions, TTL janitor)")
    d.add_argument("--config", required=True)
    d.add_argument("--bootstrap", help="override kafka.bootstrap_servers")
    d.add_argument("--priority", nargs="+", choices=["P0", "P1", "P2"],
                   help="priorities to dump (default dump.priorities); one process each is normal")
    d.add_argument("--max-events", type=int, default=0,
                   help="stop cleanly once this many events were consumed (tests, benchmarks)")
    d.add_argument("--janitor-once", action="store_true",
                   help="run the TTL janitor once for the priorities, print what it did, exit")
    d.add_argument("--dry-run", action="store_true",
                   help="the janitor only reports what it would delete")
    d.set_defaults(func=cmd_dump)

    add_ctl_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, RulesError) as e:
        print(f"etl-gate: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
