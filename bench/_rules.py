"""The allow-list as the reference implementations of the gate's job read it:
bench/quix_app.py (a dict lookup) and bench/native_gate.c (a TSV from _native).

Both follow the subset of SPEC section 2 that `etl-gate gen` writes by default
and refuse the rest, so that they never decide differently from the gate:
monitor-mode apps, rate caps and dotted sample keys are not implemented.
No imports beyond the standard library: quix_app runs in Quix's environment.
"""

from __future__ import annotations

from typing import Any, NamedTuple

_PRIORITIES = ("P0", "P1", "P2")


class Rule(NamedTuple):
    priority: int              # 0..2; -1 offline (blocked)
    threshold: int | None      # keep iff mmh3 < threshold; None: not sampled
    keys: tuple[str, ...] | None  # the rule's own sample key; None: the configured ones
    rate: float                # the sample rate, for the sample-rate header


def compile_rules(rules: dict[str, Any], who: str) -> dict[tuple[str, str], Rule]:
    """(app, event) -> Rule; ValueError naming ``who`` for rules it cannot follow."""
    if any(s.get("mode", "enforce") != "enforce" for s in rules.get("apps", {}).values()):
        raise ValueError(f"{who}: monitor-mode apps are not implemented")
    table: dict[tuple[str, str], Rule] = {}
    for r in rules["rules"]:
        if r.get("max_rate") is not None:
            raise ValueError(f"{who}: rate caps are not implemented")
        key = r.get("sample_key")
        if key is not None and "." in key:
            raise ValueError(f"{who}: dotted sample keys are not implemented")
        rate = float(r.get("sample_rate", 1.0))
        prio = -1 if r.get("state", "active") == "offline" else _PRIORITIES.index(r.get("priority", "P1"))
        table[(str(r["app"]), r["event"])] = Rule(
            prio, int(rate * 4294967296) if rate < 1.0 else None, (key,) if key else None, rate)
    return table
