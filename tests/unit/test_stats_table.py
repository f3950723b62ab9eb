"""Per-event statistics (etl_gate/stats.py): exact while the keys fit, past
``max_keys`` heavy hitters kept and every reported count within its error
bound, app totals always exact, the sliding window, and cost."""

from __future__ import annotations

import random

import pytest

from etl_gate.core import OUTCOMES
from etl_gate.stats import N_OUT, AppStat, EventStatsTable, merge_intervals

Key = tuple[str, str]
Interval = dict[str, dict[str, list[int]]]


def row(prio: int = -1, **decisions: tuple[int, int]) -> list[int]:
    """A worker row (kafka/telemetry.py): ``passed=(count, bytes)``, ..., the routed priority."""
    r = [0] * (2 * N_OUT) + [prio]
    for name, (count, nbytes) in decisions.items():
        i = OUTCOMES.index(name)
        r[i], r[N_OUT + i] = count, nbytes
    return r


def interval(rows: dict[Key, list[int]]) -> Interval:
    out: Interval = {}
    for (app, event), r in rows.items():
        out.setdefault(app, {})[event] = list(r)
    return out


class Truth:
    """What the table should report, kept by brute force."""

    def __init__(self) -> None:
        self.rows: dict[Key, list[int]] = {}

    def add(self, stats: Interval) -> None:
        for app, events in stats.items():
            for event, r in events.items():
                acc = self.rows.setdefault((app, event), [0] * (2 * N_OUT) + [-1])
                for i in range(2 * N_OUT):
                    acc[i] += r[i]
                if r[-1] >= 0:
                    acc[-1] = r[-1]

    def count(self, key: Key, decision: str | None = None) -> int:
        r = self.rows[key]
        return r[OUTCOMES.index(decision)] if decision else sum(r[:N_OUT])

    def apps(self) -> list[AppStat]:
        per: dict[str, list[int]] = {}
        for (app, _), r in self.rows.items():
            acc = per.setdefault(app, [0, 0, 0, 0])
            acc[0] += sum(r[:N_OUT])
            acc[1] += sum(r[N_OUT:2 * N_OUT])
            acc[2] += r[OUTCOMES.index("unregistered")]
            acc[3] += r[OUTCOMES.index("blocked")]
        return [AppStat(app, *v) for app, v in sorted(per.items())]


def zipf_intervals(seed: int, n_keys: int, intervals: int, per_interval: int,
                   s: float = 1.1) -> list[Interval]:
    """Events of a Zipf-like popularity (weight of the k-th key: 1 / k**s),
    drawn at random interval by interval; 90% pass, 10% are sampled out;
    5% of app a3's events are unregistered, app a5's are blocked."""
    rng = random.Random(seed)
    keys = [(f"a{k % 7}", f"e{k}") for k in range(n_keys)]
    weights = [1 / (k + 1) ** s for k in range(n_keys)]
    out = []
    for _ in range(intervals):
        stats: Interval = {}
        for app, event in rng.choices(keys, weights, k=per_interval):
            r = stats.setdefault(app, {}).get(event)
            if r is None:
                r = stats[app][event] = row(prio=int(event[1:]) % 3)
            roll = rng.random()
            o = (OUTCOMES.index("unregistered") if app == "a3" and roll < 0.05
                 else OUTCOMES.index("blocked") if app == "a5"
                 else OUTCOMES.index("sampled_out") if roll > 0.9 else 0)
            r[o] += 1
            r[N_OUT + o] += 100 + len(event)
        out.append(stats)
    return out


def feed(table: EventStatsTable, truth: Truth, intervals: list[Interval]) -> None:
    for stats in intervals:
        table.add(stats)
        truth.add(stats)


# --- exact ----------------------------------------------------------------------------------------


