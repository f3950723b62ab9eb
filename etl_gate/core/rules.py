"""Rules (the allow-list) as validated, immutable values: SPEC section 2.

Parsing happens once at the edge (file load, gRPC push); every error names the
offending entry, and a bad push is rejected whole. The hot path never sees
these objects: ``compile.py`` turns a snapshot into lookup tables.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, NamedTuple

PRIORITIES: tuple[str, ...] = ("P0", "P1", "P2")
DEFAULT_PRIORITY = 1  # P1, SPEC section 2
DEFAULT_APP_PRIORITY = 2  # P2 for monitor-mode passes, SPEC section 2
MODES = ("enforce", "monitor")
STATES = ("active", "offline")
MAX_VERSION = 2**64 - 1

_RULE_KEYS = frozenset({"app", "event", "priority", "sample_rate", "state", "sample_key", "max_rate"})
_APP_KEYS = frozenset({"mode", "default_priority"})
_SNAPSHOT_KEYS = frozenset({"version", "apps", "rules"})
_DELTA_KEYS = frozenset({"base_version", "version", "upserts", "deletes", "apps"})


class RulesError(ValueError):
    """A rules snapshot or delta that must be rejected whole."""


class StaleVersion(RulesError):
    """A version that is not newer than the rules in force."""

    def __init__(self, version: int, current: int) -> None:
        self.version = version
        self.current = current
        super().__init__(f"version {version} is not newer than the rules in force "
                         f"(version {current})")


class BaseVersionMismatch(RulesError):
    """A delta whose base_version is not the version in force."""

    def __init__(self, base_version: int, current: int | None) -> None:
        self.base_version = base_version
        self.current = current
        super().__init__(f"delta base_version {base_version} does not match the rules in force "
                         f"(version {current})")


class Rule(NamedTuple):
    """One allow-list entry. A NamedTuple: 500k of them are built per push, and
    tuple construction is several times cheaper than a frozen dataclass."""

    app: str
    event: str
    priority: int = DEFAULT_PRIORITY
    sample_rate: float = 1.0
    offline: bool = False
    sample_key: str | None = None
    max_rate: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.app, self.event)

    @property
    def plain(self) -> bool:
        """Active, unsampled, uncapped, default keys: decided by lookup alone."""
        return (self.sample_rate == 1.0 and not self.offline and self.sample_key is None
                and self.max_rate is None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"app": self.app, "event": self.event,
                               "priority": PRIORITIES[self.priority]}
        if self.sample_rate != 1.0:
            out["sample_rate"] = self.sample_rate
        if self.offline:
            out["state"] = "offline"
        if self.sample_key is not None:
            out["sample_key"] = self.sample_key
        if self.max_rate is not None:
            out["max_rate"] = self.max_rate
        return out


@dataclass(frozen=True, slots=True)
class AppSettings:
    monitor: bool = False
    default_priority: int = DEFAULT_APP_PRIORITY

    def to_json(self) -> dict[str, Any]:
        return {"mode": "monitor" if self.monitor else "enforce",
                "default_priority": PRIORITIES[self.default_priority]}


# One app's rules: event -> its priority (an int) for a plain rule, else the
# Rule. Plain rules are ~90% of a big allow-list; holding them as a name and a
# small int instead of a Rule and an (app, event) key is what keeps 500k rules
# cheap to build and to hold (the supervisor, the packed form, the workers).
Table = dict[str, int | Rule]

# Each app's event names in force (its table, or a worker's compiled table):
# where a new table finds the str objects to reuse (``names_of``).
NamesInForce = Mapping[str, Collection[str]]


def names_of(in_force: NamesInForce | None, app: str) -> dict[str, str]:
    """``app``'s event names in force, name -> that same str object, for the
    app's new table to reuse: a push of mostly unchanged names then allocates
    few new strings, and the old table, when dropped, frees whole allocator
    arenas instead of leaving them half-used under the new one. Per app, not
    one map of every name: a 500k-entry map misses the CPU caches on every
    lookup, and building tables through one took 4 times as long (0.39 s
    against 0.10 s for 500k distinct names; docs/DECISIONS.md)."""
    names = in_force.get(app) if in_force else None
    return dict(zip(names, names, strict=True)) if names else {}


def table_entry(rule: Rule) -> int | Rule:
    return rule.priority if rule.plain else rule


def entry_rule(app: str, event: str, entry: int | Rule) -> Rule:
    return Rule(app, event, entry) if type(entry) is int else entry  # type: ignore[return-value]


class RulesView(Mapping[tuple[str, str], Rule]):
    """A snapshot's rules as a read-only (app, event) -> Rule mapping, made on
    demand from the per-app tables."""

    __slots__ = ("_tables", "_count")

    def __init__(self, tables: Mapping[str, Table], count: int) -> None:
        self._tables = tables
        self._count = count

    def __getitem__(self, key: tuple[str, str]) -> Rule:
        app, event = key
        return entry_rule(app, event, self._tables[app][event])

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        table = self._tables.get(key[0])
        return table is not None and key[1] in table

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for app, table in self._tables.items():
            for event in table:
                yield (app, event)

    def __len__(self) -> int:
        return self._count

    def values(self) -> Iterator[Rule]:  # type: ignore[override]
        for app, table in self._tables.items():
            for event, entry in table.items():
                yield entry_rule(app, event, entry)


@dataclass(frozen=True, slots=True)
class RulesSnapshot:
    """A validated snapshot. ``tables``: app -> Table (no empty tables);
    never mutated once built (a delta copies the tables it touches)."""

    version: int
    tables: Mapping[str, Table] = field(default_factory=dict)
    apps: Mapping[str, AppSettings] = field(default_factory=dict)
    rule_count: int = -1  # -1: count the tables
    # The rules' part of the content digest (core/digest.py: the sum of the
    # rule terms, apps not included), when whoever built the snapshot summed it
    # on the way (the gRPC push does, chunk by chunk); None: not known.
    rules_digest: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.rule_count < 0:
            object.__setattr__(self, "rule_count", sum(map(len, self.tables.values())))

    @classmethod
    def from_rules(cls, version: int, rules: Mapping[tuple[str, str], Rule] | Iterable[Rule],
                   apps: Mapping[str, AppSettings] | None = None) -> RulesSnapshot:
        """From Rules (or a key -> Rule mapping); a later rule replaces an earlier one."""
        tables: dict[str, Table] = {}
        for rule in (rules.values() if isinstance(rules, Mapping) else rules):
            table = tables.get(rule.app)
            if table is None:
                table = tables[rule.app] = {}
            table[rule.event] = table_entry(rule)
        return cls(version, tables, dict(apps or {}))

    @property
    def rules(self) -> RulesView:
        return RulesView(self.tables, self.rule_count)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "apps": {app: s.to_json() for app, s in self.apps.items()},
            "rules": [r.to_json() for r in self.rules.values()],
        }


@dataclass(frozen=True, slots=True)
class RulesDelta:
    base_version: int
    version: int
    upserts: tuple[Rule, ...]
    deletes: tuple[tuple[str, str], ...]
    apps: Mapping[str, AppSettings] = field(default_factory=dict)


def app_text(value: Any) -> str | None:
    """The app id as a string (SPEC section 1): strings as they are, numbers as
    the JSON text orjson writes for them; anything else (bool, null, objects) is
    not an app."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # bool is an int subclass: exclude it first
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float_text(value)
    return None


