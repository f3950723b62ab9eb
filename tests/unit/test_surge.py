"""Surge detection (moving baseline, factor, floor, calm-down) and the
protections a worker applies, with no clock of their own."""

from __future__ import annotations

from etl_gate.core import PASSED, THROTTLED
from etl_gate.core.surge import SurgeDetector, SurgeGuard, SurgeSettings

KEY = ("1128", "like")


def feed(det: SurgeDetector, rates: list[float], seconds: float = 10.0) -> list[list[bool]]:
    """Rates (events/s) per interval -> the surge changes of each interval."""
    return [[c.started for c in det.observe({KEY: int(r * seconds)}, seconds)] for r in rates]


def test_steady_traffic_never_surges() -> None:
    det = SurgeDetector(SurgeSettings(factor=5, floor=100))
    assert feed(det, [1000, 1100, 900, 1200, 1000, 950] * 5) == [[]] * 30
    assert det.surging() == {}


def test_a_jump_above_factor_and_floor_starts_and_calm_ends_it() -> None:
    det = SurgeDetector(SurgeSettings(factor=5, floor=100, calm_intervals=2))
    changes = feed(det, [200, 200, 200, 5000, 6000, 300, 250])
    assert changes == [[], [], [], [True], [], [], [False]]
    det2 = SurgeDetector(SurgeSettings(factor=5, floor=100))
    feed(det2, [200, 200, 5000])
    # While surging the baseline does not learn the surge.
    assert det2.surging() == {KEY: 200.0}


def test_below_the_floor_nothing_is_a_surge() -> None:
    det = SurgeDetector(SurgeSettings(factor=5, floor=100))
    assert feed(det, [1, 1, 50, 90]) == [[], [], [], []]  # 90x its baseline, but tiny


def test_a_new_event_is_not_a_surge_by_being_new_and_quiet_keys_are_forgotten() -> None:
    det = SurgeDetector(SurgeSettings(factor=5, floor=10, forget_below=0.5))
    assert det.observe({KEY: 100_000}, 10.0) == []
    for _ in range(60):
        det.observe({}, 10.0)
    assert KEY not in det.states


def test_cap_guard_holds_the_event_to_its_rate() -> None:
    guard = SurgeGuard("cap", 5.0)  # 5 events/s, burst of one second
    outcomes = [guard.apply(PASSED, 1, None, 1_000)[0] for _ in range(8)]
    assert outcomes == [PASSED] * 5 + [THROTTLED] * 3
    assert guard.apply(PASSED, 1, None, 2_000)[0] == PASSED  # refilled a second later
    assert guard.apply(PASSED, 1, None, 2_000)[1] == 1


def test_downgrade_guard_routes_to_p2_and_says_so() -> None:
    guard = SurgeGuard("downgrade", 0.0)
    headers = [("priority", b"P0"), ("rules-version", b"7"), ("sample-rate", b"0.5")]
    outcome, prio, new = guard.apply(PASSED, 0, headers, 0)
    assert (outcome, prio) == (PASSED, 2)
    assert new == [("priority", b"P2"), ("rules-version", b"7"), ("sample-rate", b"0.5"),
                   ("surge", b"downgraded")]
    assert headers[0] == ("priority", b"P0")  # the shared verdict headers are not touched
    assert guard.apply(PASSED, 0, None, 0) == (PASSED, 2, None)