def test_exact_while_the_keys_fit() -> None:
    table, truth = EventStatsTable(max_keys=500), Truth()
    every_key = interval({(f"a{k % 7}", f"e{k}"): row(passed=(1, 10)) for k in range(500)})
    feed(table, truth, [every_key, *zipf_intervals(1, n_keys=500, intervals=50, per_interval=400)])
    assert len(truth.rows) == 500  # exactly max_keys keys: none evicted
    assert not table.approximate
    rows = table.top(10**9)
    assert {(s.app, s.event, s.decision): s.count for s in rows} == {
        (a, e, d): truth.count((a, e), d) for (a, e) in truth.rows for d in OUTCOMES
        if truth.count((a, e), d)}
    assert all(s.error == 0 for s in rows)
    counts = [s.count for s in rows]
    assert counts == sorted(counts, reverse=True)
    top = table.top(5)
    assert [s.count for s in top] == counts[:5]


def test_top_by_bytes_and_filters() -> None:
    table = EventStatsTable()
    table.add(interval({
        ("1", "small_many"): row(0, passed=(1000, 10_000)),
        ("1", "big_few"): row(1, passed=(10, 1_000_000), sampled_out=(5, 500_000)),
        ("2", "mid"): row(-1, unregistered=(300, 30_000), blocked=(200, 90_000)),
    }))
    assert [(s.event, s.decision) for s in table.top(3)] == [
        ("small_many", "passed"), ("mid", "unregistered"), ("mid", "blocked")]
    assert [(s.event, s.decision) for s in table.top(2, by="bytes")] == [
        ("big_few", "passed"), ("big_few", "sampled_out")]
    assert [(s.event, s.decision) for s in table.top(10, app="2")] == [
        ("mid", "unregistered"), ("mid", "blocked")]
    assert [(s.event, s.count) for s in table.top(10, decision="sampled_out")] == [("big_few", 5)]
    assert table.top(10, app="1", decision="blocked") == []
    assert table.top(10, app="nope") == []


# --- approximate ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_past_max_keys_heavy_hitters_stay_and_every_count_is_within_its_bound(seed: int) -> None:
    table, truth = EventStatsTable(max_keys=200), Truth()
    feed(table, truth, zipf_intervals(seed, n_keys=3000, intervals=300, per_interval=400))
    assert table.approximate and len(truth.rows) > 1000
    rows = table.top(10**9)
    assert rows and any(s.error for s in rows)
    for s in rows:  # per decision too: what a key lost before entering is at most its error
        true = truth.count((s.app, s.event), s.decision)
        assert s.count <= true <= s.count + s.error, s
    reported: dict[Key, list[int]] = {}
    for s in rows:
        reported.setdefault((s.app, s.event), [0, s.error])[0] += s.count
    # The error a newcomer gets now bounds what any key no longer kept had.
    table.add(interval({("probe", "new"): row(passed=(1, 1))}))
    (probe,) = table.top(1, app="probe")
    floor = probe.error
    assert 0 < floor < max(truth.count(k) for k in truth.rows) // 10
    lost = [truth.count(k) for k in truth.rows if k not in reported]
    assert lost and max(lost) <= floor
    # So every heavy hitter (above that floor) is kept; the heaviest, seen
    # before anything was evicted, exactly; the top rows are the truly largest.
    heavy = [k for k in truth.rows if truth.count(k) > floor]
    assert len(heavy) >= 20 and all(k in reported for k in heavy)
    for key in sorted(truth.rows, key=truth.count, reverse=True)[:5]:
        assert reported[key] == [truth.count(key), 0], key
    true_rows = sorted(((truth.count(k, d), k, d) for k in truth.rows for d in OUTCOMES), reverse=True)
    assert [(s.count, (s.app, s.event), s.decision) for s in table.top(10)] == true_rows[:10]


def test_a_key_evicted_again_and_again_stays_within_its_bound() -> None:
    # One steady key among a crowd of one-off keys: it is evicted, comes back,
    # is evicted again; its count must never claim less than it lost.
    table, truth = EventStatsTable(max_keys=10), Truth()
    for i in range(200):
        stats = {("crowd", f"c{i}-{j}"): row(passed=(2, 2)) for j in range(10)}
        stats[("steady", "s")] = row(passed=(1, 1))
        feed(table, truth, [interval(stats)])
        for s in table.top(10**9):
            assert s.count <= truth.count((s.app, s.event)) <= s.count + s.error, (i, s)


