"""Recovery after a crash: which published files hold uncommitted offsets."""

from __future__ import annotations

from pathlib import Path

from etl_gate.dump.fs import LocalStorage
from etl_gate.dump.journal import Journal, JournalEntry, decode, encode, plan_recovery
from etl_gate.dump.layout import Layout
from etl_gate.dump.writer import DoneFile, RolledGroup


def entry(first: int, last: int) -> JournalEntry:
    return JournalEntry(first, last, (f"a-{first}", f"b-{first}"))


def test_rolls_from_the_committed_offset_on_are_deleted() -> None:
    plan = plan_recovery([entry(0, 99), entry(100, 199), entry(200, 250)], committed=100, low=0)
    assert plan.delete == ("a-100", "b-100", "a-200", "b-200") and plan.start is None


def test_everything_committed_deletes_nothing() -> None:
    plan = plan_recovery([entry(0, 99), entry(100, 199)], committed=200, low=0)
    assert plan.delete == () and plan.start is None


def test_no_commit_yet_means_from_the_first_offset_kafka_still_has() -> None:
    assert plan_recovery([entry(5, 9)], committed=None, low=0).delete == ("a-5", "b-5")
    # Retention overtook rolls that were never committed: they cannot be
    # replayed, so they stay, and consuming resumes after them.
    plan = plan_recovery([entry(0, 99), entry(100, 199)], committed=None, low=150)
    assert plan.delete == () and plan.start == 200 and plan.kept_straddling == 1


def test_offsets_reset_by_hand_inside_a_roll_keep_it_and_skip_it() -> None:
    plan = plan_recovery([entry(0, 99), entry(100, 199), entry(200, 299)], committed=150, low=0)
    assert plan.delete == ("a-200", "b-200") and plan.start == 200


def test_journal_round_trip_and_recover(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    layout = Layout(storage, "P0")
    journal = Journal({"t": layout})
    files = []
    for name in ("x.parquet", "y.parquet"):
        p = tmp_path / "P0" / "dt=2026-01-01" / "hour=00" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"data")
        files.append(DoneFile(0, "", str(p), 1, 4))
    groups = [RolledGroup("t", 0, 10, 19, (files[0],), 1, 4, "size"),
              RolledGroup("t", 0, 20, 29, (files[1],), 1, 4, "age")]
    assert decode(encode(groups)) == [JournalEntry(10, 19, (files[0].final,)),
                                      JournalEntry(20, 29, (files[1].final,))]
    journal.record("t", 0, groups)
    orphan = Path(layout.tmp_path("t", 0))
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"half a file")
    plan, deleted = journal.recover("t", 0, committed=20, low=0)
    assert deleted == 1 and plan.delete == (files[1].final,)
    assert Path(files[0].final).exists() and not Path(files[1].final).exists()
    assert not orphan.exists()
    # Recovering again (another crash before anything new) is harmless.
    assert journal.recover("t", 0, committed=20, low=0)[1] == 0
    assert journal.recover("t", 1, committed=None, low=0)[1] == 0  # no journal yet
