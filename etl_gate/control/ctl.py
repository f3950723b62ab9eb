"""``etl-gate ctl``: drive one or more gates' control planes.

    etl-gate ctl push RULES.json [--target h:p ...]
    etl-gate ctl delta DELTA.json
    etl-gate ctl rules [--export FILE]
    etl-gate ctl status [--watch]
    etl-gate ctl stats [--top N] [--by count|bytes] [--app A] [--decision D] [--window MINUTES]
    etl-gate ctl health

Every command runs against each ``--target`` at once and prints one result
per target; the exit code is 1 if any target failed, 2 for bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from etl_gate.config import ConfigError
from etl_gate.core import OUTCOMES
from etl_gate.core.rules import RulesError
from etl_gate.core.snapshot_json import split_document

from .model import EventStatsReport, GateStatus, PushResult, RulesInfo

if TYPE_CHECKING:
    from .client import ClientOptions, ControlClient

DEFAULT_TARGET = "127.0.0.1:50051"
T = TypeVar("T")
TOKEN_ENV = "ETL_GATE_TOKEN"


# --- options ------------------------------------------------------------------


def targets(values: Sequence[str] | None) -> list[str]:
    """--target values, repeated and/or comma-separated, in order, once each."""
    out: list[str] = []
    for value in values or [DEFAULT_TARGET]:
        for t in value.split(","):
            t = t.strip()
            if t and t not in out:
                out.append(t)
    if not out:
        raise ConfigError("--target: no address given")
    return out


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{what}: cannot read {path}: {e.strerror or e}") from None


def token(args: argparse.Namespace, environ: dict[str, str] | None = None) -> str | None:
    """--token, else the first token in --token-file, else $ETL_GATE_TOKEN."""
    if args.token:
        return str(args.token)
    if args.token_file:
        for line in _read(args.token_file, "--token-file").decode().splitlines():
            words = line.split()
            if words and not words[0].startswith("#"):
                return words[0]
        raise ConfigError(f"--token-file: {args.token_file} holds no token")
    env = os.environ if environ is None else environ
    return env.get(TOKEN_ENV) or None


def client_options(args: argparse.Namespace) -> ClientOptions:
    from .client import ClientOptions

    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key: give both or neither")
    return ClientOptions(
        token=token(args),
        tls=bool(args.tls_ca or args.tls_cert or args.tls_server_name),
        tls_ca=_read(args.tls_ca, "--tls-ca") if args.tls_ca else None,
        tls_cert=_read(args.tls_cert, "--tls-cert") if args.tls_cert else None,
        tls_key=_read(args.tls_key, "--tls-key") if args.tls_key else None,
        server_name=args.tls_server_name or None,
        timeout=args.timeout, max_message_mb=args.max_message_mb)


def _load_bytes(path: str) -> bytes:
    return sys.stdin.buffer.read() if path == "-" else _read(path, "input")


def _load_json(path: str) -> Any:
    return _load_json_bytes(_load_bytes(path), path)


def _check_json_syntax(data: bytes, path: str) -> None:
    """Refuse a document that is not JSON here, once, not at every target.
    msgspec checks the syntax while it skips the values (12 ms for 24 MB
    where a parse takes 200); orjson words the error. What the rules say is
    for the gate to judge."""
    import msgspec

    try:
        msgspec.json.decode(data, type=dict[str, msgspec.Raw])
    except (msgspec.DecodeError, msgspec.ValidationError):
        _load_json_bytes(data, path)


def _load_json_bytes(data: bytes, path: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise RulesError(f"{path}: not valid JSON: {e}") from None


def _then_free(requests: Iterator[T], doc: dict[str, Any]) -> Iterator[T]:
    """``requests``, then ``doc`` emptied on another thread. Freeing 500k parsed
    rules takes ~0.1 s: done by the generator as it ends, it would hold back
    the end of the stream; done at exit, it would add to the command's time.
    This way it overlaps the gates applying the rules."""
    yield from requests
    threading.Thread(target=doc.clear, name="free-json", daemon=True).start()


# --- fan-out ------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    target: str
    result: Any = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def fan_out(addresses: list[str], options: ClientOptions,
            call: Callable[[ControlClient], Any]) -> list[Outcome]:
    """``call`` against every target at once; outcomes in target order. Input
    errors (RulesError: the same for every target) are raised."""
    from .client import CallError, ControlClient

    def one(target: str) -> Outcome:
        with ControlClient(target, options) as client:
            try:
                return Outcome(target, result=call(client))
            except CallError as e:
                return Outcome(target, error=e)

    with ThreadPoolExecutor(max_workers=len(addresses)) as pool:
        return list(pool.map(one, addresses))


# --- output -------------------------------------------------------------------


def plain(value: Any) -> Any:
    """Domain objects as JSON-ready values (enums by name)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def _error_json(e: Exception) -> dict[str, Any]:
    out: dict[str, Any] = {"code": getattr(e, "code", type(e).__name__),
                           "message": getattr(e, "details", str(e))}
    if getattr(e, "current_version", None) is not None:
        out["current_version"] = e.current_version  # type: ignore[attr-defined]
    return out


