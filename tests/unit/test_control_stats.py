"""GetEventStats end to end on loopback: a real server from ``build_server``
around a real EventStatsTable (filled with hand-made worker intervals), driven
by the real client and ``etl-gate ctl stats``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from etl_gate import cli
from etl_gate.config import parse_config
from etl_gate.control import serde
from etl_gate.control.client import CallError, ClientOptions, ControlClient
from etl_gate.control.ctl import human_bytes
from etl_gate.control.model import EventStatsReport, GateStatus, InvalidRequest, RulesInfo, SurgingEvent
from etl_gate.control.server import ControlServer, build_server
from etl_gate.core import OUTCOMES
from etl_gate.core.rules import RulesSnapshot
from etl_gate.stats import N_OUT, AppStat, EventStat, EventStatsTable

P0, P1, P2, NOT_ROUTED = 0, 1, 2, -1
PRICES = (0.01, 0.001, 0.0001)


def row(prio: int = NOT_ROUTED, **decisions: tuple[int, int]) -> list[int]:
    """A worker row (kafka/telemetry.py): ``passed=(count, bytes)``, ..., the routed priority."""
    r = [0] * (2 * N_OUT) + [prio]
    for name, (count, nbytes) in decisions.items():
        i = OUTCOMES.index(name)
        r[i], r[N_OUT + i] = count, nbytes
    return r


# Two minutes of two workers: app -> event -> row.
OLDER_MINUTE = [
    {"1128": {"video_play": row(P0, passed=(300, 300_000)),
              "feed_scroll": row(P2, passed=(100, 10_000), sampled_out=(900, 90_000))},
     "7": {"login": row(unregistered=(100, 20_000))}},
    {"1128": {"video_play": row(P0, passed=(100, 100_000)),
              "debug_trace": row(blocked=(50, 1_000_000))}},
]
LAST_MINUTE = [
    {"1128": {"video_play": row(P0, passed=(100, 100_000))},
     "7": {"login": row(unregistered=(200, 40_000)),
           "like": row(P1, passed=(250, 15_000), throttled=(20, 1_000))}},
    {"": {"invalid_json": row(malformed=(5, 500))}},
]
TOTAL = 300 + 100 + 100 + 900 + 100 + 50 + 100 + 200 + 250 + 20 + 5  # 2125 events


class TableSource:
    """What the supervisor serves: the table, and the surge detector's view."""

    def __init__(self, table: EventStatsTable, surging: dict[tuple[str, str], float] | None = None) -> None:
        self.table = table
        self.surges = surging or {}
        self.lock = threading.Lock()

    def top(self, n: int, by: str, app: str | None, decision: str | None,
            window_minutes: int) -> list[EventStat]:
        with self.lock:
            return self.table.top(n, by, app, decision, window_minutes)

    def app_stats(self) -> list[AppStat]:
        with self.lock:
            return self.table.app_stats()

    @property
    def approximate(self) -> bool:
        return self.table.approximate

    def surging(self) -> dict[tuple[str, str], float]:
        return dict(self.surges)


def filled_table(max_keys: int = 100_000) -> EventStatsTable:
    table = EventStatsTable(max_keys=max_keys, window_buckets=15, unit_price=PRICES)
    for part in OLDER_MINUTE:
        table.add(part)
    table.rotate()
    for part in LAST_MINUTE:
        table.add(part)
    return table


class NoRules:
    def push_snapshot(self, snapshot: RulesSnapshot) -> Any:
        raise AssertionError("not in these tests")

    apply_delta = push_snapshot

    def info(self) -> RulesInfo | None:
        return None

    def snapshot(self) -> RulesSnapshot | None:
        return None


class IdleStatus:
    def status(self) -> GateStatus:
        return GateStatus("stats-gate", False, None)

    def wait_for_change(self, seq: int, timeout: float) -> int:
        threading.Event().wait(min(timeout, 0.05))
        return 0


@dataclass
class Gate:
    server: ControlServer
    source: TableSource | None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def client(self, **options: Any) -> ControlClient:
        return ControlClient(self.target, ClientOptions(**{"timeout": 10, **options}))


@pytest.fixture
def make_gate(tmp_path: Path) -> Iterator[Callable[..., Gate]]:
    gates: list[Gate] = []

    def make(source: TableSource | None, **control: Any) -> Gate:
        cfg = parse_config({"control": {"listen": "127.0.0.1:0", **control}}, base_dir=str(tmp_path))
        server = build_server(cfg, NoRules(), IdleStatus(), stats_source=source)
        server.start()
        gates.append(Gate(server, source))
        return gates[-1]

    yield make
    for g in gates:
        g.server.stop(0)


