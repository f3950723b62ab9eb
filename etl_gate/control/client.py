"""A client of one gate's control plane: what ``etl-gate ctl`` and tests call.

Methods take and return domain types (``model``, SPEC JSON); gRPC failures
come out as ``CallError`` with the status code name and message.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from etl_gate.pb.control.v1 import control_pb2_grpc

from . import serde
from .model import EventStatsReport, GateStatus, PushResult, RulesInfo, StatsQuery

T = TypeVar("T")


@dataclass(frozen=True)
class ClientOptions:
    token: str | None = None
    tls: bool = False  # implied by any of the three PEM contents below
    tls_ca: bytes | None = None  # server CA; None: the system roots
    tls_cert: bytes | None = None  # client certificate (mutual TLS)
    tls_key: bytes | None = None
    server_name: str | None = None  # TLS name to expect, when the target is an IP
    timeout: float = 60.0  # per call; a push waits for every worker to apply
    max_message_mb: int = 64


class CallError(Exception):
    """A call the gate refused or could not complete."""

    def __init__(self, code: str, details: str, current_version: int | None = None) -> None:
        self.code = code
        self.details = details
        self.current_version = current_version  # set on a delta's FAILED_PRECONDITION
        super().__init__(f"{code}: {details}")

    @classmethod
    def from_rpc(cls, e: grpc.RpcError) -> CallError:
        code = e.code() if hasattr(e, "code") else None
        details = e.details() if hasattr(e, "details") else str(e)
        current = None
        trailing = e.trailing_metadata() if hasattr(e, "trailing_metadata") else None
        for key, value in trailing or ():
            if key == "current-version" and str(value).isdigit():
                current = int(value)
        return cls(code.name if code is not None else "UNKNOWN", details or "", current)


class _Feed(Generic[T]):
    """The requests of one client-streaming call. An error while producing
    them (a rule that protobuf cannot carry) ends the stream early, so the gate
    rejects it as cut short, and is kept to raise to the caller afterwards
    (instead of gRPC's bare "Exception iterating requests!")."""

    def __init__(self, requests: Iterable[T]) -> None:
        self._requests = requests
        self.error: Exception | None = None

    def __iter__(self) -> Iterator[T]:
        try:
            yield from self._requests
        except Exception as e:
            self.error = e


class SharedStream(Generic[T]):
    """One lazily produced sequence that several consumers iterate, each from
    the start (a push to several gates converts the rules once). Thread-safe;
    an error while producing reaches every consumer."""

    def __init__(self, source: Iterable[T]) -> None:
        self._source = iter(source)
        self._items: list[T] = []
        self._lock = threading.Lock()
        self._done = False
        self._error: Exception | None = None

    def __iter__(self) -> Iterator[T]:
        i = 0
        while True:
            with self._lock:
                if i == len(self._items):
                    if self._error is not None:
                        raise self._error
                    if self._done:
                        return
                    try:
                        self._items.append(next(self._source))
                    except StopIteration:
                        self._done = True
                        return
                    except Exception as e:
                        self._error = e
                        raise
                item = self._items[i]
            i += 1
            yield item


class ControlClient:
    def __init__(self, target: str, options: ClientOptions | None = None) -> None:
        self.target = target
        self.options = o = options or ClientOptions()
        limit = o.max_message_mb * 1024 * 1024
        channel_options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", limit),
                                                  ("grpc.max_send_message_length", limit)]
        if o.tls or o.tls_ca or o.tls_cert or o.tls_key:
            if o.server_name:
                channel_options.append(("grpc.ssl_target_name_override", o.server_name))
            creds = grpc.ssl_channel_credentials(root_certificates=o.tls_ca, private_key=o.tls_key,
                                                 certificate_chain=o.tls_cert)
            self.channel = grpc.secure_channel(target, creds, options=channel_options)
        else:
            self.channel = grpc.insecure_channel(target, options=channel_options)
        self._stub = control_pb2_grpc.ControlStub(self.channel)
        self._metadata = (("authorization", f"Bearer {o.token}"),) if o.token else ()

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.options.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise CallError.from_rpc(e) from None

    def push(self, requests: Iterable[serde.PushSnapshotRequest]) -> PushResult:
        """Stream a snapshot (a header, then chunks), produced while it is sent."""
        feed = _Feed(requests)
        try:
            response = self._stub.PushSnapshot(iter(feed), timeout=self.options.timeout,
                                               metadata=self._metadata)
        except grpc.RpcError as e:
            if feed.error is not None:
                raise feed.error from None
            raise CallError.from_rpc(e) from None
        if feed.error is not None:  # not reached: the gate refuses a short stream
            raise feed.error
        return serde.push_result_from_pb(response)

    def push_json(self, snapshot: Any, chunk_rules: int = serde.DEFAULT_CHUNK_RULES) -> PushResult:
        """Push a SPEC section 2 snapshot (parsed JSON)."""
        return self.push(serde.json_snapshot_to_requests(snapshot, chunk_rules))

    def push_json_bytes(self, data: bytes) -> PushResult:
        """Push a SPEC section 2 snapshot as its JSON document, unparsed: the
        gate parses and validates it (the fastest way for a big allow-list).
        Split at rule boundaries where it can be (the gate then parses while
        it receives), else sent whole."""
        return self.push(serde.json_document_to_requests(data))

    def push_json_parts(self, head: bytes, parts: Iterable[bytes]) -> PushResult:
        """Push a document split by ``core.snapshot_json.split_document``."""
        return self.push(serde.json_parts_to_requests(head, parts))

    def apply_delta(self, request: serde.ApplyDeltaRequest) -> PushResult:
        return serde.push_result_from_pb(self._call(self._stub.ApplyDelta, request))

    def apply_delta_json(self, delta: Any) -> PushResult:
        """Apply a SPEC section 2 delta (parsed JSON)."""
        return self.apply_delta(serde.json_delta_to_pb(delta))

    def rules_info(self) -> RulesInfo:
        return serde.rules_info_from_pb(self._call(self._stub.GetRules, serde.GetRulesRequest()))

    def export_json(self) -> dict[str, Any]:
        """The rules in force as SPEC section 2 JSON."""
        try:
            stream = self._stub.ExportRules(serde.GetRulesRequest(), timeout=self.options.timeout,
                                            metadata=self._metadata)
            return serde.requests_to_json(stream)
        except grpc.RpcError as e:
            raise CallError.from_rpc(e) from None

    def status(self) -> GateStatus:
        return serde.status_from_pb(self._call(self._stub.GetStatus, serde.GetStatusRequest()))

    def watch(self, interval_s: float = 0.0) -> Iterator[GateStatus]:
        """The status now, then on every change and at least every interval,
        until the caller stops iterating (or closes the client)."""
        call = self._stub.WatchStatus(serde.WatchStatusRequest(interval_seconds=interval_s),
                                      metadata=self._metadata)
        try:
            for msg in call:
                yield serde.status_from_pb(msg)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                raise CallError.from_rpc(e) from None
        finally:
            call.cancel()

    def event_stats(self, top: int = serde.DEFAULT_STATS_TOP, by: str = "count", app: str | None = None,
                    decision: str | None = None, window_minutes: int = 0) -> EventStatsReport:
        """The top (app, event, decision) rows by count or bytes, per-app
        totals and the surging events; window_minutes 0: since start. Raises
        InvalidRequest for what cannot be sent (``by`` not count or bytes)."""
        request = serde.event_stats_request(StatsQuery(top, by, app, decision, window_minutes))
        return serde.event_stats_from_pb(self._call(self._stub.GetEventStats, request))

    def health(self, service: str = "") -> str:
        """The standard health check: "SERVING", "NOT_SERVING", ..."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        response = self._call(stub.Check, health_pb2.HealthCheckRequest(service=service))
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