def print_json(outcomes: list[Outcome]) -> None:
    doc = [{"target": o.target, "ok": o.ok,
            **({"result": plain(o.result)} if o.ok else {"error": _error_json(o.error)})}  # type: ignore[arg-type]
           for o in outcomes]
    print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())


def _when(epoch: float) -> str:
    if not epoch:
        return "-"
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_rules(info: RulesInfo) -> str:
    return (f"version {info.version}: {info.rule_count} rules, {info.app_count} apps, "
            f"digest {info.digest[:12] or '-'}, applied {_when(info.applied_at)}")


def describe_push(r: PushResult) -> str:
    workers = ", ".join(f"{w}" for w, _ in r.acks) or "none"
    return (f"applied {describe_rules(r.rules)}; {len(r.acks)} worker(s) [{workers}] "
            f"in {r.apply_seconds:.2f}s")


def status_table(s: GateStatus) -> str:
    rules = f"rules {describe_rules(s.rules)}" if s.rules else "no rules"
    lines = [f"instance {s.instance or '-'}  {'SERVING' if s.serving else 'NOT SERVING'}  {rules}",
             f"  {'worker':>6}  {'pid':>7}  {'state':<8}  {'version':>8}  {'lag':>10}  {'ev/s':>10}"]
    for w in s.workers:
        lag = "?" if w.input_lag < 0 else str(w.input_lag)
        lines.append(f"  {w.worker:>6}  {w.pid:>7}  {w.state.name:<8}  {w.rules_version:>8}  "
                     f"{lag:>10}  {w.events_per_second:>10.1f}")
    if not s.workers:
        lines.append("  (no workers)")
    return "\n".join(lines)


def human_bytes(n: int) -> str:
    """Bytes in IEC units: 512 B, 1.5 KiB, 3.0 GiB."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1023.95:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} PiB"


def _cost(cost: float) -> str:
    if cost == 0:
        return "0"
    if cost >= 100:
        return f"{cost:,.0f}"
    return f"{cost:.2f}" if cost >= 0.01 else f"{cost:.1e}"


def _percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int) -> list[str]:
    """Aligned lines: the first ``left`` columns left-aligned, the rest right."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    return ["  " + "  ".join(c.ljust(w) if i < left else c.rjust(w)
                             for i, (c, w) in enumerate(zip(line, widths, strict=True))).rstrip()
            for line in (header, *rows)]