@pytest.fixture
def gate(make_gate: Callable[..., Gate]) -> Gate:
    return make_gate(TableSource(filled_table(), {("7", "like"): 12.5, ("1128", "video_play"): 3.0}))


def keyed(rows: list[EventStat]) -> list[tuple[str, str, str, int]]:
    return [(r.app, r.event, r.decision, r.count) for r in rows]


# --- GetEventStats ----------------------------------------------------------------------------------


def test_top_by_count(gate: Gate) -> None:
    with gate.client() as c:
        report = c.event_stats(top=4)
    assert keyed(report.rows) == [
        ("1128", "feed_scroll", "sampled_out", 900), ("1128", "video_play", "passed", 500),
        ("7", "login", "unregistered", 300), ("7", "like", "passed", 250)]
    assert report.total_count == TOTAL and not report.approximate
    video = report.rows[1]
    assert (video.bytes, video.priority, video.error) == (500_000, "P0", 0)
    assert video.cost == pytest.approx(500 * PRICES[P0])
    assert report.rows[2].priority == "" and report.rows[2].cost == 0.0  # dropped: never routed
    assert report.apps == [AppStat("", 5, 500, 0, 0), AppStat("1128", 1550, 1_600_000, 0, 50),
                           AppStat("7", 570, 76_000, 300, 0)]
    assert report.surging == [SurgingEvent("1128", "video_play", 3.0), SurgingEvent("7", "like", 12.5)]
    with gate.client() as c:
        assert len(c.event_stats().rows) == 8  # default 20: every row there is


def test_top_by_bytes(gate: Gate) -> None:
    with gate.client() as c:
        report = c.event_stats(top=3, by="bytes")
    assert [(r.event, r.decision, r.bytes) for r in report.rows] == [
        ("debug_trace", "blocked", 1_000_000), ("video_play", "passed", 500_000),
        ("feed_scroll", "sampled_out", 90_000)]


def test_app_and_decision_filters(gate: Gate) -> None:
    with gate.client() as c:
        seven = c.event_stats(app="7")
        unregistered = c.event_stats(decision="unregistered")
        both = c.event_stats(app="1128", decision="blocked")
        neither = c.event_stats(app="7", decision="blocked")
    assert keyed(seven.rows) == [("7", "login", "unregistered", 300), ("7", "like", "passed", 250),
                                 ("7", "like", "throttled", 20)]
    assert seven.total_count == 570
    assert [a.app for a in seven.apps] == ["7"] and seven.surging == [SurgingEvent("7", "like", 12.5)]
    assert keyed(unregistered.rows) == [("7", "login", "unregistered", 300)]
    assert unregistered.total_count == 300 and len(unregistered.apps) == 3  # apps: only --app filters
    assert keyed(both.rows) == [("1128", "debug_trace", "blocked", 50)]
    assert neither.rows == [] and neither.total_count == 0


def test_window(gate: Gate) -> None:
    with gate.client() as c:
        last = c.event_stats(window_minutes=1)
        both = c.event_stats(window_minutes=2)
        since_start = c.event_stats(window_minutes=0)
    assert keyed(last.rows) == [("7", "like", "passed", 250), ("7", "login", "unregistered", 200),
                                ("1128", "video_play", "passed", 100), ("7", "like", "throttled", 20),
                                ("", "invalid_json", "malformed", 5)]
    assert last.total_count == 575
    assert both.total_count == since_start.total_count == TOTAL
    assert keyed(both.rows) == keyed(since_start.rows)
    assert last.apps == since_start.apps  # app totals are since start


def test_approximate_past_max_keys(make_gate: Callable[..., Gate]) -> None:
    table = filled_table(max_keys=10)
    # 30 rare events of a new app: past 10 x 1.1 keys, the smallest are evicted.
    table.add({"99": {f"rare{i}": row(P2, passed=(1 + i % 3, 100)) for i in range(30)}})
    table.add({"99": {"late": row(P2, passed=(40, 4_000))}})
    g = make_gate(TableSource(table))
    with g.client() as c:
        report = c.event_stats(top=20)
    assert report.approximate
    assert report.rows[0].event == "feed_scroll" and report.rows[0].error == 0  # heavy hitters exact
    late = next(r for r in report.rows if r.event == "late")
    assert late.count == 40 and late.error > 0  # a newcomer after an eviction: a lower bound
    assert {a.app: a.events for a in report.apps}["99"] == sum(1 + i % 3 for i in range(30)) + 40


