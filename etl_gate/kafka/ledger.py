"""Which input offsets are safe to commit (the at-least-once bookkeeping).

Checkpoints, the way Kafka Streams and Quix Streams commit: the worker
records how far it has consumed each partition; at a checkpoint (every
``commit_interval_ms``, on revoke, on shutdown) it flushes the producer, and
only if every output produced so far was acknowledged, with no delivery
error, does it commit those offsets. A commit therefore never runs ahead of an
unacknowledged output.

Why not a delivery callback per message, marking batches done: confluent-kafka
makes a per-message ``on_delivery`` expensive (about 2.2 us per produce on
this machine, more than the whole decision; bench/RESULTS.md), and serving
one Python callback per acknowledgement costs again in ``poll``. Here the
producer reports errors only (``delivery.report.only.error``), to one
callback; the price is a flush per checkpoint (linger plus a round trip, a
few ms a second).

A delivery error means some outputs since the last commit may be missing.
The worker then rewinds: every assigned partition goes back to its last
committed offset and is consumed again (duplicates, never loss), except for
outputs the broker refuses for good (too large, say), which go to the DLQ.
"""

from __future__ import annotations

from typing import Any


class Checkpoints:
    def __init__(self) -> None:
        self.consumed: dict[int, int] = {}  # partition -> next offset, produced
        # partition -> next offset, proven safe by a checkpoint and committed
        # (a failed commit request leaves it safe: it is only sent again).
        self.committed: dict[int, int] = {}
        self.recommit: set[int] = set()  # partitions whose last commit failed
        # Where each partition started in this assignment: the rewind target
        # of a partition with nothing committed by us yet.
        self.start: dict[int, int] = {}
        self.failures: list[tuple[Any, Any]] = []

    def on_delivery_error(self, err: Any, msg: Any) -> None:
        """The producer's delivery callback; with delivery.report.only.error
        it runs for failed deliveries only (inside poll/flush)."""
        if err is not None:
            self.failures.append((err, msg))

    def note(self, offsets: dict[int, int], msgs: list[Any]) -> None:
        """A batch was routed: ``offsets`` is the next offset per partition of
        its messages ``msgs`` (scanned only for a partition seen first)."""
        start, committed = self.start, self.committed
        new = [p for p in offsets if p not in start and p not in committed]
        if new:
            for m in msgs:
                p = m.partition()
                if p in new and p not in start and m.error() is None:
                    start[p] = m.offset()
        self.consumed.update(offsets)

    @property
    def dirty(self) -> bool:
        """Consumed past the last commit."""
        return bool(self.pending())

    def pending(self) -> dict[int, int]:
        """The offsets a successful checkpoint would commit."""
        committed, again = self.committed, self.recommit
        return {p: o for p, o in self.consumed.items() if committed.get(p) != o or p in again}

    def mark_committed(self, offsets: dict[int, int]) -> None:
        self.committed.update(offsets)
        self.recommit.difference_update(offsets)

    def commit_failed(self, partitions: list[int]) -> None:
        self.recommit.update(p for p in partitions if p in self.consumed)

    def take_failures(self) -> list[tuple[Any, Any]]:
        out, self.failures = self.failures, []
        return out

    def rewind_targets(self) -> dict[int, int]:
        """Where each partition must be consumed from again after a delivery
        error: its last commit, else where this assignment started."""
        targets: dict[int, int] = {}
        for p in self.consumed:
            target = self.committed.get(p, self.start.get(p))
            if target is not None:
                targets[p] = target
        return targets

    def rewound(self, targets: dict[int, int]) -> None:
        for p, o in targets.items():
            self.consumed[p] = o
            if p not in self.committed:
                self.start[p] = o

    def forget(self, partitions: set[int]) -> None:
        """Partitions taken away: their offsets are no longer ours to commit."""
        for p in partitions:
            self.consumed.pop(p, None)
            self.committed.pop(p, None)
            self.start.pop(p, None)
            self.recommit.discard(p)
