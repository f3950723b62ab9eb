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

from collections.abc import Callable, Iterable, Mapping

import mmh3

from .rules import PRIORITIES, AppSettings, Rule, Table

_MOD = 1 << 128


def _line(r: Rule) -> str:
    return f"{r.app}\x1f{r.event}{_tail(r)}"


def _tail(r: Rule) -> str:
    """A rule's line after its event."""
    return (f"\x1f{PRIORITIES[r.priority]}\x1f{r.sample_rate!r}\x1f{int(r.offline)}\x1f"
            f"{r.sample_key or ''}\x1f{'' if r.max_rate is None else repr(r.max_rate)}")


def _tails() -> Callable[[Rule], str]:
    """``_tail`` through a cache by the rule's settings: a 500k list has a
    handful of distinct ones, and the f-string with two float reprs was 40%
    of a snapshot's digest. A zero rate is not cached: -0.0 == 0.0 as a key,
    but their reprs differ."""
    cache: dict[tuple[object, ...], str] = {}

    def tail(r: Rule) -> str:
        if not r.sample_rate:
            return _tail(r)
        key = r[2:]
        t = cache.get(key)
        if t is None:
            t = cache[key] = _tail(r)
        return t

    return tail


def rule_term(r: Rule) -> int:
    return mmh3.hash128(_line(r))  # UTF-8, seed 0, x64, unsigned


# A plain rule's line after its event: priority, rate 1.0, active, no key, no cap.
_PLAIN_TAIL = tuple(f"\x1f{p}\x1f1.0\x1f0\x1f\x1f" for p in PRIORITIES)


def _terms(lines: list[str]) -> int:
    """The sum of the lines' terms (str lines hash as their UTF-8). hash128's
    defaults are the digest's: seed 0, x64, unsigned. Through a partial with
    keywords, each call cost 2.5 times as much (0.14 s for 500k rules)."""
    return sum(map(mmh3.hash128, lines))


def plain_terms(app: str, events: Iterable[str], priorities: Iterable[int]) -> int:
    """The sum of the terms of ``app``'s plain rules (not reduced mod 2**128)."""
    head, tail = app + "\x1f", _PLAIN_TAIL
    return _terms([head + e + tail[p] for e, p in zip(events, priorities, strict=True)])


def tables_digest_sum(tables: Mapping[str, Table], apps: Mapping[str, AppSettings]) -> int:
    """``digest_sum`` of a snapshot's per-app tables, without making Rules:
    the plain rules' lines are built and hashed in one comprehension."""
    total = 0
    tail = _PLAIN_TAIL
    special = _tails()
    for app, table in tables.items():
        head = app + "\x1f"
        total += _terms([head + e + (tail[v] if type(v) is int else special(v))  # type: ignore[arg-type]
                         for e, v in table.items()])
    total += sum(app_term(a, s) for a, s in apps.items())
    return total % _MOD


def app_term(app: str, s: AppSettings) -> int:
    line = f"\x1e{app}\x1f{int(s.monitor)}\x1f{PRIORITIES[s.default_priority]}"
    return mmh3.hash128(line.encode(), 0, signed=False)


def digest_sum(rules: Iterable[Rule], apps: Mapping[str, AppSettings]) -> int:
    total = sum(map(rule_term, rules))
    total += sum(app_term(a, s) for a, s in apps.items())
    return total % _MOD


def hex_digest(total: int) -> str:
    return f"{total % _MOD:032x}"