def test_app_totals_stay_exact_when_the_keys_do_not() -> None:
    table, truth = EventStatsTable(max_keys=100), Truth()
    feed(table, truth, zipf_intervals(6, n_keys=2000, intervals=100, per_interval=300))
    assert table.approximate
    assert table.app_stats() == truth.apps()
    apps = {a.app: a for a in table.app_stats()}
    assert apps["a3"].unregistered > 0 and apps["a3"].blocked == 0
    assert apps["a3"].useless_ratio == pytest.approx(apps["a3"].unregistered / apps["a3"].events)
    assert apps["a5"].useless_ratio == 1.0  # every a5 event is blocked
    assert apps["a1"].useless_ratio == 0.0
    assert AppStat("x", 0, 0, 0, 0).useless_ratio == 0.0


# --- window ---------------------------------------------------------------------------------------


def test_window_versus_since_start() -> None:
    table = EventStatsTable(window_buckets=3)
    minutes = [
        {("1", "a"): row(0, passed=(100, 1000))},
        {("1", "a"): row(0, passed=(10, 100)), ("1", "b"): row(2, passed=(50, 500))},
        {("1", "a"): row(1, passed=(1, 10))},
        {("1", "c"): row(0, passed=(7, 70))},
    ]
    for i, m in enumerate(minutes):
        if i:
            table.rotate()
        table.add(interval(m))

    def counts(window: int) -> dict[str, int]:
        return {s.event: s.count for s in table.top(10, window_minutes=window)}

    assert counts(0) == {"a": 111, "b": 50, "c": 7}  # since start: also the minute the window dropped
    assert counts(1) == {"c": 7}
    assert counts(2) == {"a": 1, "c": 7}
    assert counts(3) == {"a": 11, "b": 50, "c": 7}
    assert counts(60) == counts(3)  # only window_buckets minutes are kept
    (a,) = table.top(1, app="1", window_minutes=2, decision="passed", by="bytes")
    assert (a.event, a.bytes) == ("c", 70)
    assert {s.event: s.priority for s in table.top(10, window_minutes=3)} == {"a": "P1", "b": "P2", "c": "P0"}
    # App totals are since start.
    assert table.app_stats() == [AppStat("1", 168, 1680, 0, 0)]


# --- priority and cost ----------------------------------------------------------------------------


def test_cost_is_count_times_the_unit_price_of_the_routed_priority() -> None:
    table = EventStatsTable(unit_price=(1.0, 0.1, 0.01))
    table.add(interval({
        ("1", "p0"): row(0, passed=(30, 300), sampled_out=(70, 700)),
        ("1", "p1"): row(1, passed=(20, 200), throttled=(5, 50)),
        ("2", "monitored"): row(2, unregistered=(40, 400)),  # monitor mode: routed as P2
        ("2", "dropped"): row(-1, unregistered=(9, 90), blocked=(4, 40)),
    }))
    table.add(interval({("1", "p1"): row(0, passed=(10, 100))}))  # now routed as P0
    got = {(s.event, s.decision): (s.priority, s.cost) for s in table.top(100)}
    assert got[("p0", "passed")] == ("P0", pytest.approx(30 * 1.0))
    assert got[("p0", "sampled_out")] == ("P0", 0.0)  # not routed: no cost
    assert got[("p1", "passed")] == ("P0", pytest.approx(30 * 1.0))  # the last routed priority
    assert got[("p1", "throttled")][1] == 0.0
    assert got[("monitored", "unregistered")] == ("P2", pytest.approx(40 * 0.01))
    assert got[("dropped", "unregistered")] == ("", 0.0)
    assert got[("dropped", "blocked")] == ("", 0.0)


def test_merge_intervals_adds_the_workers_rows() -> None:
    a = interval({("1", "x"): row(1, passed=(3, 30)), ("2", "y"): row(-1, blocked=(1, 5))})
    b = interval({("1", "x"): row(2, passed=(4, 40), sampled_out=(1, 10))})
    merged = merge_intervals([a, b])
    assert merged == {"1": {"x": row(2, passed=(7, 70), sampled_out=(1, 10))},
                      "2": {"y": row(-1, blocked=(1, 5))}}
    assert a["1"]["x"] == row(1, passed=(3, 30))  # inputs untouched
    assert EventStatsTable().interval_counts(merged) == {("1", "x"): 8, ("2", "y"): 1}
