"""Rules in the compact form that travels from the supervisor to the workers
and into the state directory.

A 500k-rule allow-list is mostly plain entries (active, unsampled, uncapped),
which need nothing but their priority. Each app's plain rules travel as a JSON
array of event names plus one priority byte per name, from which a worker
builds its lookup table with ``dict(zip(names, priorities))`` at C speed. The
few special rules travel as names plus kind numbers, where a kind is one
distinct (priority, sample rate, offline, sample key, max rate): a 500k list
has a handful, so a worker shares one compiled rule per kind.

Names travel as array *values*, not object keys, on purpose: orjson keeps
recently decoded object keys in a cache, and a cached name from an old table
would pin its allocator arena after the table is dropped, so a worker's memory
would grow with every push (measured: +20 MiB per 500k push). Tables built
by ``dict(zip())`` also take the compact str-keyed layout (16 bytes an entry,
not the 24 of a dict orjson presizes).

Binary layout (no pickle: the state directory is data, not code)::

    b"EGRULES2\n" + header JSON + b"\n"
    + per app: plain names (JSON array), their priorities (one byte each),
               special rules ([[names], [kinds]] JSON)

The header holds the version, app settings, kinds, rule count and each app's
segment lengths. Segments are decoded one app at a time, so a worker building
its tables never holds the GIL for one long parse of the whole blob (the hot
loop shares it). The first format (one JSON document, plain rules as lists
per priority) is still read, for state directories written by it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .rules import AppSettings, NamesInForce, Rule, RulesDelta, RulesSnapshot, Table, names_of

MAGIC = b"EGRULES2\n"

# (priority, sample_rate, offline, sample_key, max_rate): a special rule minus its key.
Kind = tuple[int, float, bool, str | None, float | None]
# An app's plain rules ({event: priority}) and special ones ({event: kind
# index}), decoded, or as their bytes: (names JSON, priorities) and
# [[names], [kinds]] JSON.
_Plain = dict[str, int] | tuple[memoryview, memoryview]
_Special = dict[str, int] | memoryview


class PackedRules:
    """A packed snapshot. ``tables()`` yields fresh dicts that the caller owns."""

    __slots__ = ("version", "apps", "kinds", "rule_count", "_tables")

    def __init__(self, version: int, apps: dict[str, tuple[bool, int]], kinds: list[Kind],
                 tables: list[tuple[str, _Plain, _Special]], rule_count: int) -> None:
        self.version = version
        self.apps = apps  # app -> (monitor, default priority)
        self.kinds = kinds
        self.rule_count = rule_count
        self._tables = tables

    def tables(self, in_force: NamesInForce | None = None
               ) -> Iterator[tuple[str, dict[str, int], dict[str, int]]]:
        """(app, {event: priority}, {event: kind index}) per app, decoded one
        app at a time; the dicts are new on every call.

        ``in_force`` (app -> its event names in force) shares strings: a
        decoded name the app already has in force is replaced by that str
        object (``rules.names_of``). A push of mostly unchanged names then
        allocates almost no new strings (the decoded copies are dropped at
        once), and the old tables, when dropped, free whole allocator arenas
        instead of leaving them half-used under the new ones (docs/
        DECISIONS.md has the measurements)."""
        for app, plain, special in self._tables:
            names = names_of(in_force, app)
            known = names.get if names else None  # an app new to the rules: nothing to share
            if isinstance(plain, tuple):
                raw, prios = plain
                events = orjson.loads(raw)
                plain = dict(zip(events if known is None else map(known, events, events), prios,
                                 strict=True))
            else:
                plain = dict(plain)
            if isinstance(special, memoryview):
                events, kinds = orjson.loads(special)
                special = dict(zip(events if known is None else map(known, events, events), kinds,
                                   strict=True))
            else:
                special = dict(special)
            yield app, plain, special

    @property
    def special(self) -> list[Rule]:
        kinds = self.kinds
        return [Rule(app, event, *kinds[k]) for app, _, special in self.tables()
                for event, k in special.items()]

    def _canonical(self) -> tuple[Any, ...]:
        kinds = self.kinds
        return (self.version, self.apps, self.rule_count,
                {app: (plain, {e: kinds[k] for e, k in special.items()})
                 for app, plain, special in self.tables()})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PackedRules):
            return NotImplemented
        return self._canonical() == other._canonical()

    def __repr__(self) -> str:
        return (f"PackedRules(version={self.version}, {self.rule_count} rules, "
                f"{len(self._tables)} apps, {len(self.kinds)} kinds)")

    def to_bytes(self) -> bytes:
        segments: list[bytes | memoryview] = []
        lengths: list[tuple[str, int, int, int]] = []
        for app, plain, special in self._tables:
            names: bytes | memoryview
            prios: bytes | memoryview
            if isinstance(plain, tuple):
                names, prios = plain
            else:
                names, prios = orjson.dumps(list(plain)), bytes(plain.values())
            if not isinstance(special, memoryview):
                special = memoryview(orjson.dumps([list(special), list(special.values())]))
            segments += (names, prios, special)
            lengths.append((app, len(names), len(prios), len(special)))
        header = orjson.dumps({"version": self.version, "apps": self.apps, "kinds": self.kinds,
                               "rule_count": self.rule_count, "tables": lengths})
        return b"".join((MAGIC, header, b"\n", *segments))

    @classmethod
    def from_bytes(cls, data: bytes) -> PackedRules:
        """Segments stay undecoded until ``tables()`` (they view ``data``)."""
        if not data.startswith(MAGIC):
            return _from_v1(orjson.loads(data))
        end = data.index(b"\n", len(MAGIC))
        view = memoryview(data)
        head = orjson.loads(view[len(MAGIC):end])
        pos = end + 1
        tables: list[tuple[str, _Plain, _Special]] = []
        for app, names_len, prios_len, special_len in head["tables"]:
            names = view[pos:pos + names_len]
            pos += names_len
            prios = view[pos:pos + prios_len]
            pos += prios_len
            tables.append((app, (names, prios), view[pos:pos + special_len]))
            pos += special_len
        if pos != len(data):
            raise ValueError(f"packed rules: {len(data) - pos} bytes beyond the last segment")
        kinds: list[Kind] = [(int(p), float(r), bool(o), k, None if m is None else float(m))
                             for p, r, o, k, m in head["kinds"]]
        return cls(head["version"], _apps_from_json(head["apps"]), kinds, tables, head["rule_count"])


def _apps_from_json(obj: dict[str, Any]) -> dict[str, tuple[bool, int]]:
    return {a: (bool(m), int(p)) for a, (m, p) in obj.items()}


def _from_v1(obj: dict[str, Any]) -> PackedRules:
    """The first packed format: plain rules as event lists per priority, special
    rules as arrays."""
    tables: dict[str, tuple[dict[str, int], dict[str, int]]] = {}
    count = 0
    for app, lists in obj["plain"].items():
        plain: dict[str, int] = {}
        for prio, events in enumerate(lists):
            plain.update(dict.fromkeys(events, prio))
        tables[app] = (plain, {})
        count += len(plain)
    kinds: dict[tuple[Kind, float], int] = {}
    for row in obj["special"]:
        rule = Rule(*row)
        special = tables.setdefault(rule.app, ({}, {}))[1]
        special[rule.event] = _kind_index(kinds, rule)
        count += 1
    return PackedRules(obj["version"], _apps_from_json(obj["apps"]), [k for k, _ in kinds],
                       [(app, p, s) for app, (p, s) in tables.items()], count)


def _kind(rule: Rule) -> Kind:
    return (rule.priority, rule.sample_rate, rule.offline, rule.sample_key, rule.max_rate)


def _kind_index(kinds: dict[tuple[Kind, float], int], rule: Rule) -> int:
    """The number of ``rule``'s kind, a new one if unseen. Keyed with the
    rate's sign too: -0.0 == 0.0, but the digest writes them differently."""
    return kinds.setdefault((_kind(rule), math.copysign(1.0, rule.sample_rate)), len(kinds))


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
                   [(a, e) for a, e in obj["deletes"]], _apps_from_json(obj["apps"]))


