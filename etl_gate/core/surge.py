"""Surge detection and protection, pure: no clock of its own, no I/O.

``SurgeDetector`` (supervisor) compares each event's rate per interval with
its moving baseline (an EWMA that stops learning while the event surges); an
event is surging when its rate is above ``factor`` x baseline and above an
absolute ``floor``, and calm again after ``calm_intervals`` intervals below
that. ``SurgeGuard`` (worker) is the optional protection for one surging
event: cap it at its baseline rate, or downgrade it to P2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .decide import THROTTLED, TokenBucket

ACTIONS = ("flag", "cap", "downgrade")
Key = tuple[str, str]


@dataclass(frozen=True)
class SurgeSettings:
    factor: float = 5.0
    floor: float = 100.0  # events/s: below this nothing is a surge
    alpha: float = 0.2  # EWMA weight of a new interval
    calm_intervals: int = 3
    action: str = "flag"
    forget_below: float = 0.01  # events/s: baselines this small are dropped


@dataclass
class _State:
    baseline: float
    surging: bool = False
    calm: int = 0
    peak: float = 0.0


@dataclass(frozen=True)
class SurgeEvent:
    app: str
    event: str
    rate: float
    baseline: float
    started: bool  # False: calmed down


@dataclass
class SurgeDetector:
    settings: SurgeSettings
    states: dict[Key, _State] = field(default_factory=dict)

    def observe(self, counts: dict[Key, int], seconds: float) -> list[SurgeEvent]:
        """One interval's counts per (app, event): surges that start or end."""
        s = self.settings
        changes: list[SurgeEvent] = []
        if seconds <= 0:
            return changes
        for key in set(self.states) | set(counts):
            rate = counts.get(key, 0) / seconds
            st = self.states.get(key)
            if st is None:
                # First sight: this interval is the baseline (an event is not
                # a surge by being new).
                self.states[key] = _State(rate)
                continue
            hot = rate > s.floor and rate > s.factor * st.baseline
            if not st.surging:
                if hot:
                    st.surging, st.calm, st.peak = True, 0, rate
                    changes.append(SurgeEvent(key[0], key[1], rate, st.baseline, True))
                else:
                    st.baseline += s.alpha * (rate - st.baseline)
                    if st.baseline < s.forget_below and key not in counts:
                        del self.states[key]
            elif hot:
                st.calm = 0
                st.peak = max(st.peak, rate)
            else:
                st.calm += 1
                if st.calm >= s.calm_intervals:
                    st.surging = False
                    changes.append(SurgeEvent(key[0], key[1], rate, st.baseline, False))
        return changes

    def surging(self) -> dict[Key, float]:
        """Surging events and the baseline rate (events/s) they are held to."""
        return {k: st.baseline for k, st in self.states.items() if st.surging}


class SurgeGuard:
    """A worker's protection for one surging event (its share of the cap)."""

    __slots__ = ("action", "bucket")

    def __init__(self, action: str, rate: float) -> None:
        self.action = action
        self.bucket = TokenBucket(max(rate, 1.0)) if action == "cap" else None

    def apply(self, outcome: int, priority: int, headers: list[tuple[str, bytes]] | None,
              ts_ms: int) -> tuple[int, int, list[tuple[str, bytes]] | None]:
        if self.bucket is not None:
            if self.bucket.take(ts_ms):
                return outcome, priority, headers
            return THROTTLED, -1, None
        if headers is not None:
            headers = [("priority", b"P2"), *(h for h in headers if h[0] != "priority"),
                       ("surge", b"downgraded")]
        return outcome, 2, headers
