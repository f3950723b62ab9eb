"""A stand-in for confluent_kafka.Message in the dump's unit tests (no broker)."""

from __future__ import annotations

from dataclasses import dataclass, field

KAFKA_TS = 1_795_400_000_000


@dataclass
class Msg:
    """The parts of confluent_kafka.Message the extractor reads."""

    v: bytes | None
    off: int = 0
    ts: int = KAFKA_TS
    k: bytes | None = b"key"
    hdrs: list[tuple[str, bytes]] | None = field(
        default_factory=lambda: [("priority", b"P0"), ("rules-version", b"42")])

    def value(self) -> bytes | None:
        return self.v

    def key(self) -> bytes | None:
        return self.k

    def offset(self) -> int:
        return self.off

    def timestamp(self) -> tuple[int, int]:
        return (1, self.ts)

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self.hdrs