def _apps(apps: Mapping[str, AppSettings]) -> dict[str, tuple[bool, int]]:
    return {app: (s.monitor, s.default_priority) for app, s in apps.items()}


def pack(snapshot: RulesSnapshot) -> PackedRules:
    kinds: dict[tuple[Kind, float], int] = {}
    tables: list[tuple[str, _Plain, _Special]] = []
    for app, table in snapshot.tables.items():
        plain = {e: v for e, v in table.items() if type(v) is int}
        special: dict[str, int] = {}
        if len(plain) != len(table):
            for event, rule in table.items():
                if type(rule) is not int:
                    special[event] = _kind_index(kinds, rule)  # type: ignore[arg-type]
        tables.append((app, plain, special))  # type: ignore[arg-type]
    return PackedRules(snapshot.version, _apps(snapshot.apps), [k for k, _ in kinds], tables,
                       snapshot.rule_count)


def pack_delta(delta: RulesDelta) -> PackedDelta:
    return PackedDelta(delta.base_version, delta.version, list(delta.upserts), list(delta.deletes),
                       _apps(delta.apps))


def unpack(packed: PackedRules) -> RulesSnapshot:
    """Back to a snapshot (the supervisor restarting from its state dir)."""
    kinds = packed.kinds
    tables: dict[str, Table] = {}
    for app, plain, special in packed.tables():
        table: Table = plain  # type: ignore[assignment]
        for event, k in special.items():
            table[event] = Rule(app, event, *kinds[k])
        if table:
            tables[app] = table
    apps = {app: AppSettings(m, p) for app, (m, p) in packed.apps.items()}
    return RulesSnapshot(packed.version, tables, apps)
