"""Which input offsets are safe to commit (the at-least-once bookkeeping).

Every consumed batch becomes a ``Batch`` in a FIFO. A batch is done when all
the messages produced for it are acknowledged by the broker; an input offset
becomes safe only when its batch and every batch before it are done, so a
commit never runs ahead of an unacknowledged output. One delivery callback
per batch (a bound method), no per-message closures.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class Batch:
    __slots__ = ("pending", "sealed", "offsets", "failures", "decider", "side_headers")

    def __init__(self, decider: Any = None) -> None:
        self.pending = 0  # produced - acknowledged; may dip below 0 before seal
        self.sealed = False
        self.offsets: dict[int, int] = {}  # partition -> next offset to consume
        self.failures: list[tuple[Any, Any]] = []
        # Delivery reports carry no headers, so a retry rebuilds them: routed
        # outputs from the decider that decided the batch, DLQ/quarantine
        # outputs (rare) from this map of payload -> headers.
        self.decider = decider
        self.side_headers: dict[bytes, Any] = {}

    def on_delivery(self, err: Any, msg: Any) -> None:
        if err is None:
            self.pending -= 1
        else:
            # Stays pending; the worker re-produces it outside the callback.
            self.failures.append((err, msg))

    def seal(self, produced: int, offsets: dict[int, int]) -> None:
        self.pending += produced
        self.offsets = offsets
        self.sealed = True

    @property
    def done(self) -> bool:
        return self.sealed and self.pending == 0


class Ledger:
    def __init__(self) -> None:
        self.batches: deque[Batch] = deque()
        self.safe: dict[int, int] = {}  # partition -> next offset, acknowledged
        self.dirty = False  # safe offsets not yet committed

    def open(self, decider: Any = None) -> Batch:
        batch = Batch(decider)
        self.batches.append(batch)
        return batch

    def __len__(self) -> int:
        return len(self.batches)

    def failures(self) -> list[tuple[Batch, Any, Any]]:
        out: list[tuple[Batch, Any, Any]] = []
        for batch in self.batches:
            if batch.failures:
                out.extend((batch, err, msg) for err, msg in batch.failures)
                batch.failures = []
        return out

    def advance(self) -> bool:
        """Move finished batches at the head into ``safe``; True if any moved."""
        moved = False
        batches = self.batches
        while batches and batches[0].done:
            self.safe.update(batches.popleft().offsets)
            moved = True
        if moved:
            self.dirty = True
        return moved

    def forget(self, partitions: set[int]) -> None:
        """Partitions taken away: their offsets are no longer ours to commit."""
        for p in partitions:
            self.safe.pop(p, None)
        for batch in self.batches:
            for p in partitions:
                batch.offsets.pop(p, None)
