"""The gRPC control plane (proto/etl_gate/pb/control/v1/control.proto).

``build_server`` wires the Control servicer, token auth, TLS, standard health
checking and reflection around objects the supervisor owns: the
``Authority`` (validates, persists and propagates rules), the
``StatusSource`` (what the workers are doing) and, optionally, the
``StatsSource`` (per-event statistics). This module only translates:
messages in and out through ``serde``, exceptions to status codes.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any, NoReturn, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from etl_gate.config import ConfigError, GateConfig
from etl_gate.core.rules import BaseVersionMismatch, RulesDelta, RulesError, RulesSnapshot, StaleVersion
from etl_gate.pb.control.v1 import control_pb2_grpc
from etl_gate.stats import AppStat, EventStat

from . import serde
from .auth import AuthInterceptor, load_tokens, warn_if_exposed
from .model import (
    EventStatsReport,
    GateStatus,
    InvalidRequest,
    PropagationTimeout,
    PushResult,
    RulesInfo,
    StatsQuery,
    SurgingEvent,
)

log = logging.getLogger(__name__)

THREADS = 16
# Each WatchStatus stream holds a server thread for as long as it is open;
# this many at most, so that pushes always find a thread.
MAX_WATCHERS = 8
# How often a blocked status wait wakes to notice a cancelled stream or a stop.
POLL_S = 1.0


class Authority(Protocol):
    """The supervisor's rules authority: validates, persists, propagates."""

    def push_snapshot(self, snapshot: RulesSnapshot) -> PushResult:
        """Raises RulesError (StaleVersion too) or PropagationTimeout."""
        ...

    def apply_delta(self, delta: RulesDelta) -> PushResult:
        """Raises RulesError, BaseVersionMismatch or PropagationTimeout."""
        ...

    def info(self) -> RulesInfo | None: ...

    def snapshot(self) -> RulesSnapshot | None: ...


class StatusSource(Protocol):
    def status(self) -> GateStatus: ...

    def wait_for_change(self, seq: int, timeout: float) -> int:
        """Block until the status change counter exceeds ``seq`` or ``timeout``
        passes; return the current counter."""
        ...


class StatsSource(Protocol):
    """The supervisor's per-event statistics (see etl_gate/stats.py)."""

    def top(self, n: int, by: str, app: str | None, decision: str | None,
            window_minutes: int) -> list[EventStat]:
        """The top ``n`` (app, event, decision) rows by ``by`` ("count" or
        "bytes"), filtered by app and decision (None: all), over the last
        ``window_minutes`` (0: since start)."""
        ...

    def app_stats(self) -> list[AppStat]: ...

    @property
    def approximate(self) -> bool:
        """Whether some counts are lower bounds (short by up to their error)."""
        ...

    def surging(self) -> dict[tuple[str, str], float]:
        """(app, event) -> the baseline rate (events/s) of each surging event."""
        ...


def _abort_for(context: grpc.ServicerContext, exc: Exception) -> NoReturn:
    """Abort the call with the status code that says what went wrong."""
    if isinstance(exc, grpc.RpcError) or not context.is_active():
        raise exc  # the client went away mid-stream: nobody to answer
    if isinstance(exc, BaseVersionMismatch):
        current = "none" if exc.current is None else str(exc.current)
        context.set_trailing_metadata((("current-version", current),))
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    if isinstance(exc, StaleVersion):  # its message names the version in force
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, RulesError):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, PropagationTimeout):  # its message names the lagging workers
        context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))
    if isinstance(exc, InvalidRequest):  # its message names the field
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    log.exception("control call failed", exc_info=exc)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
    raise AssertionError("unreachable: context.abort raises")


def _no_rules(context: grpc.ServicerContext) -> NoReturn:
    context.abort(grpc.StatusCode.NOT_FOUND, "no rules in force yet")
    raise AssertionError("unreachable: context.abort raises")


def _total(q: StatsQuery, rows: list[EventStat], apps: list[AppStat]) -> int:
    """Events matching the query: from the app totals where they answer it
    (exact even when the per-key statistics are not), else the rows' sum."""
    if not q.window_minutes:
        if q.decision is None:
            return sum(a.events for a in apps)
        if q.decision in ("unregistered", "blocked"):
            return sum(getattr(a, q.decision) for a in apps)
    return sum(r.count for r in rows)


