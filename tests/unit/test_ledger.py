"""The checkpoint bookkeeping (kafka/ledger.py), without a broker: what a
checkpoint commits, where a delivery error rewinds to, what a rebalance
forgets. The Kafka behaviour itself (no loss across broker outages) is tested
on the real broker in tests/integration/test_broker_outage.py."""

from __future__ import annotations

from dataclasses import dataclass

from etl_gate.kafka.ledger import Checkpoints


@dataclass
class Msg:
    p: int
    o: int
    err: object = None

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def error(self) -> object:
        return self.err


def batch(ck: Checkpoints, *msgs: tuple[int, int]) -> None:
    ms = [Msg(p, o) for p, o in msgs]
    offsets: dict[int, int] = {}
    for m in ms:
        offsets[m.p] = m.o + 1
    ck.note(offsets, ms)


def test_pending_is_what_was_consumed_since_the_last_commit() -> None:
    ck = Checkpoints()
    assert not ck.dirty and ck.pending() == {}
    batch(ck, (0, 10), (1, 5), (0, 11))
    assert ck.dirty
    assert ck.pending() == {0: 12, 1: 6}
    ck.mark_committed(ck.pending())
    assert not ck.dirty and ck.pending() == {}
    batch(ck, (1, 6))
    assert ck.pending() == {1: 7}


def test_rewind_goes_to_the_last_commit_or_to_where_the_assignment_started() -> None:
    ck = Checkpoints()
    batch(ck, (0, 10), (1, 5))
    ck.mark_committed({0: 11})
    batch(ck, (0, 11), (0, 12), (1, 6))
    # partition 0: its commit; partition 1: nothing committed, its first offset
    assert ck.rewind_targets() == {0: 11, 1: 5}
    ck.rewound(ck.rewind_targets())
    assert ck.consumed == {0: 11, 1: 5}
    # consumed again after the rewind: the same targets until a commit
    batch(ck, (1, 5), (1, 6))
    assert ck.rewind_targets() == {0: 11, 1: 5}


def test_first_offset_ignores_error_messages_and_known_partitions() -> None:
    ck = Checkpoints()
    ck.note({2: 8}, [Msg(2, -1, err="eof"), Msg(2, 7)])
    assert ck.start == {2: 7}
    ck.note({2: 9}, [Msg(2, 8)])
    assert ck.start == {2: 7}


def test_a_failed_commit_is_sent_again_but_stays_a_safe_rewind_target() -> None:
    ck = Checkpoints()
    batch(ck, (0, 1), (1, 1))
    ck.mark_committed({0: 2, 1: 2})
    ck.commit_failed([1])
    assert ck.dirty
    assert ck.pending() == {1: 2}
    assert ck.rewind_targets() == {0: 2, 1: 2}
    ck.mark_committed(ck.pending())
    assert not ck.dirty


def test_delivery_errors_are_collected_and_taken_once() -> None:
    ck = Checkpoints()
    ck.on_delivery_error(None, "ok")  # a success report, should one come: ignored
    ck.on_delivery_error("boom", "msg")
    assert ck.take_failures() == [("boom", "msg")]
    assert ck.take_failures() == []


def test_forget_drops_revoked_partitions() -> None:
    ck = Checkpoints()
    batch(ck, (0, 1), (1, 1), (2, 1))
    ck.mark_committed({1: 2})
    ck.commit_failed([1])
    ck.forget({1, 2})
    assert ck.pending() == {0: 2}
    assert ck.rewind_targets() == {0: 1}
    assert 1 not in ck.recommit
