"""The progress line: shown on a terminal only, rate-limited, with rate and ETA."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from etl_gate.cli import main
from etl_gate.config import parse_config
from etl_gate.core import parse_snapshot
from etl_gate.progress import Progress
from etl_gate.replay import replay


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(total: float | None = None, stream: io.StringIO | None = None, force: bool = False,
         unit: str = "events") -> tuple[Progress, io.StringIO, FakeClock]:
    """A progress line on a fake terminal (or ``stream``) with a clock the test moves."""
    clock = FakeClock()
    out = stream if stream is not None else FakeTTY()
    return Progress("job", total, unit=unit, stream=out, force=force, clock=clock), out, clock


def test_line_on_a_tty_with_rate_share_and_eta() -> None:
    p, out, clock = make(total=1000)
    p.update(100)
    assert out.getvalue() == ""  # nothing before the first interval
    clock.now += 1.0
    p.update(150)
    assert out.getvalue() == "\rjob  250 events  250 events/s  25%  ETA 3.0s"
    clock.now += 1.0
    p.update(250)
    assert out.getvalue().endswith("\rjob  500 events  250 events/s  50%  ETA 2.0s")
    assert "\n" not in out.getvalue()


def test_rate_limited_to_the_interval() -> None:
    p, out, clock = make()
    for _ in range(1000):  # 10 s of updates, one every 10 ms
        clock.now += 0.01
        p.update(10)
    lines = out.getvalue().split("\r")[1:]
    assert 36 <= len(lines) <= 40  # at most 4 a second
    assert lines[-1].startswith("job  9,") and lines[-1].endswith(" events  1.0k events/s")


def test_silent_when_not_a_tty() -> None:
    p, out, clock = make(total=10, stream=io.StringIO())
    assert not p.enabled
    for _ in range(10):
        clock.now += 1.0
        p.update(1)
    p.close()
    assert out.getvalue() == ""
    assert p.done == 10  # still counts


def test_forced_off_a_tty_writes_whole_lines() -> None:
    p, out, clock = make(stream=io.StringIO(), force=True)
    clock.now += 1.0
    p.update(5)
    clock.now += 1.0
    p.update(5)
    p.close()
    assert out.getvalue().splitlines() == ["job  5 events  5 events/s", "job  10 events  5 events/s",
                                           "job  10 events in 2.0s, 5 events/s"]
    assert "\r" not in out.getvalue()


def test_close_prints_a_final_line_once() -> None:
    p, out, clock = make(total=2_000_000)
    clock.now += 0.5
    p.update(1_000_000)  # first interval passed: a progress line
    clock.now += 0.1
    p.update(1_000_000)  # rate-limited: no line
    clock.now += 0.4
    with p:
        pass
    p.close()
    text = out.getvalue()
    final = text.split("\r")[-1]
    assert final.rstrip(" \n") == "job  2,000,000 events in 1.0s, 2.0M events/s"
    assert final.endswith(" \n")  # padded over the longer progress line, then ends the line
    assert text.count("\n") == 1


def test_a_shorter_line_overwrites_a_longer_one() -> None:
    p, out, clock = make(total=100)
    clock.now += 1.0
    p.update(1)
    long = out.getvalue()
    clock.now += 1000.0
    p.update(98)
    new = out.getvalue()[len(long):]
    assert new.startswith("\r") and len(new) >= len(long)


def test_track_passes_items_through_and_reports_in_blocks() -> None:
    p, out, clock = make(total=10_000, unit="bytes")
    positions = iter(range(1000, 100_000, 1000))
    seen = []
    for x in p.track(range(10), every=4, at=lambda: next(positions)):
        seen.append(x)
        clock.now += 1.0
    assert seen == list(range(10))
    assert p.done == 10 and p.at == 3000  # reports after items 4, 8 and the last 2
    assert out.getvalue().endswith("30%  ETA 0:23")


def test_track_is_the_iterable_itself_when_off() -> None:
    p, _, _ = make(stream=io.StringIO())
    items = [1, 2, 3]
    assert p.track(items) is items


def test_no_total_or_zero_total_gives_no_share() -> None:
    for total in (None, 0):
        p, out, clock = make(total=total)
        clock.now += 1.0
        p.update(3)
        assert out.getvalue() == "\rjob  3 events  3 events/s"


# --- wired into the commands ------------------------------------------------------------------

def test_replay_shows_progress_on_a_tty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = tmp_path / "in.jsonl"
    events.write_bytes(b'{"app_id":"1","event":"a"}\n' * 5000)
    err = FakeTTY()
    monkeypatch.setattr("sys.stderr", err)
    snapshot = parse_snapshot({"version": 1, "rules": [{"app": "1", "event": "a"}]})
    summary = replay(parse_config({}), snapshot, str(events), tmp_path / "out")
    assert summary["events"] == 5000
    assert err.getvalue().startswith("\rreplay  ")
    assert "replay  5,000 events in " in err.getvalue() and err.getvalue().endswith("\n")


def test_gen_shows_progress_on_a_tty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    err = FakeTTY()
    monkeypatch.setattr("sys.stderr", err)
    out = tmp_path / "events.jsonl"
    assert main(["gen", "--count", "5000", "--output", str(out)]) == 0
    assert len(out.read_bytes().splitlines()) == 5000
    assert "gen  5,000 events in " in err.getvalue()
    orjson.loads(out.read_bytes().splitlines()[0])


def test_gen_is_silent_off_a_tty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gen", "--count", "100", "--output", str(tmp_path / "e.jsonl")]) == 0
    assert capsys.readouterr().err == ""