def _float_text(value: float) -> str:
    # orjson writes floats with Python's shortest repr (1128.0, 1e+29 -> 1e29).
    import orjson

    return orjson.dumps(value).decode()


def parse_priority(value: Any, where: str) -> int:
    if value not in PRIORITIES:
        raise RulesError(f"{where}: unknown priority {value!r} (expected one of P0, P1, P2)")
    return PRIORITIES.index(value)


def check_keys(obj: Any, allowed: AbstractSet[str], where: str) -> dict[str, Any]:
    """``obj`` as a dict with no keys beyond ``allowed``, or a RulesError naming ``where``."""
    if not isinstance(obj, dict):
        raise RulesError(f"{where}: expected an object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise RulesError(f"{where}: unknown field(s) {', '.join(unknown)}")
    return obj


def _parse_version(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_VERSION:
        raise RulesError(f"{where}: version must be an unsigned 64-bit integer, got {value!r}")
    return value


def parse_rule(obj: Any, where: str) -> Rule:
    if not isinstance(obj, dict):
        raise RulesError(f"{where}: expected an object, got {type(obj).__name__}")
    app = app_text(obj.get("app"))
    if app is None or app == "":
        raise RulesError(f"{where}: 'app' must be a non-empty string or number, got {obj.get('app')!r}")
    event = obj.get("event")
    if not isinstance(event, str) or event == "":
        raise RulesError(f"{where} (app {app!r}): 'event' must be a non-empty string, got {event!r}")
    where = f"{where} (app {app!r}, event {event!r})"
    check_keys(obj, _RULE_KEYS, where)  # after app/event, so the error names them
    priority = parse_priority(obj.get("priority", "P1"), where)
    rate = obj.get("sample_rate", 1.0)
    if (isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate)
            or not 0.0 <= rate <= 1.0):
        raise RulesError(f"{where}: sample_rate must be a number in 0..1, got {rate!r}")
    state = obj.get("state", "active")
    if state not in STATES:
        raise RulesError(f"{where}: state must be 'active' or 'offline', got {state!r}")
    sample_key = obj.get("sample_key")
    if sample_key is not None and (not isinstance(sample_key, str) or not _valid_path(sample_key)):
        raise RulesError(f"{where}: sample_key must be a dotted field path, got {sample_key!r}")
    max_rate = obj.get("max_rate")
    if max_rate is not None and (isinstance(max_rate, bool) or not isinstance(max_rate, int | float)
                                 or not math.isfinite(max_rate) or max_rate <= 0):
        raise RulesError(f"{where}: max_rate must be a positive number of events/s, got {max_rate!r}")
    return Rule(app, event, priority, float(rate), state == "offline", sample_key,
                None if max_rate is None else float(max_rate))


_PRIORITY_INDEX = {p: i for i, p in enumerate(PRIORITIES)}


def _fast_rule(obj: Any) -> Rule | None:
    """The common rule shapes, validated with as few Python operations as
    possible (500k rules per push). ``None`` means: not obviously valid, let
    ``parse_rule`` decide and word the error. Accepts exactly what
    ``parse_rule`` accepts for these shapes (a unit test checks both agree)."""
    if type(obj) is not dict or not obj.keys() <= _RULE_KEYS:
        return None
    app = obj.get("app")
    event = obj.get("event")
    if type(app) is not str or not app or type(event) is not str or not event:
        return None
    p = obj.get("priority", "P1")
    prio = _PRIORITY_INDEX.get(p) if type(p) is str else None  # {} or [] would not hash
    if prio is None:
        return None
    if len(obj) == 2 or (len(obj) == 3 and "priority" in obj):
        return Rule(app, event, prio)
    rate = obj.get("sample_rate", 1.0)
    if type(rate) is not float or not 0.0 <= rate <= 1.0:
        if type(rate) is not int or rate not in (0, 1):
            return None
        rate = float(rate)
    state = obj.get("state", "active")
    if state != "active" and state != "offline":
        return None
    if "sample_key" in obj or "max_rate" in obj:
        return None
    return Rule(app, event, prio, rate, state == "offline")


def _valid_path(path: str) -> bool:
    return path != "" and all(part != "" for part in path.split("."))


def _parse_apps(obj: Any, where: str) -> dict[str, AppSettings]:
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise RulesError(f"{where}: expected an object keyed by app id")
    apps: dict[str, AppSettings] = {}
    for app, settings in obj.items():
        w = f"{where}[{app!r}]"
        settings = check_keys(settings, _APP_KEYS, w)
        mode = settings.get("mode", "enforce")
        if mode not in MODES:
            raise RulesError(f"{w}: mode must be 'enforce' or 'monitor', got {mode!r}")
        prio = parse_priority(settings.get("default_priority", "P2"), w)
        apps[app] = AppSettings(mode == "monitor", prio)
    return apps


def _parse_rule_list(items: Any, where: str) -> dict[tuple[str, str], Rule]:
    if not isinstance(items, list):
        raise RulesError(f"{where}: expected a list of rules")
    rules: dict[tuple[str, str], Rule] = {}
    for i, item in enumerate(items):
        rule = _fast_rule(item)
        if rule is None:  # anything unusual takes the slow path, which names the error
            rule = parse_rule(item, f"{where}[{i}]")
        if rule.key in rules:
            raise RulesError(f"{where}[{i}] (app {rule.app!r}, event {rule.event!r}): "
                             "duplicate key: the same (app, event) appears twice")
        rules[rule.key] = rule
    return rules


def parse_snapshot(obj: Any) -> RulesSnapshot:
    """Validate a full snapshot (the JSON of SPEC section 2)."""
    obj = check_keys(obj, _SNAPSHOT_KEYS, "snapshot")
    if "version" not in obj:
        raise RulesError("snapshot: 'version' is required")
    version = _parse_version(obj["version"], "snapshot.version")
    apps = _parse_apps(obj.get("apps"), "apps")
    rules = _parse_rule_list(obj.get("rules", []), "rules")
    return RulesSnapshot.from_rules(version, rules, apps)


def parse_delta(obj: Any) -> RulesDelta:
    obj = check_keys(obj, _DELTA_KEYS, "delta")
    for k in ("base_version", "version"):
        if k not in obj:
            raise RulesError(f"delta: {k!r} is required")
    base = _parse_version(obj["base_version"], "delta.base_version")
    version = _parse_version(obj["version"], "delta.version")
    upserts = _parse_rule_list(obj.get("upserts", []), "upserts")
    dels = obj.get("deletes", [])
    if not isinstance(dels, list):
        raise RulesError("deletes: expected a list of {app, event}")
    deletes: list[tuple[str, str]] = []
    for i, d in enumerate(dels):
        d = check_keys(d, frozenset({"app", "event"}), f"deletes[{i}]")
        app, event = app_text(d.get("app")), d.get("event")
        if not app or not isinstance(event, str) or not event:
            raise RulesError(f"deletes[{i}]: needs a non-empty 'app' and 'event', got {d!r}")
        if (app, event) in upserts:
            raise RulesError(f"deletes[{i}] (app {app!r}, event {event!r}): also upserted")
        deletes.append((app, event))
    return RulesDelta(base, version, tuple(upserts.values()), tuple(deletes),
                      _parse_apps(obj.get("apps"), "apps"))


def check_newer(current: RulesSnapshot | None, version: int) -> None:
    if current is not None and version <= current.version:
        raise StaleVersion(version, current.version)


def apply_delta(current: RulesSnapshot, delta: RulesDelta) -> RulesSnapshot:
    """A new snapshot: ``current`` with ``delta`` applied. ``current`` is
    untouched; only the tables of the apps the delta names are copied."""
    if delta.base_version != current.version:
        raise BaseVersionMismatch(delta.base_version, current.version)
    check_newer(current, delta.version)
    tables = dict(current.tables)
    copied: set[str] = set()

    def writable(app: str) -> Table:
        if app not in copied:
            tables[app] = dict(tables.get(app, ()))
            copied.add(app)
        return tables[app]

    count = current.rule_count
    for app, event in delta.deletes:
        table = tables.get(app)
        if table is None or event not in table:
            raise RulesError(f"delete of (app {app!r}, event {event!r}): no such rule")
        del writable(app)[event]
        count -= 1
    for rule in delta.upserts:
        table = writable(rule.app)
        count += rule.event not in table
        table[rule.event] = table_entry(rule)
    for app in copied:
        if not tables[app]:
            del tables[app]
    apps = {**current.apps, **delta.apps}
    return RulesSnapshot(delta.version, tables, apps, count)