class ControlServicer:
    """The Control service: methods named as in the proto."""

    def __init__(self, authority: Authority, status_source: StatusSource,
                 chunk_rules: int = serde.DEFAULT_CHUNK_RULES,
                 stats_source: StatsSource | None = None,
                 max_push_bytes: int = serde.DEFAULT_MAX_JSON_BYTES) -> None:
        self.authority = authority
        self.max_push_bytes = max_push_bytes
        self.status_source = status_source
        self.stats_source = stats_source
        self.chunk_rules = chunk_rules
        self._watch_slots = threading.BoundedSemaphore(MAX_WATCHERS)

    def _count_rejection(self, exc: Exception) -> None:
        """Pushes refused before they reach the authority (malformed chunks,
        bad rules) count as rejections too (etl_gate_rule_rejections_total)."""
        if isinstance(exc, RulesError) and not getattr(exc, "counted", False):
            note = getattr(self.authority, "note_rejection", None)
            if note is not None:
                note()

    def PushSnapshot(self, request_iterator: Iterator[serde.PushSnapshotRequest],
                     context: grpc.ServicerContext) -> serde.PushResponse:
        received = time.monotonic()
        try:
            snapshot = serde.snapshot_from_requests(request_iterator, self.authority.snapshot(),
                                                    self.max_push_bytes)
            log.info("push: version %d, %d rules, %d apps received from %s in %.2fs",
                     snapshot.version, snapshot.rule_count, len(snapshot.apps), context.peer(),
                     time.monotonic() - received)
            result = self.authority.push_snapshot(snapshot)
        except Exception as e:
            self._count_rejection(e)
            _abort_for(context, e)
        return serde.push_result_to_pb(result)

    def ApplyDelta(self, request: serde.ApplyDeltaRequest,
                   context: grpc.ServicerContext) -> serde.PushResponse:
        try:
            delta = serde.delta_from_pb(request)
            log.info("delta: %d -> %d, %d upserts, %d deletes from %s", delta.base_version,
                     delta.version, len(delta.upserts), len(delta.deletes), context.peer())
            result = self.authority.apply_delta(delta)
        except Exception as e:
            self._count_rejection(e)
            _abort_for(context, e)
        return serde.push_result_to_pb(result)

    def GetRules(self, request: serde.GetRulesRequest,
                 context: grpc.ServicerContext) -> serde.RulesInfoMessage:
        info = self.authority.info()
        if info is None:
            _no_rules(context)
        return serde.rules_info_to_pb(info)

    def ExportRules(self, request: serde.GetRulesRequest,
                    context: grpc.ServicerContext) -> Iterator[serde.PushSnapshotRequest]:
        snapshot = self.authority.snapshot()
        if snapshot is None:
            _no_rules(context)
        return serde.snapshot_to_requests(snapshot, self.chunk_rules)

    def GetStatus(self, request: serde.GetStatusRequest,
                  context: grpc.ServicerContext) -> serde.StatusMessage:
        return serde.status_to_pb(self.status_source.status())

    def WatchStatus(self, request: serde.WatchStatusRequest,
                    context: grpc.ServicerContext) -> Iterator[serde.StatusMessage]:
        if not self._watch_slots.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"too many status watchers (at most {MAX_WATCHERS})")
        try:
            yield from self._watch(serde.watch_interval(request), context)
        finally:
            self._watch_slots.release()

    def GetEventStats(self, request: serde.EventStatsRequest,
                      context: grpc.ServicerContext) -> serde.EventStatsResponse:
        source = self.stats_source
        if source is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, "statistics are disabled")
            raise AssertionError("unreachable: context.abort raises")
        try:
            q = serde.stats_query_from_pb(request)
            # Every matching row, for the total: the table ranks them all anyway.
            rows = source.top(sys.maxsize, q.by, q.app, q.decision, q.window_minutes)
            apps = [a for a in source.app_stats() if q.app is None or a.app == q.app]
            surging = [SurgingEvent(app, event, baseline)
                       for (app, event), baseline in sorted(source.surging().items())
                       if q.app is None or app == q.app]
            report = EventStatsReport(rows[:q.top], apps, source.approximate, surging,
                                      total_count=_total(q, rows, apps))
        except Exception as e:
            _abort_for(context, e)
        return serde.event_stats_to_pb(report)

    def _watch(self, interval: float, context: grpc.ServicerContext) -> Iterator[serde.StatusMessage]:
        source = self.status_source
        # The counter before the status: a change in between is sent again, never lost.
        seq = source.wait_for_change(-1, 0.0)
        yield serde.status_to_pb(source.status())
        sent = time.monotonic()
        while context.is_active():
            left = interval - (time.monotonic() - sent)
            if left > 0:
                now_seq = source.wait_for_change(seq, min(left, POLL_S))
                if now_seq == seq:
                    continue
                seq = now_seq
            yield serde.status_to_pb(source.status())
            sent = time.monotonic()