def stats_table(r: EventStatsReport, by: str = "count", window_minutes: int = 0,
                max_apps: int | None = None) -> str:
    """The top rows (share of every matching event), the per-app totals (the
    ``max_apps`` busiest) and the surging events. A count that may be short
    (approximate statistics) is marked ``~`` and the footnote gives the bound."""
    span = f"over the last {window_minutes} min" if window_minutes else "since start"
    lines = [f"top {len(r.rows)} by {by} {span}, {r.total_count:,} matching events in all"]
    rows = [[e.app or "-", e.event, e.decision, e.priority or "-",
             f"{'~' if e.error else ''}{e.count:,}", human_bytes(e.bytes), _cost(e.cost),
             _percent(e.count, r.total_count)] for e in r.rows]
    if rows:
        lines += _table(["app", "event", "decision", "priority", "count", "bytes", "cost", "share"],
                        rows, left=4)
    else:
        lines.append("  (no events)")
    if r.approximate:
        bound = max((e.error for e in r.rows), default=0)
        if bound:
            lines.append(f"  ~ approximate (more keys than observe.stats_max_keys): a count marked ~ "
                         f"may be short by up to {bound:,}")
        else:
            lines.append("  approximate statistics (more (app, event) keys than "
                         "observe.stats_max_keys); the counts shown are exact")
    apps = sorted(r.apps, key=lambda a: (-a.events, a.app))
    shown = apps if max_apps is None else apps[:max_apps]
    lines.append(f"apps ({len(apps)}, since start, exact):")
    if shown:
        lines += _table(["app", "events", "unregistered", "blocked", "useless ratio"],
                        [[a.app or "-", f"{a.events:,}", _percent(a.unregistered, a.events),
                          _percent(a.blocked, a.events), f"{a.useless_ratio:.3f}"] for a in shown],
                        left=1)
        if len(shown) < len(apps):
            more = len(apps) - len(shown)
            lines.append(f"  ... and {more} more app{'s' if more > 1 else ''}")
    else:
        lines.append("  (no apps)")
    if r.surging:
        lines.append(f"surging ({len(r.surging)}):")
        lines += _table(["app", "event", "baseline/s"],
                        [[s.app or "-", s.event, f"{s.baseline_per_second:,.1f}"] for s in r.surging],
                        left=2)
    else:
        lines.append("no surging events")
    return "\n".join(lines)


def stats_json(r: EventStatsReport) -> dict[str, Any]:
    """A report as JSON, apps with their useless ratio."""
    doc: dict[str, Any] = plain(r)
    for a, out in zip(r.apps, doc["apps"], strict=True):
        out["useless_ratio"] = a.useless_ratio
    return doc


def print_outcomes(outcomes: list[Outcome], describe: Callable[[Any], str]) -> None:
    many = len(outcomes) > 1
    for o in outcomes:
        text = describe(o.result) if o.ok else f"FAILED {o.error}"
        if "\n" in text:
            print(f"{o.target}:\n{text}" if many or not o.ok else text)
        else:
            print(f"{o.target}: {text}")


def _exit_code(outcomes: list[Outcome]) -> int:
    return 0 if all(o.ok for o in outcomes) else 1


# --- commands -----------------------------------------------------------------


def cmd_push(args: argparse.Namespace) -> int:
    from . import serde
    from .client import SharedStream

    options = client_options(args)
    if not args.rows:
        # The document as it is: each gate parses and validates it (faster
        # than converting it here and decoding rows there: bench/RESULTS.md).
        data = _load_bytes(args.file)
        # Split at rule boundaries once, for every target (the gates parse
        # while they receive). A document that cannot be split is sent
        # whole, if it is JSON at all.
        split = None if args.whole else split_document(data, serde.JSON_PIECE_BYTES)
        if split is None:
            _check_json_syntax(data, args.file)
            outcomes = fan_out(targets(args.target), options,
                               lambda c: c.push(serde.json_bytes_to_requests(data)))
        else:
            del data
            head, parts = split
            outcomes = fan_out(targets(args.target), options, lambda c: c.push_json_parts(head, parts))
        return _report(args, outcomes, describe_push)
    # A short-lived process that builds millions of objects and no cycles:
    # the collector would only walk them again and again (15% of a 500k
    # push's ctl time).
    gc.disable()
    # The header is checked now; rules convert while the first gate receives them.
    doc = _load_json(args.file)
    requests = serde.json_snapshot_to_requests(doc, args.chunk_rules)
    stream = SharedStream(_then_free(requests, doc))
    del doc, requests
    outcomes = fan_out(targets(args.target), options, lambda c: c.push(stream))
    return _report(args, outcomes, describe_push)


