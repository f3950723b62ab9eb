"""Rules in the compact form that travels from the supervisor to the workers
and into the state directory.

A 500k-rule allow-list is mostly plain entries (active, unsampled, uncapped),
which need nothing but their priority. Those are grouped per app and per
priority as plain lists of event names, so a worker builds its lookup tables
with ``dict.fromkeys`` at C speed and never holds per-rule objects for them;
the few special rules travel as full tuples. orjson encodes it (no pickle: the
state directory is data, not code).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from .rules import AppSettings, Rule, RulesDelta, RulesSnapshot


@dataclass(frozen=True)
class PackedRules:
    version: int
    apps: dict[str, tuple[bool, int]]  # app -> (monitor, default priority)
    plain: dict[str, list[list[str]]]  # app -> [events at P0, at P1, at P2]
    special: list[Rule] = field(default_factory=list)

    @property
    def rule_count(self) -> int:
        return len(self.special) + sum(len(evs) for lists in self.plain.values() for evs in lists)

    def to_bytes(self) -> bytes:
        return orjson.dumps({"version": self.version, "apps": self.apps, "plain": self.plain,
                             "special": self.special}, default=tuple)

    @classmethod
    def from_bytes(cls, data: bytes) -> PackedRules:
        obj = orjson.loads(data)
        return cls(obj["version"], {a: (bool(m), int(p)) for a, (m, p) in obj["apps"].items()},
                   obj["plain"], [Rule(*r) for r in obj["special"]])


@dataclass(frozen=True)
class PackedDelta:
    base_version: int
    version: int
    upserts: list[Rule]
    deletes: list[tuple[str, str]]
    apps: dict[str, tuple[bool, int]]

    def to_bytes(self) -> bytes:
        return orjson.dumps({"base_version": self.base_version, "version": self.version,
                             "upserts": self.upserts, "deletes": self.deletes, "apps": self.apps},
                            default=tuple)  # Rule (a NamedTuple) as an array

    @classmethod
    def from_bytes(cls, data: bytes) -> PackedDelta:
        obj = orjson.loads(data)
        return cls(obj["base_version"], obj["version"], [Rule(*r) for r in obj["upserts"]],
                   [(a, e) for a, e in obj["deletes"]],
                   {a: (bool(m), int(p)) for a, (m, p) in obj["apps"].items()})


def _apps(apps: Any) -> dict[str, tuple[bool, int]]:
    return {app: (s.monitor, s.default_priority) for app, s in apps.items()}


def pack(snapshot: RulesSnapshot) -> PackedRules:
    plain: dict[str, list[list[str]]] = {}
    special: list[Rule] = []
    for rule in snapshot.rules.values():
        if rule.plain:
            lists = plain.get(rule.app)
            if lists is None:
                lists = plain[rule.app] = [[], [], []]
            lists[rule.priority].append(rule.event)
        else:
            special.append(rule)
    return PackedRules(snapshot.version, _apps(snapshot.apps), plain, special)


def pack_delta(delta: RulesDelta) -> PackedDelta:
    return PackedDelta(delta.base_version, delta.version, list(delta.upserts), list(delta.deletes),
                       _apps(delta.apps))


def unpack(packed: PackedRules) -> RulesSnapshot:
    """Back to a snapshot (the supervisor restarting from its state dir)."""
    rules: dict[tuple[str, str], Rule] = {}
    for app, lists in packed.plain.items():
        for prio, events in enumerate(lists):
            for event in events:
                rules[(app, event)] = Rule(app, event, prio)
    for rule in packed.special:
        rules[(rule.app, rule.event)] = rule
    apps = {app: AppSettings(m, p) for app, (m, p) in packed.apps.items()}
    return RulesSnapshot(packed.version, rules, apps)
