"""The gRPC control plane end to end on loopback: a real server from
``build_server`` around an in-memory authority and status source, driven by
the real client and the ``etl-gate ctl`` command. No Kafka, no processes."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from etl_gate import cli
from etl_gate.config import ConfigError, GateConfig, parse_config
from etl_gate.control import serde
from etl_gate.control.auth import Access, Tokens, is_loopback, load_tokens, parse_tokens_file, warn_if_exposed
from etl_gate.control.client import CallError, ClientOptions, ControlClient
from etl_gate.control.model import (
    GateStatus,
    PropagationTimeout,
    PushResult,
    RulesInfo,
    WorkerState,
    WorkerView,
)
from etl_gate.control.server import ControlServer, build_server
from etl_gate.core.rules import (
    BaseVersionMismatch,
    RulesDelta,
    RulesError,
    RulesSnapshot,
    apply_delta,
    check_newer,
    parse_snapshot,
)

SPEC = {
    "version": 42,
    "apps": {"1128": {"mode": "enforce", "default_priority": "P2"}},
    "rules": [
        {"app": "1128", "event": "video_play", "priority": "P0"},
        {"app": "1128", "event": "feed_scroll", "priority": "P2", "sample_rate": 0.1},
        {"app": "1128", "event": "debug_trace", "state": "offline"},
        {"app": "1128", "event": "like", "priority": "P1", "sample_key": "device_id",
         "max_rate": 5000},
    ],
}


# --- fakes of the supervisor side ---------------------------------------------------------


class FakeAuthority:
    """Rules in memory, with the core's version checks; ``lagging`` simulates
    workers that do not apply in time."""

    def __init__(self) -> None:
        self.current: RulesSnapshot | None = None
        self.applied_at = 0.0
        self.lagging: list[int] = []
        self.pushes = 0

    def _result(self) -> PushResult:
        info = self.info()
        assert info is not None
        return PushResult(info, [(0, info.version), (1, info.version)], 0.01)

    def _install(self, snapshot: RulesSnapshot) -> PushResult:
        self.current = snapshot
        self.applied_at = time.time()
        self.pushes += 1
        if self.lagging:
            raise PropagationTimeout(snapshot.version, self.lagging, 10.0)
        return self._result()

    def push_snapshot(self, snapshot: RulesSnapshot) -> PushResult:
        check_newer(self.current, snapshot.version)
        return self._install(snapshot)

    def apply_delta(self, delta: RulesDelta) -> PushResult:
        if self.current is None:
            raise BaseVersionMismatch(delta.base_version, None)
        return self._install(apply_delta(self.current, delta))

    def info(self) -> RulesInfo | None:
        if self.current is None:
            return None
        return RulesInfo(self.current.version, len(self.current.rules), f"{self.current.version:064x}",
                         self.applied_at, len(self.current.apps))

    def snapshot(self) -> RulesSnapshot | None:
        return self.current


class FakeStatus:
    def __init__(self, authority: FakeAuthority) -> None:
        self.authority = authority
        self.serving = False
        self.seq = 0
        self.cond = threading.Condition()

    def changed(self, serving: bool | None = None) -> None:
        with self.cond:
            if serving is not None:
                self.serving = serving
            self.seq += 1
            self.cond.notify_all()

    def status(self) -> GateStatus:
        info = self.authority.info()
        version = info.version if info else 0
        workers = [WorkerView(w, 1000 + w, WorkerState.RUNNING if self.serving else WorkerState.WAITING,
                              version, 5 * w, 100.0 * w, 10 * w, 0) for w in range(2)]
        return GateStatus("test-gate", self.serving, info, workers)

    def wait_for_change(self, seq: int, timeout: float) -> int:
        with self.cond:
            self.cond.wait_for(lambda: self.seq > seq, timeout)
            return self.seq


@dataclass
class Gate:
    server: ControlServer
    authority: FakeAuthority
    status: FakeStatus

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def client(self, **options: Any) -> ControlClient:
        return ControlClient(self.target, ClientOptions(**{"timeout": 10, **options}))


def config(tmp_path: Path, **control: Any) -> GateConfig:
    return parse_config({"control": {"listen": "127.0.0.1:0", **control}}, base_dir=str(tmp_path))


@pytest.fixture
def make_gate(tmp_path: Path) -> Iterator[Callable[..., Gate]]:
    gates: list[Gate] = []

    def make(**control: Any) -> Gate:
        authority = FakeAuthority()
        status = FakeStatus(authority)
        server = build_server(config(tmp_path, **control), authority, status)
        server.start()
        gates.append(Gate(server, authority, status))
        return gates[-1]

    yield make
    for g in gates:
        g.server.stop(0)


@pytest.fixture
def gate(make_gate: Callable[..., Gate]) -> Gate:
    return make_gate()


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


# --- the Control service ------------------------------------------------------------------


def test_push_then_read_back(gate: Gate) -> None:
    with gate.client() as c:
        with pytest.raises(CallError) as info:
            c.rules_info()
        assert info.value.code == "NOT_FOUND"
        result = c.push_json(SPEC, chunk_rules=3)
        assert result.rules.version == 42 and result.rules.rule_count == 4
        assert result.acks == [(0, 42), (1, 42)]
        assert gate.authority.current == parse_snapshot(SPEC)
        assert c.rules_info().version == 42
        assert parse_snapshot(c.export_json()) == parse_snapshot(SPEC)
        status = c.status()
        assert status.instance == "test-gate" and status.rules is not None
        assert [w.worker for w in status.workers] == [0, 1]


def test_a_large_push_streams_many_chunks(gate: Gate) -> None:
    rules = [{"app": str(i % 7), "event": f"e{i}", "sample_rate": 0.5} for i in range(50_000)]
    with gate.client() as c:
        c.push_json({"version": 1, "rules": rules}, chunk_rules=5_000)
        assert gate.authority.current is not None
        assert len(gate.authority.current.rules) == 50_000
        assert len(c.export_json()["rules"]) == 50_000


def test_a_bad_push_names_the_entry_and_changes_nothing(gate: Gate) -> None:
    with gate.client() as c:
        c.push_json(SPEC)
        before = gate.authority.current
        bad = {"version": 43, "rules": [*SPEC["rules"], {"app": "1128", "event": "x", "sample_rate": 2}]}
        with pytest.raises(CallError) as info:
            c.push_json(bad, chunk_rules=2)
        assert info.value.code == "INVALID_ARGUMENT"
        assert "rules[4] (app '1128', event 'x'): sample_rate" in info.value.details
        assert gate.authority.current is before and gate.authority.pushes == 1


def test_a_stale_version_is_invalid_and_says_the_current_one(gate: Gate) -> None:
    with gate.client() as c:
        c.push_json(SPEC)
        with pytest.raises(CallError) as info:
            c.push_json({**SPEC, "version": 41})
        assert info.value.code == "INVALID_ARGUMENT"
        assert "version 41" in info.value.details and "version 42" in info.value.details


def test_a_rule_the_client_cannot_send_fails_the_push_locally(gate: Gate) -> None:
    bad = {"version": 1, "rules": [{"app": "a", "event": f"e{i}"} for i in range(10)]
           + [{"app": "a", "event": "x", "priority": "P7"}]}
    with gate.client() as c:
        with pytest.raises(RulesError, match=r"rules\[10\] \(app 'a', event 'x'\): unknown priority"):
            c.push_json(bad, chunk_rules=3)
    assert gate.authority.current is None  # the short stream was refused


def test_stream_without_header_or_with_the_wrong_count(gate: Gate) -> None:
    reqs = list(serde.snapshot_to_requests(parse_snapshot(SPEC), 2))
    with gate.client() as c:
        for broken, fragment in ((reqs[1:], "must start with a SnapshotHeader"),
                                 (reqs[:-1], "announced 4 rules but the stream carried 2")):
            with pytest.raises(CallError) as info:
                c.push(broken)
            assert info.value.code == "INVALID_ARGUMENT"
            assert fragment in info.value.details
    assert gate.authority.current is None


def test_a_json_push_in_pieces_applies_what_the_core_parses(gate: Gate) -> None:
    data = orjson.dumps(SPEC)
    with gate.client() as c:
        result = c.push(serde.json_bytes_to_requests(data, piece_bytes=7))  # many pieces
        assert result.rules.version == 42 and result.rules.rule_count == 4
        assert gate.authority.current == parse_snapshot(SPEC)
        # The next push reuses the event names in force (as a row push does).
        c.push_json_bytes(orjson.dumps({**SPEC, "version": 43}))
        before, after = gate.authority.current, parse_snapshot(SPEC)
        assert before is not None and before.version == 43 and before.tables == after.tables


def test_a_json_push_in_rule_parts_applies_what_the_core_parses(gate: Gate) -> None:
    data = orjson.dumps(SPEC)
    requests = list(serde.json_document_to_requests(data, part_bytes=50))
    assert [r.WhichOneof("part") for r in requests] == ["json_head", *["json_rules"] * (len(requests) - 1)]
    assert len(requests) > 2  # the rules travel in several parts
    with gate.client() as c:
        result = c.push(requests)
        assert result.rules.version == 42 and result.rules.rule_count == 4
        assert gate.authority.current == parse_snapshot(SPEC)
        # A part that is not an array of rules, or a piece of the whole
        # document after a head, is refused by its message number.
        for bad, fragment in (
                ([serde.PushSnapshotRequest(json_head=b'{"version": 43}'),
                  serde.PushSnapshotRequest(json_rules=b'[{"app": "a", "event": "e"}'),
                  ], "message 2 is not a JSON array of rules"),
                ([serde.PushSnapshotRequest(json_head=b'{"version": 43}'),
                  serde.PushSnapshotRequest(json=b"[]")], "message 2: expected json_rules, got json"),
                ([serde.PushSnapshotRequest(json_head=b'{"version": 43, "rules": []}')],
                 "json_head holds 'rules'")):
            with pytest.raises(CallError) as info:
                c.push(bad)
            assert info.value.code == "INVALID_ARGUMENT" and fragment in info.value.details
        # A bad rule in a later part is named by its place in the whole list.
        bad_doc = {**SPEC, "version": 43, "rules": [*SPEC["rules"], {"app": "9", "event": "z", "state": "x"}]}
        with pytest.raises(CallError) as info:
            c.push(serde.json_document_to_requests(orjson.dumps(bad_doc), part_bytes=50))
        assert "rules[4] (app '9', event 'z')" in info.value.details
        # What cannot be split ("rules" not an array) travels whole: the core's verdict.
        assert next(iter(serde.json_document_to_requests(b'{"version": 43, "rules": {}}'))).json
        with pytest.raises(CallError) as info:
            c.push_json_bytes(b'{"version": 43, "rules": {}}')
        assert "rules" in info.value.details
    assert gate.authority.current == parse_snapshot(SPEC) and gate.authority.pushes == 1


def test_a_bad_json_push_is_refused_whole_naming_the_entry(gate: Gate) -> None:
    with gate.client() as c:
        c.push_json_bytes(orjson.dumps(SPEC))
        before = gate.authority.current
        bad = {"version": 43, "rules": [*SPEC["rules"], {"app": "1128", "event": "x", "sample_rate": 2}]}
        for data, fragment in ((orjson.dumps(bad), "rules[4] (app '1128', event 'x'): sample_rate"),
                               (b'{"version": 43, "rules": [', "not valid JSON"),
                               (orjson.dumps({**SPEC, "version": 41}), "version 42")):
            with pytest.raises(CallError) as info:
                c.push_json_bytes(data)
            assert info.value.code == "INVALID_ARGUMENT" and fragment in info.value.details
        assert gate.authority.current is before and gate.authority.pushes == 1


def test_a_json_push_cannot_mix_in_rows_or_exceed_its_limit(make_gate: Callable[..., Gate]) -> None:
    gate = make_gate(max_push_mb=1)
    header = next(iter(serde.snapshot_to_requests(parse_snapshot(SPEC), 2)))
    with gate.client() as c:
        with pytest.raises(CallError) as info:
            c.push([*serde.json_bytes_to_requests(orjson.dumps(SPEC)), header])
        assert info.value.code == "INVALID_ARGUMENT"
        assert "message 2: expected a piece of the JSON document, got header" in info.value.details
        big = orjson.dumps({"version": 1, "rules": [{"app": "a", "event": f"e{i:07d}"}
                                                     for i in range(40_000)]})
        assert len(big) > 1 << 20
        with pytest.raises(CallError) as info:
            c.push_json_bytes(big)
        assert info.value.code == "INVALID_ARGUMENT" and "control.max_push_mb" in info.value.details
    assert gate.authority.current is None


def test_delta_on_the_wrong_base_is_a_failed_precondition_with_the_current_version(gate: Gate) -> None:
    with gate.client() as c:
        with pytest.raises(CallError) as info:
            c.apply_delta_json({"base_version": 1, "version": 2})
        assert info.value.code == "FAILED_PRECONDITION"  # no rules at all yet
        assert info.value.current_version is None
        c.push_json(SPEC)
        with pytest.raises(CallError) as info:
            c.apply_delta_json({"base_version": 41, "version": 43})
        assert info.value.code == "FAILED_PRECONDITION"
        assert info.value.current_version == 42
        assert "version 42" in info.value.details
        result = c.apply_delta_json({"base_version": 42, "version": 43,
                                     "upserts": [{"app": "1128", "event": "new", "priority": "P0"}],
                                     "deletes": [{"app": "1128", "event": "like"}]})
        assert result.rules.version == 43
        assert gate.authority.current is not None
        assert ("1128", "new") in gate.authority.current.rules
        assert ("1128", "like") not in gate.authority.current.rules


def test_trailing_metadata_carries_the_current_version(gate: Gate) -> None:
    with gate.client() as c:
        c.push_json(SPEC)
        stub = c._stub
        with pytest.raises(grpc.RpcError) as info:
            stub.ApplyDelta(serde.json_delta_to_pb({"base_version": 7, "version": 8}), timeout=5)
        assert ("current-version", "42") in info.value.trailing_metadata()


def test_propagation_timeout_is_deadline_exceeded_naming_the_workers(gate: Gate) -> None:
    gate.authority.lagging = [3, 5]
    with gate.client() as c:
        with pytest.raises(CallError) as info:
            c.push_json(SPEC)
    assert info.value.code == "DEADLINE_EXCEEDED"
    assert "[3, 5]" in info.value.details


def test_watch_sends_at_once_then_on_change(gate: Gate) -> None:
    with gate.client() as c:
        updates = c.watch(interval_s=60)
        first = next(updates)
        assert not first.serving
        t0 = time.monotonic()
        threading.Timer(0.2, gate.status.changed, kwargs={"serving": True}).start()
        second = next(updates)
        assert second.serving and time.monotonic() - t0 < 3
        updates.close()


def test_watch_repeats_at_the_interval(gate: Gate) -> None:
    with gate.client() as c:
        updates = c.watch(interval_s=0.2)
        next(updates)
        t0 = time.monotonic()
        next(updates)
        assert 0.1 < time.monotonic() - t0 < 2
        updates.close()


# --- health and reflection --------------------------------------------------------------------


def test_health_follows_the_status(gate: Gate) -> None:
    with gate.client() as c:
        assert c.health() == "NOT_SERVING"
        assert c.health(serde.SERVICE_NAME) == "NOT_SERVING"
        gate.status.changed(serving=True)
        eventually(lambda: c.health() == "SERVING" and c.health(serde.SERVICE_NAME) == "SERVING")
        gate.status.changed(serving=False)
        eventually(lambda: c.health() == "NOT_SERVING")


def test_reflection_lists_the_services(gate: Gate) -> None:
    with grpc.insecure_channel(gate.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = stub.ServerReflectionInfo(iter([request]), timeout=5)
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"etl_gate.control.v1.Control", "grpc.health.v1.Health"} <= names


# --- tokens --------------------------------------------------------------------------------


@pytest.fixture
def token_gate(make_gate: Callable[..., Gate], tmp_path: Path) -> Gate:
    (tmp_path / "tokens").write_text("# who may push\nw-token\nr-token read  # dashboards\n\n")
    return make_gate(tokens_file="tokens")


def code_of(call: Callable[[], Any]) -> str:
    try:
        call()
    except CallError as e:
        return e.code
    return "OK"


def test_tokens_guard_mutating_calls(token_gate: Gate) -> None:
    g = token_gate
    with g.client() as anon, g.client(token="nope") as wrong, g.client(token="r-token") as reader, \
            g.client(token="w-token") as writer:
        assert code_of(lambda: anon.push_json(SPEC)) == "UNAUTHENTICATED"
        assert code_of(lambda: wrong.push_json(SPEC)) == "UNAUTHENTICATED"
        assert code_of(lambda: reader.push_json(SPEC)) == "PERMISSION_DENIED"
        assert code_of(lambda: reader.apply_delta_json({"base_version": 1, "version": 2})) \
            == "PERMISSION_DENIED"
        assert g.authority.pushes == 0
        assert code_of(lambda: writer.push_json(SPEC)) == "OK"
        # Reads are open unless auth_reads; health is always open.
        assert code_of(anon.status) == "OK"
        assert code_of(anon.rules_info) == "OK"
        assert code_of(anon.health) == "OK"


def test_auth_reads_needs_any_valid_token(make_gate: Callable[..., Gate], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATE_TOKENS", "env-a, env-b")
    (tmp_path / "tokens").write_text("r-token read\n")
    g = make_gate(tokens_file="tokens", tokens_env="GATE_TOKENS", auth_reads=True)
    with g.client() as anon, g.client(token="r-token") as reader, g.client(token="env-b") as writer:
        assert code_of(anon.status) == "UNAUTHENTICATED"
        assert code_of(lambda: next(anon.watch())) == "UNAUTHENTICATED"
        assert code_of(reader.status) == "OK"
        assert code_of(lambda: writer.push_json(SPEC)) == "OK"
        assert code_of(reader.export_json) == "OK"
        assert code_of(anon.health) == "OK"


def test_tokens_file_format() -> None:
    text = "# comment\n\n  w1  \nr1 read\nw2 write # trailing comment\nodd#token\n"
    assert parse_tokens_file(text, "t") == [("w1", Access.WRITE), ("r1", Access.READ),
                                             ("w2", Access.WRITE), ("odd#token", Access.WRITE)]
    with pytest.raises(ConfigError, match="t:1: expected"):
        parse_tokens_file("w1 admin\n", "t")


def test_token_lookup_takes_the_strongest_match(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text("same read\nsame\nreader read\n")
    tokens = load_tokens(config(tmp_path, tokens_file="tokens", tokens_env="T"), {"T": "e1,,e2 "})
    assert tokens.access("same") is Access.WRITE
    assert tokens.access("reader") is Access.READ
    assert tokens.access("e2") is Access.WRITE
    assert tokens.access("e") is Access.NONE and tokens.access("") is Access.NONE
    assert not Tokens().enabled and load_tokens(config(tmp_path)) == Tokens()


def test_an_open_control_plane_off_loopback_is_warned_about(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    assert is_loopback("127.0.0.1:1") and is_loopback("[::1]:1") and is_loopback("localhost:1")
    assert not is_loopback("0.0.0.0:1") and not is_loopback("gate.example:1")
    warn_if_exposed(config(tmp_path), Tokens())
    assert not caplog.records
    warn_if_exposed(config(tmp_path, listen="0.0.0.0:50051"), Tokens())
    assert "has no tokens" in caplog.text
    caplog.clear()
    warn_if_exposed(config(tmp_path, listen="0.0.0.0:50051"), Tokens(((b"x" * 32, Access.WRITE),)))
    assert "without TLS" in caplog.text


def test_a_configured_but_missing_token_source_fails_closed(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_TOKENS", raising=False)
    a = FakeAuthority()
    for control, fragment in (({"tokens_file": "missing"}, "control.tokens_file: cannot read"),
                              ({"tokens_env": "NO_SUCH_TOKENS"}, "is not set")):
        with pytest.raises(ConfigError, match=fragment):
            build_server(config(tmp_path, **control), a, FakeStatus(a))
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="holds no tokens"):
        build_server(config(tmp_path, tokens_file="empty"), a, FakeStatus(a))
    (tmp_path / "bad").write_text("a b c\n")
    with pytest.raises(ConfigError, match=r"bad:1: expected"):
        build_server(config(tmp_path, tokens_file="bad"), a, FakeStatus(a))


def test_a_port_in_use_is_a_clear_error(gate: Gate, tmp_path: Path) -> None:
    a = FakeAuthority()
    cfg = parse_config({"control": {"listen": gate.target}}, base_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=f"control.listen: cannot listen on {gate.target}"):
        build_server(cfg, a, FakeStatus(a))


# --- TLS -------------------------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(name: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, Any] | None = None,
          ca: bool = False, sans: list[x509.GeneralName] | None = None) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@dataclass
class Pki:
    ca: bytes
    server_cert: Path
    server_key: Path
    client_cert: bytes
    client_key: bytes
    ca_file: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca_key = _key()
    ca = _cert("etl-gate test CA", ca_key, ca=True)
    issuer = (ca.subject, ca_key)
    server_key, client_key = _key(), _key()
    server = _cert("localhost", server_key, issuer, sans=[
        x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client = _cert("etl-gate ctl", client_key, issuer)
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "server.pem").write_bytes(server.public_bytes(pem))
    (tmp_path / "server.key").write_bytes(_pem_key(server_key))
    return Pki(ca.public_bytes(pem), tmp_path / "server.pem", tmp_path / "server.key",
               client.public_bytes(pem), _pem_key(client_key), tmp_path / "ca.pem")


def test_tls(make_gate: Callable[..., Gate], pki: Pki) -> None:
    g = make_gate(tls_cert="server.pem", tls_key="server.key")
    with g.client(tls_ca=pki.ca) as c:
        c.push_json(SPEC)
        assert c.rules_info().version == 42
    with g.client(timeout=2) as plain:
        assert code_of(plain.status) == "UNAVAILABLE"


def test_mutual_tls_refuses_a_client_without_a_certificate(make_gate: Callable[..., Gate], pki: Pki) -> None:
    g = make_gate(tls_cert="server.pem", tls_key="server.key", tls_client_ca="ca.pem")
    with g.client(tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.client_key) as c:
        assert code_of(c.status) == "OK"
    with g.client(tls_ca=pki.ca, timeout=2) as anonymous:
        assert code_of(anonymous.status) == "UNAVAILABLE"


# --- etl-gate ctl ------------------------------------------------------------------------------


def ctl(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli.main(["ctl", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_ctl_push_rules_status_health(gate: Gate, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules.json"
    rules.write_bytes(orjson.dumps(SPEC))
    t = ("--target", gate.target)
    code, out = ctl(capsys, "push", str(rules), *t)
    assert code == 0 and f"{gate.target}: applied version 42: 4 rules" in out
    code, out = ctl(capsys, "rules", *t)
    assert code == 0 and "version 42: 4 rules, 1 apps" in out
    exported = tmp_path / "export.json"
    code, out = ctl(capsys, "rules", "--export", str(exported), *t)
    assert code == 0 and parse_snapshot(orjson.loads(exported.read_bytes())) == parse_snapshot(SPEC)
    gate.status.changed(serving=True)
    code, out = ctl(capsys, "status", *t)
    assert code == 0 and "SERVING" in out and "RUNNING" in out and "ev/s" in out
    code, out = ctl(capsys, "status", "--json", *t)
    doc = orjson.loads(out)
    assert doc[0]["ok"] and doc[0]["result"]["workers"][1]["state"] == "RUNNING"
    eventually(lambda: ctl(capsys, "health", *t)[0] == 0)


def test_ctl_delta_on_a_wrong_base_fails(gate: Gate, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    gate.authority.current = parse_snapshot(SPEC)
    delta = tmp_path / "delta.json"
    delta.write_bytes(orjson.dumps({"base_version": 40, "version": 43}))
    code, out = ctl(capsys, "delta", str(delta), "--target", gate.target, "--json")
    assert code == 1
    err = orjson.loads(out)[0]["error"]
    assert err["code"] == "FAILED_PRECONDITION" and err["current_version"] == 42


def test_ctl_fans_out_and_fails_if_any_target_fails(make_gate: Callable[..., Gate], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    a, b = make_gate(), make_gate()
    rules = tmp_path / "rules.json"
    rules.write_bytes(orjson.dumps(SPEC))
    code, out = ctl(capsys, "push", str(rules), "--target", f"{a.target},{b.target}")
    assert code == 0 and out.count("applied version 42") == 2
    assert a.authority.current == b.authority.current == parse_snapshot(SPEC)
    b.authority.current = None
    code, out = ctl(capsys, "push", str(rules), "--target", a.target, "--target", b.target)
    assert code == 1
    assert f"{a.target}: FAILED INVALID_ARGUMENT" in out  # stale there, fine on b
    assert f"{b.target}: applied version 42" in out


def test_ctl_with_tokens_and_bad_input(token_gate: Gate, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    rules = tmp_path / "rules.json"
    rules.write_bytes(orjson.dumps(SPEC))
    t = ("--target", token_gate.target)
    code, out = ctl(capsys, "push", str(rules), *t)
    assert code == 1 and "UNAUTHENTICATED" in out
    monkeypatch.setenv("ETL_GATE_TOKEN", "w-token")
    assert ctl(capsys, "push", str(rules), *t)[0] == 0
    (tmp_path / "bad.json").write_text("{")
    code, out = ctl(capsys, "push", str(tmp_path / "bad.json"), *t)
    assert code == 2 and "not valid JSON" in out


def test_ctl_push_sends_the_file_for_the_gate_to_judge_unless_rows(
        gate: Gate, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(orjson.dumps({"version": 1, "rules": [{"app": "a", "event": "x", "priority": "P7"}]}))
    t = ("--target", gate.target)
    # As JSON, the gate validates: one refusal per target, exit 1.
    code, out = ctl(capsys, "push", str(bad), *t)
    assert code == 1 and "FAILED INVALID_ARGUMENT" in out and "unknown priority 'P7'" in out
    # As rows, the client converts, and refuses it before sending: exit 2.
    code, out = ctl(capsys, "push", str(bad), "--rows", *t)
    assert code == 2 and "unknown priority 'P7'" in out and "INVALID_ARGUMENT" not in out
    good = tmp_path / "rules.json"
    good.write_bytes(orjson.dumps(SPEC))
    assert ctl(capsys, "push", str(good), "--rows", "--chunk-rules", "2", *t)[0] == 0
    assert gate.authority.current == parse_snapshot(SPEC)
    # Split at rule boundaries by default; whole with --whole (for gates
    # before split pushes): the same verdicts. The gate's log tells which.
    caplog.set_level(logging.INFO, logger="etl_gate.control.serde")
    for version, flags, received in ((43, (), "MiB in 1 parts received"),
                                     (44, ("--whole",), "MiB parsed in")):
        caplog.clear()
        code, out = ctl(capsys, "push", str(bad), *flags, *t)
        assert code == 1 and "unknown priority 'P7'" in out
        good.write_bytes(orjson.dumps({**SPEC, "version": version}))
        assert ctl(capsys, "push", str(good), *flags, *t)[0] == 0
        assert gate.authority.current is not None and gate.authority.current.version == version
        pushes = [r.getMessage() for r in caplog.records if "JSON document of" in r.getMessage()]
        assert len(pushes) == 1 and received in pushes[0]  # the good one; the bad one was refused


def test_ctl_mutual_tls(make_gate: Callable[..., Gate], pki: Pki, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    g = make_gate(tls_cert="server.pem", tls_key="server.key", tls_client_ca="ca.pem")
    (tmp_path / "client.pem").write_bytes(pki.client_cert)
    (tmp_path / "client.key").write_bytes(pki.client_key)
    tls = ("--target", g.target, "--tls-ca", str(pki.ca_file), "--timeout", "3")
    assert ctl(capsys, "status", *tls, "--tls-cert", str(tmp_path / "client.pem"),
               "--tls-key", str(tmp_path / "client.key"))[0] == 0
    assert ctl(capsys, "status", *tls)[0] == 1


def test_ctl_push_frees_the_parsed_file_once_streamed() -> None:
    from etl_gate.control.ctl import _then_free

    doc: dict[str, Any] = {"version": 1, "rules": [{"app": "a", "event": "e"}]}
    it = _then_free(iter(["header", "chunk"]), doc)
    assert next(it) == "header" and next(it) == "chunk" and doc  # kept while streaming
    assert list(it) == []
    deadline = time.monotonic() + 5
    while doc and time.monotonic() < deadline:
        time.sleep(0.01)
    assert doc == {}