def cmd_delta(args: argparse.Namespace) -> int:
    from . import serde

    options = client_options(args)
    request = serde.json_delta_to_pb(_load_json(args.file))
    outcomes = fan_out(targets(args.target), options, lambda c: c.apply_delta(request))
    return _report(args, outcomes, describe_push)


def cmd_rules(args: argparse.Namespace) -> int:
    addresses = targets(args.target)
    options = client_options(args)
    if args.export:
        if len(addresses) != 1:
            raise ConfigError("--export: give exactly one --target")
        (outcome,) = fan_out(addresses, options, lambda c: c.export_json())
        if outcome.ok:
            data = orjson.dumps(outcome.result, option=orjson.OPT_INDENT_2) + b"\n"
            if args.export == "-":
                sys.stdout.buffer.write(data)
                return 0
            Path(args.export).write_bytes(data)
            rules = outcome.result
            outcome = Outcome(outcome.target, result=(
                f"version {rules['version']}: {len(rules['rules'])} rules written to {args.export}"))
        return _report(args, [outcome], str)
    outcomes = fan_out(addresses, options, lambda c: c.rules_info())
    code = _report(args, outcomes, describe_rules)
    digests = {o.result.digest for o in outcomes if o.ok}
    if len(digests) > 1 and not args.json:
        print("note: the targets do not all have the same rules")
    return code


def cmd_status(args: argparse.Namespace) -> int:
    if args.watch:
        return _watch(args)
    outcomes = fan_out(targets(args.target), client_options(args), lambda c: c.status())
    return _report(args, outcomes, status_table)


def cmd_stats(args: argparse.Namespace) -> int:
    outcomes = fan_out(targets(args.target), client_options(args), lambda c: c.event_stats(
        args.top, args.by, args.app, args.decision, args.window))
    if args.json:
        outcomes = [Outcome(o.target, stats_json(o.result), o.error) if o.ok else o for o in outcomes]
    return _report(args, outcomes, lambda r: stats_table(r, args.by, args.window, args.top))


def cmd_health(args: argparse.Namespace) -> int:
    outcomes = fan_out(targets(args.target), client_options(args), lambda c: c.health(args.service))
    code = _report(args, outcomes, str)
    return code or (0 if all(o.result == "SERVING" for o in outcomes) else 1)


def _report(args: argparse.Namespace, outcomes: list[Outcome], describe: Callable[[Any], str]) -> int:
    if args.json:
        print_json(outcomes)
    else:
        print_outcomes(outcomes, describe)
    return _exit_code(outcomes)


