"""Bearer tokens for the control plane.

Tokens come from ``control.tokens_file`` (one per line: ``TOKEN`` may write,
``TOKEN read`` may only read; ``#`` starts a comment) and from the environment
variable named by ``control.tokens_env`` (comma-separated write tokens).
Mutating calls (PushSnapshot, ApplyDelta) need a write token; reads need
nothing unless ``control.auth_reads``; health checking and reflection are
always open. No tokens configured: everything is open.

Clients send ``authorization: Bearer <token>`` metadata. A presented token is
compared with every configured one in constant time (digests of equal length,
``hmac.compare_digest``, no early exit), so timing tells nothing about which
token, or how much of one, matched.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import grpc

from etl_gate.config import ConfigError, GateConfig

log = logging.getLogger(__name__)

CONTROL_SERVICE = "etl_gate.control.v1.Control"
MUTATING_METHODS = frozenset({f"/{CONTROL_SERVICE}/PushSnapshot", f"/{CONTROL_SERVICE}/ApplyDelta"})
OPEN_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                           "grpc.reflection.v1.ServerReflection"})


class Access(IntEnum):
    NONE = 0
    READ = 1
    WRITE = 2


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Tokens:
    """Configured tokens, kept only as SHA-256 digests."""

    entries: tuple[tuple[bytes, Access], ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    def access(self, token: str) -> Access:
        """What ``token`` may do. Every entry is compared, whatever matched."""
        presented = _digest(token)
        best = Access.NONE
        for digest, access in self.entries:
            match = hmac.compare_digest(digest, presented)
            best = max(best, access if match else Access.NONE)
        return best


def parse_tokens_file(text: str, where: str) -> list[tuple[str, Access]]:
    out: list[tuple[str, Access]] = []
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split()
        # '#' starts a comment at the start of a word (a token may contain '#').
        for i, w in enumerate(words):
            if w.startswith("#"):
                words = words[:i]
                break
        if not words:
            continue
        if len(words) == 1 or (len(words) == 2 and words[1] in ("read", "write")):
            out.append((words[0], Access.READ if words[1:] == ["read"] else Access.WRITE))
        else:
            raise ConfigError(f"{where}:{n}: expected 'TOKEN' or 'TOKEN read'")
    return out


def load_tokens(cfg: GateConfig, environ: Mapping[str, str] = os.environ) -> Tokens:
    """The tokens ``cfg.control`` points at. A configured source that is missing
    or empty is an error rather than an open gate."""
    c = cfg.control
    found: list[tuple[str, Access]] = []
    if c.tokens_file:
        path = cfg.path(c.tokens_file)
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"control.tokens_file: cannot read {path}: {e.strerror or e}") from None
        from_file = parse_tokens_file(text, str(path))
        if not from_file:
            raise ConfigError(f"control.tokens_file: {path} holds no tokens")
        found += from_file
    if c.tokens_env:
        value = environ.get(c.tokens_env)
        if value is None:
            raise ConfigError(f"control.tokens_env: environment variable {c.tokens_env} is not set")
        from_env = [t.strip() for t in value.split(",") if t.strip()]
        if not from_env:
            raise ConfigError(f"control.tokens_env: environment variable {c.tokens_env} holds no tokens")
        found += [(t, Access.WRITE) for t in from_env]
    return Tokens(tuple((_digest(t), a) for t, a in found))


def is_loopback(listen: str) -> bool:
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_exposed(cfg: GateConfig, tokens: Tokens) -> None:
    c = cfg.control
    if is_loopback(c.listen):
        return
    if not tokens.enabled:
        log.warning("control plane on %s has no tokens: anyone who can reach it may push rules "
                    "(set control.tokens_file or control.tokens_env)", c.listen)
    elif not c.tls_cert:
        log.warning("control plane on %s takes tokens without TLS: they cross the network in "
                    "clear text (set control.tls_cert and control.tls_key)", c.listen)


def _bearer(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def _service(method: str) -> str:
    return method.lstrip("/").split("/", 1)[0]


def _denied(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, details: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that only refuses the call."""
    def refuse(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, details)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


class AuthInterceptor(grpc.ServerInterceptor):
    """Checks the bearer token before a Control method runs."""

    def __init__(self, tokens: Tokens, auth_reads: bool = False) -> None:
        self.tokens = tokens
        self.auth_reads = auth_reads

    def required(self, method: str) -> Access:
        if not self.tokens.enabled or _service(method) in OPEN_SERVICES:
            return Access.NONE
        if method in MUTATING_METHODS:
            return Access.WRITE
        return Access.READ if self.auth_reads else Access.NONE

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          handler_call_details: grpc.HandlerCallDetails) -> Any:
        method = handler_call_details.method
        need = self.required(method)
        handler = continuation(handler_call_details)
        if need is Access.NONE or handler is None:
            return handler
        token = _bearer(handler_call_details.invocation_metadata)
        granted = Access.NONE if token is None else self.tokens.access(token)
        if granted is Access.NONE:
            why = "missing" if token is None else "invalid"
            return _denied(handler, grpc.StatusCode.UNAUTHENTICATED,
                           f"{why} bearer token ('authorization: Bearer <token>' metadata)")
        if granted < need:
            return _denied(handler, grpc.StatusCode.PERMISSION_DENIED,
                           f"{method.rsplit('/', 1)[-1]} needs a write token; this one is read-only")
        return handler