def test_a_bad_request_is_invalid_argument_naming_the_field(gate: Gate) -> None:
    with gate.client() as c:
        with pytest.raises(CallError) as info:
            c.event_stats(decision="dropped")
        assert info.value.code == "INVALID_ARGUMENT"
        assert info.value.details.startswith("decision: unknown decision 'dropped'")
        assert "passed, sampled_out, unregistered, blocked, malformed, throttled" in info.value.details
        with pytest.raises(CallError) as info:
            c._call(c._stub.GetEventStats, serde.EventStatsRequest(by=7))  # a newer client's order
        assert info.value.code == "INVALID_ARGUMENT" and info.value.details.startswith("by: ")
        with pytest.raises(CallError) as info:
            c.event_stats(top=serde.MAX_STATS_TOP + 1)
        assert info.value.code == "INVALID_ARGUMENT" and info.value.details.startswith("top: ")
        with pytest.raises(InvalidRequest, match="by: expected 'count' or 'bytes'"):
            c.event_stats(by="rows")  # cannot be sent at all
        with pytest.raises(InvalidRequest):
            c.event_stats(window_minutes=-1)


def test_without_a_stats_source_the_call_is_unavailable(make_gate: Callable[..., Gate]) -> None:
    g = make_gate(None)
    with g.client() as c:
        with pytest.raises(CallError) as info:
            c.event_stats()
    assert (info.value.code, info.value.details) == ("UNAVAILABLE", "statistics are disabled")


def test_a_failing_source_is_an_internal_error(make_gate: Callable[..., Gate]) -> None:
    source = TableSource(filled_table())
    source.surges = None  # type: ignore[assignment]  # surging() then raises
    g = make_gate(source)
    with g.client() as c:
        with pytest.raises(CallError) as info:
            c.event_stats()
    assert info.value.code == "INTERNAL"