def _watch(args: argparse.Namespace) -> int:
    """Print every status update from every target until Ctrl-C."""
    from .client import CallError, ControlClient

    options = client_options(args)
    clients = [ControlClient(t, options) for t in targets(args.target)]
    lock = threading.Lock()
    failed: list[str] = []

    def follow(client: ControlClient) -> None:
        try:
            for status in client.watch(args.interval):
                with lock:
                    if args.json:
                        print(orjson.dumps({"target": client.target, "status": plain(status)}).decode(),
                              flush=True)
                    else:
                        now = datetime.datetime.now().strftime("%H:%M:%S")
                        print(f"[{now}] {client.target}\n{status_table(status)}\n", flush=True)
        except CallError as e:
            with lock:
                failed.append(client.target)
                print(f"{client.target}: FAILED {e}", file=sys.stderr, flush=True)
        except BrokenPipeError:  # the reader went away (| head): stop following
            client.close()

    threads = [threading.Thread(target=follow, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for c in clients:
            c.close()
    return 1 if failed else 0


# --- parser -------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _nonnegative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection")
    g.add_argument("--target", action="append", metavar="HOST:PORT",
                   help=f"a gate's control address; repeat or comma-separate (default {DEFAULT_TARGET})")
    g.add_argument("--token", help=f"bearer token (default: --token-file, then ${TOKEN_ENV})")
    g.add_argument("--token-file", help="file holding the bearer token")
    g.add_argument("--tls-ca", metavar="FILE", help="CA of the gate's certificate (PEM); enables TLS")
    g.add_argument("--tls-cert", metavar="FILE", help="client certificate (PEM), for mutual TLS")
    g.add_argument("--tls-key", metavar="FILE", help="client private key (PEM), for mutual TLS")
    g.add_argument("--tls-server-name", metavar="NAME",
                   help="name the gate's certificate must carry, when it differs from the target host")
    g.add_argument("--timeout", type=float, default=60.0, help="seconds per call (default 60)")
    g.add_argument("--max-message-mb", type=int, default=64, help="like control.max_message_mb")
    g.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def add_ctl_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``ctl`` and its commands to the ``etl-gate`` parser."""
    common = _common()
    ctl = subparsers.add_parser("ctl", help="talk to running gates' control planes (gRPC)",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ctl.add_subparsers(dest="ctl_command", required=True)

    push = sub.add_parser("push", parents=[common], help="replace the rules with a snapshot file")
    push.add_argument("file", metavar="RULES.json", help="SPEC section 2 snapshot ('-' for stdin)")
    push.add_argument("--rows", action="store_true",
                      help="convert the rules here and send them as rows and columns (for gates "
                           "that predate JSON pushes); the default sends the file for the gate to parse")
    push.add_argument("--whole", action="store_true",
                      help="send the file whole, not split at rule boundaries (for gates that "
                           "predate split pushes, 2026-12)")
    push.add_argument("--chunk-rules", type=_positive_int, default=20_000,
                      help="with --rows: rules per streamed chunk")
    push.set_defaults(func=cmd_push)

    delta = sub.add_parser("delta", parents=[common], help="apply a delta file on top of base_version")
    delta.add_argument("file", metavar="DELTA.json",
                       help="{base_version, version, upserts, deletes, apps} ('-' for stdin)")
    delta.set_defaults(func=cmd_delta)

    rules = sub.add_parser("rules", parents=[common], help="the rules in force (or --export them)")
    rules.add_argument("--export", metavar="FILE", help="write the rules as a snapshot file ('-': stdout)")
    rules.set_defaults(func=cmd_rules)

    status = sub.add_parser("status", parents=[common], help="workers, versions, lag and rates")
    status.add_argument("--watch", action="store_true", help="follow changes until Ctrl-C")
    status.add_argument("--interval", type=float, default=5.0,
                        help="with --watch: an update at least this often (seconds)")
    status.set_defaults(func=cmd_status)

    stats = sub.add_parser("stats", parents=[common],
                           help="per-event statistics: top events, per-app totals, surges")
    stats.add_argument("--top", type=_positive_int, default=20, metavar="N",
                       help="rows (and apps) to show (default 20)")
    stats.add_argument("--by", choices=("count", "bytes"), default="count", help="rank rows by")
    stats.add_argument("--app", help="only this app")
    stats.add_argument("--decision", choices=OUTCOMES, help="only this decision")
    stats.add_argument("--window", type=_nonnegative_int, default=0, metavar="MINUTES",
                       help="the last MINUTES minutes (default 0: since start)")
    stats.set_defaults(func=cmd_stats)

    health = sub.add_parser("health", parents=[common], help="standard gRPC health check")
    health.add_argument("--service", default="", help="service to check (default: the whole gate)")
    health.set_defaults(func=cmd_health)
    return ctl
