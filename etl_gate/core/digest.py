"""A content digest of a rules snapshot, independent of rule order.

digest = (sum over rules of mmh3.hash128(line, seed 0) + the same over app
settings) mod 2**128, as 32 hex digits, where a rule's line is
``app \\x1f event \\x1f P<n> \\x1f repr(sample_rate) \\x1f offline(0/1) \\x1f
sample_key or '' \\x1f repr(max_rate) or ''`` in UTF-8 and an app's line is
``\\x1e app \\x1f monitor(0/1) \\x1f P<n>``. A sum, not a hash of the sorted
list, so a delta updates it in O(delta) and the tracking-plan platform can
compute the same number from its own rows in any order.
"""

from __future__ import annotations

from collections.abc import Iterable

import mmh3

from .rules import PRIORITIES, AppSettings, Rule

_MOD = 1 << 128


def rule_term(r: Rule) -> int:
    line = (f"{r.app}\x1f{r.event}\x1f{PRIORITIES[r.priority]}\x1f{r.sample_rate!r}\x1f"
            f"{int(r.offline)}\x1f{r.sample_key or ''}\x1f"
            f"{'' if r.max_rate is None else repr(r.max_rate)}")
    return mmh3.hash128(line.encode(), 0, signed=False)


def app_term(app: str, s: AppSettings) -> int:
    line = f"\x1e{app}\x1f{int(s.monitor)}\x1f{PRIORITIES[s.default_priority]}"
    return mmh3.hash128(line.encode(), 0, signed=False)


def digest_sum(rules: Iterable[Rule], apps: dict[str, AppSettings]) -> int:
    total = sum(map(rule_term, rules))
    total += sum(app_term(a, s) for a, s in apps.items())
    return total % _MOD


def hex_digest(total: int) -> str:
    return f"{total % _MOD:032x}"