def test_reads_follow_auth_reads(make_gate: Callable[..., Gate], tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text("w-token\nr-token read\n")
    open_reads = make_gate(TableSource(filled_table()), tokens_file="tokens")
    guarded = make_gate(TableSource(filled_table()), tokens_file="tokens", auth_reads=True)
    with open_reads.client() as c:
        assert c.event_stats().total_count == TOTAL
    with guarded.client() as anon, guarded.client(token="r-token") as reader:
        with pytest.raises(CallError) as info:
            anon.event_stats()
        assert info.value.code == "UNAUTHENTICATED"
        assert reader.event_stats().total_count == TOTAL


def test_serde_round_trip() -> None:
    report = serde.event_stats_from_pb(serde.event_stats_to_pb(EventStatsReport(
        rows=[EventStat("a", "e", "passed", 3, 30, "P1", 0.5, 2)], apps=[AppStat("a", 4, 40, 1, 0)],
        approximate=True, surging=[SurgingEvent("a", "e", 1.5)], total_count=4)))
    assert report.rows == [EventStat("a", "e", "passed", 3, 30, "P1", 0.5, 2)]
    assert report.apps == [AppStat("a", 4, 40, 1, 0)] and report.apps[0].useless_ratio == 0.25
    assert report.approximate and report.surging == [SurgingEvent("a", "e", 1.5)]
    assert report.total_count == 4
    query = serde.stats_query_from_pb(serde.EventStatsRequest())
    assert (query.top, query.by, query.app, query.decision, query.window_minutes) == (20, "count", None,
                                                                                      None, 0)


# --- etl-gate ctl stats -------------------------------------------------------------------------------


def ctl(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli.main(["ctl", "stats", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1024, 1536, 1_000_000, 5 * 1024**3, 3 * 1024**5)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "976.6 KiB", "5.0 GiB", "3.0 PiB"]
    assert human_bytes(1024**2 - 1) == "1.0 MiB"


def test_ctl_stats_table(gate: Gate, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = ctl(capsys, "--target", gate.target, "--top", "3")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"top 3 by count since start, {TOTAL:,} matching events in all"
    assert lines[1].split() == ["app", "event", "decision", "priority", "count", "bytes", "cost", "share"]
    assert lines[2].split() == ["1128", "feed_scroll", "sampled_out", "P2", "900", "87.9", "KiB", "0",
                                f"{100 * 900 / TOTAL:.1f}%"]
    assert lines[3].split() == ["1128", "video_play", "passed", "P0", "500", "488.3", "KiB", "5.00",
                                f"{100 * 500 / TOTAL:.1f}%"]
    assert lines[4].split() == ["7", "login", "unregistered", "-", "300", "58.6", "KiB", "0",
                                f"{100 * 300 / TOTAL:.1f}%"]
    assert "~" not in out and "approximate" not in out
    apps = lines.index("apps (3, since start, exact):")
    assert lines[apps + 1].split() == ["app", "events", "unregistered", "blocked", "useless", "ratio"]
    assert lines[apps + 2].split() == ["1128", "1,550", "0.0%", "3.2%", "0.032"]
    assert lines[apps + 3].split() == ["7", "570", "52.6%", "0.0%", "0.526"]
    assert lines[apps + 4].split() == ["-", "5", "0.0%", "0.0%", "0.000"]
    assert lines[apps + 5:] == ["surging (2):", "  app   event       baseline/s",
                                "  1128  video_play         3.0", "  7     like              12.5"]


def test_ctl_stats_filters_and_window(gate: Gate, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = ctl(capsys, "--target", gate.target, "--app", "7", "--decision", "passed",
                    "--window", "1", "--by", "bytes")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "top 1 by bytes over the last 1 min, 250 matching events in all"
    assert lines[2].split() == ["7", "like", "passed", "P1", "250", "14.6", "KiB", "0.25", "100.0%"]
    assert "apps (1, since start, exact):" in lines and "surging (1):" in lines
    code, out = ctl(capsys, "--target", gate.target, "--app", "nobody")
    assert code == 0 and "  (no events)" in out and "  (no apps)" in out and "no surging events" in out


def test_ctl_stats_marks_approximate_counts(make_gate: Callable[..., Gate],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    table = filled_table(max_keys=10)
    table.add({"99": {f"rare{i}": row(P2, passed=(1, 100)) for i in range(30)}})
    table.add({"99": {"late": row(P2, passed=(400, 4_000))}})
    g = make_gate(TableSource(table))
    code, out = ctl(capsys, "--target", g.target, "--top", "3")
    assert code == 0
    lines = out.splitlines()
    (late,) = [line for line in lines if " late " in line]
    (error,) = [r.error for r in table.top(100) if r.event == "late"]
    assert error > 0 and late.split()[4] == "~400"
    assert ("~ approximate (more keys than observe.stats_max_keys): a count marked ~ may be short by "
            f"up to {error:,}\n") in out
    # Shares are of every event (app totals: exact), not only of the keys kept.
    assert lines[0] == f"top 3 by count since start, {TOTAL + 30 + 400:,} matching events in all"
    assert "... and 1 more app" in out
    # Approximate, but none of the rows shown is short.
    code, out = ctl(capsys, "--target", g.target, "--top", "1")
    assert "~" not in out and "the counts shown are exact" in out


def test_ctl_stats_json(gate: Gate, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = ctl(capsys, "--target", gate.target, "--top", "2", "--json")
    assert code == 0
    (doc,) = orjson.loads(out)
    assert doc["target"] == gate.target and doc["ok"]
    result = doc["result"]
    assert [r["event"] for r in result["rows"]] == ["feed_scroll", "video_play"]
    assert result["rows"][1] == {"app": "1128", "event": "video_play", "decision": "passed", "count": 500,
                                 "bytes": 500_000, "priority": "P0", "cost": pytest.approx(5.0),
                                 "error": 0}
    assert result["total_count"] == TOTAL and result["approximate"] is False
    assert {a["app"]: a["useless_ratio"] for a in result["apps"]}["7"] == pytest.approx(300 / 570)
    assert result["surging"][1] == {"app": "7", "event": "like", "baseline_per_second": 12.5}


def test_ctl_stats_fans_out_and_fails_if_any_target_fails(gate: Gate, make_gate: Callable[..., Gate],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    disabled = make_gate(None)
    code, out = ctl(capsys, "--target", f"{gate.target},{disabled.target}", "--top", "1")
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"{gate.target}:"
    assert lines[1].startswith("top 1 by count since start")
    assert lines[-1] == f"{disabled.target}: FAILED UNAVAILABLE: statistics are disabled"
    code, out = ctl(capsys, "--target", gate.target, "--target", gate.target)  # once each
    assert code == 0 and out.startswith("top 8 by count")


def test_ctl_stats_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["--decision", "dropped"], ["--by", "rows"], ["--top", "0"], ["--window", "-1"]):
        with pytest.raises(SystemExit) as info:
            cli.main(["ctl", "stats", *args])
        assert info.value.code == 2
    capsys.readouterr()