class ControlServer(grpc.Server):
    """A started-on-demand grpc.Server with the Control service, health and
    reflection. ``port`` is the bound port (useful with ``listen = "host:0"``).
    ``stop`` also marks health NOT_SERVING and ends the health updater."""

    def __init__(self, server: grpc.Server, port: int, health_servicer: health.HealthServicer,
                 status_source: StatusSource) -> None:
        self._server = server
        self.port = port
        self._health = health_servicer
        self._status_source = status_source
        self._stopping = threading.Event()
        self._health_thread = threading.Thread(target=self._update_health, name="control-health",
                                               daemon=True)

    def _set_health(self, serving: bool) -> None:
        state = (health_pb2.HealthCheckResponse.SERVING if serving
                 else health_pb2.HealthCheckResponse.NOT_SERVING)
        for service in ("", serde.SERVICE_NAME):
            self._health.set(service, state)

    def _update_health(self) -> None:
        seq = -1
        while not self._stopping.is_set():
            try:
                now_seq = self._status_source.wait_for_change(seq, POLL_S)
                if now_seq != seq:
                    seq = now_seq
                    self._set_health(self._status_source.status().serving)
            except Exception:  # keep serving health; report the source's failure
                log.exception("control: status source failed; health marked NOT_SERVING")
                self._set_health(False)
                self._stopping.wait(POLL_S)

    # grpc.Server

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Any) -> None:
        self._server.add_generic_rpc_handlers(generic_rpc_handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: Any) -> None:
        self._server.add_registered_method_handlers(service_name, method_handlers)

    def add_insecure_port(self, address: str) -> int:
        return int(self._server.add_insecure_port(address))

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return int(self._server.add_secure_port(address, server_credentials))

    def start(self) -> None:
        self._set_health(self._status_source.status().serving)
        self._server.start()
        self._health_thread.start()

    def stop(self, grace: float | None) -> threading.Event:
        self._stopping.set()
        self._health.enter_graceful_shutdown()
        return self._server.stop(grace)  # type: ignore[no-any-return]

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return bool(self._server.wait_for_termination(timeout))


def _read(cfg: GateConfig, key: str, value: str) -> bytes:
    path = cfg.path(value)
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"control.{key}: cannot read {path}: {e.strerror or e}") from None


def server_credentials(cfg: GateConfig) -> grpc.ServerCredentials | None:
    """TLS credentials from control.tls_*, or None for plain text."""
    c = cfg.control
    if not c.tls_cert:
        return None
    key, cert = _read(cfg, "tls_key", c.tls_key), _read(cfg, "tls_cert", c.tls_cert)
    client_ca = _read(cfg, "tls_client_ca", c.tls_client_ca) if c.tls_client_ca else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def build_server(cfg: GateConfig, authority: Authority, status_source: StatusSource,
                 stats_source: StatsSource | None = None) -> ControlServer:
    """The control server, bound to control.listen but not started. Raises
    ConfigError when tokens or certificates cannot be read or the address
    cannot be bound. Without a ``stats_source``, GetEventStats is UNAVAILABLE."""
    c = cfg.control
    tokens = load_tokens(cfg)
    warn_if_exposed(cfg, tokens)
    credentials = server_credentials(cfg)
    limit = c.max_message_mb * 1024 * 1024
    options = [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        # Two gates on one port would split the calls between them: fail instead.
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="control"),
                         interceptors=[AuthInterceptor(tokens, c.auth_reads)], options=options)
    servicer = ControlServicer(authority, status_source, stats_source=stats_source,
                               max_push_bytes=c.max_push_mb << 20)
    control_pb2_grpc.add_ControlServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (serde.SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        if credentials is None:
            port = server.add_insecure_port(c.listen)
        else:
            port = server.add_secure_port(c.listen, credentials)
    except RuntimeError as e:
        port = 0
        reason = str(e)
    else:
        reason = ""
    if not port:
        raise ConfigError(f"control.listen: cannot listen on {c.listen} (port in use, or not an "
                          f"address of this host){': ' + reason if reason else ''}")
    return ControlServer(server, port, health_servicer, status_source)
