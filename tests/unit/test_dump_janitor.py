"""TTL janitor on a fake tree with an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from etl_gate.dump.fs import LocalStorage
from etl_gate.dump.janitor import Janitor, is_expired
from etl_gate.dump.metrics import DumpMetrics
from etl_gate.dump.partition import HOUR_MS, hour_dir, hour_index

NOW = datetime(2026, 11, 21, 12, 30, tzinfo=UTC).timestamp()
TTL = {"P0": 400, "P1": 180, "P2": 90}


def hours_ago(hours: int) -> int:
    return hour_index(int(NOW * 1000)) - hours


def make_tree(root: Path, priority: str, hours: list[int]) -> None:
    for h in hours:
        d = root / priority / hour_dir(h)
        d.mkdir(parents=True, exist_ok=True)
        (d / "part-events.p0-0-1-2.parquet").write_bytes(b"x")


def partitions(root: Path, priority: str) -> set[str]:
    return {f"{p.parent.name}/{p.name}" for p in (root / priority).glob("dt=*/hour=*")}


def test_expiry_is_by_the_end_of_the_hour() -> None:
    now_ms = int(NOW * 1000)
    ttl_ms = 90 * 86_400_000
    # The hour that ends exactly TTL ago is expired; the next one is not.
    last_expired = (now_ms - ttl_ms) // HOUR_MS - 1
    assert is_expired(last_expired, now_ms, 90)
    assert not is_expired(last_expired + 1, now_ms, 90)


@pytest.mark.parametrize("dry_run", [False, True])
def test_deletes_exactly_the_expired_partitions_per_priority(tmp_path: Path, dry_run: bool) -> None:
    days = [0, 1, 89, 91, 179, 181, 399, 401, 1000]
    for prio in TTL:
        make_tree(tmp_path, prio, [hours_ago(d * 24) for d in days])
    (tmp_path / "P0" / "_journal").mkdir()
    (tmp_path / "P0" / "notes").mkdir()
    (tmp_path / "P0" / "dt=garbage").mkdir()
    before = {p: partitions(tmp_path, p) for p in TTL}
    metrics = DumpMetrics()
    janitor = Janitor(LocalStorage(tmp_path), TTL, dry_run=dry_run, clock=lambda: NOW,
                      metrics=metrics)
    for prio, ttl in TTL.items():
        report = janitor.run(prio)
        expected = {hour_dir(hours_ago(d * 24)) for d in days if d > ttl}
        assert set(report.deleted) == expected, prio
        assert report.kept == len(days) - len(expected)
        left = partitions(tmp_path, prio)
        assert left == (before[prio] if dry_run else before[prio] - expected)
        action = "would_delete" if dry_run else "deleted"
        assert metrics.registry.get_sample_value(
            "etl_gate_dump_janitor_partitions_total", {"priority": prio, "action": action}) \
            == len(expected)
    if not dry_run:  # emptied day folders go too; what is not a partition stays
        assert not (tmp_path / "P2" / hour_dir(hours_ago(1000 * 24)).split("/")[0]).exists()
    assert all((tmp_path / "P0" / n).exists() for n in ("_journal", "notes", "dt=garbage"))


def test_never_deletes_a_partition_still_being_written(tmp_path: Path) -> None:
    old = [hours_ago(100 * 24), hours_ago(100 * 24 + 1)]
    make_tree(tmp_path, "P2", old)
    report = Janitor(LocalStorage(tmp_path), TTL, clock=lambda: NOW).run("P2", active={old[0]})
    assert report.skipped_active == [hour_dir(old[0])]
    assert report.deleted == [hour_dir(old[1])]
    assert partitions(tmp_path, "P2") == {hour_dir(old[0])}


def test_a_day_folder_with_hours_left_stays(tmp_path: Path) -> None:
    # 00:00..12:00 of the day that turns 90 days old at 12:30 today: hours up
    # to 11 are expired, 12 is not; the day folder stays.
    day0 = hours_ago(90 * 24) - 12
    make_tree(tmp_path, "P2", [day0 + h for h in range(13)])
    report = Janitor(LocalStorage(tmp_path), TTL, clock=lambda: NOW).run("P2")
    assert len(report.deleted) == 12 and report.kept == 1
    assert partitions(tmp_path, "P2") == {hour_dir(day0 + 12)}


def test_moving_the_clock_expires_more(tmp_path: Path) -> None:
    make_tree(tmp_path, "P1", [hours_ago(180 * 24 - 2)])
    now = [NOW]
    janitor = Janitor(LocalStorage(tmp_path), TTL, clock=lambda: now[0])
    assert janitor.run("P1").deleted == []
    now[0] += 2 * 3600
    assert janitor.run("P1").deleted == []  # the hour has not ended TTL ago yet
    now[0] += 3600
    assert len(janitor.run("P1").deleted) == 1
