"""Conversions between the control plane's protobuf messages and the domain
types (``etl_gate.core`` rules, ``etl_gate.control.model`` status,
``etl_gate.stats`` per-event statistics).

This is the one module that imports the generated messages (``etl_gate.pb``);
``server.py`` and ``client.py`` import only the generated gRPC stubs.

Inbound rules are validated with the core's own rules (SPEC section 2), and
errors name the entry the way ``core/rules.py`` does (``rules[7] (app '1128',
event 'x'): ...``, counted across the whole stream, or as the chunk numbers
its entries). Half a million rules must convert in well under a second, so
plain rules travel as per-app columns (``PlainRules``: names and one priority
byte each), which become the snapshot's per-app tables with one
``dict.update`` each; the other rows go through a fast path (columns pulled
out of the messages in C, each *distinct* value checked by ``parse_rule``,
Rules built with ``map``). Only a chunk the fast paths are not sure of goes
through the exact path (one ``parse_rule`` per entry, in entry order), which
then raises the error or, on a false alarm, builds the same rules.
"""

from __future__ import annotations

import gc
import itertools
import logging
import math
import operator
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, cast

from etl_gate.core import OUTCOMES
from etl_gate.core.digest import plain_terms, rule_term
from etl_gate.core.rules import (
    AppSettings,
    Rule,
    RulesDelta,
    RulesError,
    RulesSnapshot,
    Table,
    app_text,
    check_keys,
    names_of,
    parse_delta,
    parse_rule,
    parse_snapshot,
    table_entry,
)
from etl_gate.core.snapshot_json import SnapshotParts, parse_snapshot_json, split_document
from etl_gate.pb.control.v1 import control_pb2 as pb
from etl_gate.stats import AppStat, EventStat

from .model import (
    EventStatsReport,
    GateStatus,
    InvalidRequest,
    PushResult,
    RulesInfo,
    StatsQuery,
    SurgingEvent,
    WorkerState,
    WorkerView,
)

log = logging.getLogger(__name__)

# Message types, re-exported for type hints in server.py and client.py.
PushSnapshotRequest = pb.PushSnapshotRequest
ApplyDeltaRequest = pb.ApplyDeltaRequest
GetRulesRequest = pb.GetRulesRequest
GetStatusRequest = pb.GetStatusRequest
WatchStatusRequest = pb.WatchStatusRequest
PushResponse = pb.PushResponse
RulesInfoMessage = pb.RulesInfo
StatusMessage = pb.Status
EventStatsRequest = pb.EventStatsRequest
EventStatsResponse = pb.EventStatsResponse

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Control"].full_name
DEFAULT_CHUNK_RULES = 20_000
# A pushed JSON snapshot is held whole while it parses: a bound on that memory
# (control.max_push_mb). 500k rules are ~24 MiB.
DEFAULT_MAX_JSON_BYTES = 1024 << 20
# Pieces a client splits a JSON snapshot into: well under any message limit.
JSON_PIECE_BYTES = 1 << 20
MAX_VERSION = 2**64 - 1
DEFAULT_STATS_TOP = 20
MAX_STATS_TOP = 10_000

# Core priorities are indexes into ("P0", "P1", "P2"); the proto enum is shifted
# by one so that 0 can mean "unspecified": P1 for a rule, P2 for an app default
# (apps go through the core's JSON parser, hence _APP_PRIORITY_JSON).
_RULE_PRIORITY_FROM_PB = (1, 0, 1, 2)
_PRIORITY_TO_PB = (pb.P0, pb.P1, pb.P2)
_PRIORITY_JSON = {pb.PRIORITY_UNSPECIFIED: "P1", pb.P0: "P0", pb.P1: "P1", pb.P2: "P2"}
_APP_PRIORITY_JSON = {**_PRIORITY_JSON, pb.PRIORITY_UNSPECIFIED: "P2"}
_STATE_JSON = {pb.RULE_STATE_UNSPECIFIED: "active", pb.ACTIVE: "active", pb.OFFLINE: "offline"}
_MODE_JSON = {pb.APP_MODE_UNSPECIFIED: "enforce", pb.ENFORCE: "enforce", pb.MONITOR: "monitor"}
_JSON_PRIORITY = {"P0": pb.P0, "P1": pb.P1, "P2": pb.P2}
_JSON_STATE = {"active": pb.ACTIVE, "offline": pb.OFFLINE}
_JSON_MODE = {"enforce": pb.ENFORCE, "monitor": pb.MONITOR}
_KNOWN_PRIORITIES = frozenset(_PRIORITY_JSON)
_KNOWN_STATES = frozenset(_STATE_JSON)

_ROW = operator.attrgetter("app", "event", "priority", "state", "sample_rate", "sample_key", "max_rate")

# An optional field that is *set* to its zero value reads the same as an unset
# one; telling them apart with HasField costs ~0.15 s per field for 500k rules.
# Its wire encoding is cheaper to rule out: if the serialized chunk does not
# contain these bytes, no rule in it sets that field to zero (-0.0 included:
# the 8-byte double of +-0.0 starts with 7 zero bytes). Finding the bytes
# proves nothing (they may sit inside another value); it only sends the chunk
# to the careful path.
_SET_ZERO_SAMPLE_RATE = bytes([(4 << 3) | 1]) + bytes(7)  # field 4, fixed64
_SET_EMPTY_SAMPLE_KEY = bytes([(6 << 3) | 2, 0])  # field 6, length-delimited, length 0
_SET_ZERO_MAX_RATE = bytes([(7 << 3) | 1]) + bytes(7)  # field 7, fixed64


# --- rules: protobuf -> core --------------------------------------------------


def rule_json(msg: pb.Rule) -> dict[str, Any]:
    """One pb Rule as the JSON object of SPEC section 2, exactly as sent: an
    enum number the proto does not define is kept as the number, so that
    ``parse_rule`` rejects it by name."""
    out: dict[str, Any] = {
        "app": msg.app, "event": msg.event,
        "priority": _PRIORITY_JSON.get(msg.priority, msg.priority),
        "state": _STATE_JSON.get(msg.state, msg.state),
    }
    for name in ("sample_rate", "sample_key", "max_rate"):
        if msg.HasField(name):
            out[name] = getattr(msg, name)
    return out


def rule_from_pb(msg: pb.Rule, where: str = "rule") -> Rule:
    return parse_rule(rule_json(msg), where)


def _duplicate(where: str, key: tuple[str, str]) -> RulesError:
    # The message core/rules.py gives for the same mistake in a JSON snapshot.
    return RulesError(f"{where} (app {key[0]!r}, event {key[1]!r}): "
                      "duplicate key: the same (app, event) appears twice")


def _accepts(field: str, value: Any) -> bool:
    """Whether the core accepts ``value`` for a rule field: the one definition
    of a valid value, asked once per distinct value."""
    try:
        parse_rule({"app": "a", "event": "e", field: value}, "probe")
    except RulesError:
        return False
    return True


class _GcPause:
    """Pauses the cyclic garbage collector while a chunk converts (re-entrant,
    thread-safe). A chunk allocates a few tuples per rule and no cycles, yet
    with the collector on, those allocations set off collections that walk
    every live object (the rules in force too): up to twice the conversion
    time. The collector runs again between chunks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if self._holders == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._holders += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0 and self._was_enabled:
                gc.enable()


_gc_pause = _GcPause()


class RuleTable:
    """Rules received in chunks (a snapshot stream, or a delta's upserts),
    validated chunk by chunk as they arrive; entries are numbered across the
    whole stream, errors name them as ``<where>[i] (app 'a', event 'e')``."""

    def __init__(self, where: str = "rules") -> None:
        self.where = where
        self.rules: dict[tuple[str, str], Rule] = {}
        self.count = 0

    def add(self, msgs: Sequence[pb.Rule], wire: bytes) -> None:
        """Add one chunk. ``wire`` is the serialized message that holds
        ``msgs`` (any enclosing message will do; see _SET_ZERO_SAMPLE_RATE).
        Raises RulesError; the table is then unusable."""
        with _gc_pause:
            fast = self._fast(msgs, wire)
            if fast is None:
                self._exact(msgs, self.rules)
            else:
                before = len(self.rules)
                self.rules.update(fast)
                if len(self.rules) != before + len(msgs):
                    # A duplicate key. Dicts keep insertion order, so the keys
                    # from before this chunk are the first `before` ones.
                    self._exact(msgs, dict.fromkeys(itertools.islice(self.rules, before)))
                    raise AssertionError("unreachable: the exact path raises on a duplicate")
        self.count += len(msgs)

    def _exact(self, msgs: Sequence[pb.Rule], rules: dict[tuple[str, str], Any]) -> None:
        """One parse_rule per entry, into ``rules``; raises the first error."""
        for i, msg in enumerate(msgs, self.count):
            where = f"{self.where}[{i}]"
            rule = rule_from_pb(msg, where)
            key = (rule.app, rule.event)
            if key in rules:
                raise _duplicate(where, key)
            rules[key] = rule

    def _fast(self, msgs: Sequence[pb.Rule], wire: bytes) -> Iterator[tuple[tuple[str, str], Rule]] | None:
        """The chunk's (key, rule) pairs, duplicates not checked; None when a
        value may be invalid."""
        columns = _fast_columns(msgs, wire)
        if columns is None:
            return None
        apps, events, rules = columns
        return zip(zip(apps, events, strict=True), rules, strict=True)


def _fast_columns(msgs: Sequence[pb.Rule], wire: bytes
                  ) -> tuple[Sequence[str], Sequence[str], Iterator[Rule]] | None:
    """Rows as (apps, events, rules) with duplicates not checked; None when a
    value may be invalid. ``wire``: see RuleTable.add."""
    if not msgs:
        return (), (), iter(())
    apps, events, prios, states, rates, keys, maxes = zip(*map(_ROW, msgs), strict=True)
    if "" in apps or "" in events:
        return None
    if not _KNOWN_PRIORITIES.issuperset(prios) or not _KNOWN_STATES.issuperset(states):
        return None
    if _SET_EMPTY_SAMPLE_KEY in wire or _SET_ZERO_MAX_RATE in wire:
        return None  # both invalid when set: the exact path names the entry
    if _SET_ZERO_SAMPLE_RATE in wire:
        # A rate read as 0.0 is a set 0.0 (valid: keep nothing) or unset (1.0).
        resolved = [r or (r if m.HasField("sample_rate") else 1.0)
                    for r, m in zip(rates, msgs, strict=True)]
        valid = all(_accepts("sample_rate", r) for r in set(resolved))
        rate_column: Iterable[Any] | None = resolved if valid else None
    else:
        rate_column = _with_default(rates, 0.0, 1.0, "sample_rate")
    key_column = _with_default(keys, "", None, "sample_key")
    max_column = _with_default(maxes, 0.0, None, "max_rate")
    if rate_column is None or key_column is None or max_column is None:
        return None
    rules = map(Rule, apps, events, map(_RULE_PRIORITY_FROM_PB.__getitem__, prios), rate_column,
                map((pb.OFFLINE).__eq__, states), key_column, max_column)
    return apps, events, rules


# Proto Priority number -> core priority, as a bytes.translate table; 255: not a priority.
_CORE_PRIORITY_BYTES = bytes([*_RULE_PRIORITY_FROM_PB, *[255] * (256 - len(_RULE_PRIORITY_FROM_PB))])


class SnapshotTables:
    """A pushed snapshot's rules, received chunk by chunk (Rule rows and
    per-app plain columns) and validated as they arrive, into per-app tables
    (``core.rules.Table``). Entries are numbered across the whole stream (or
    as the chunk numbers them); errors name them as ``rules[i] (app 'a',
    event 'e')``, the first in entry order first, as ``core/rules.py`` does."""

    def __init__(self, where: str = "rules", previous: RulesSnapshot | None = None) -> None:
        self.where = where
        self.tables: dict[str, Table] = {}
        self.count = 0
        # Per app, event name -> the str object the rules in force
        # (``previous``) hold for it (core.rules.names_of), made when the app
        # first appears: a push of mostly unchanged names allocates few new
        # strings, so the supervisor's memory does not creep per push.
        self._in_force = None if previous is None else previous.tables
        self._names: dict[str, dict[str, str]] = {}
        # The rules' digest (core/digest.py), summed chunk by chunk while the
        # upload goes on: the authority then need not hash 500k rules while
        # the workers build their tables.
        self.digest = 0

    def add(self, chunk: pb.RuleChunk) -> None:
        """Add one chunk. Raises RulesError; the tables are then unusable."""
        n = len(chunk.rules)
        for group in chunk.plain:
            if len(group.priorities) != len(group.events):
                raise RulesError(f"push: plain rules of app {group.app!r}: {len(group.events)} "
                                 f"events but {len(group.priorities)} priorities")
            n += len(group.events)
        if chunk.entries and len(chunk.entries) != n:
            raise RulesError(f"push: a chunk of {n} rules numbers {len(chunk.entries)} entries")
        with _gc_pause:
            rows = chunk.rules
            # Only the rows' bytes: see _SET_ZERO_SAMPLE_RATE.
            wire = b"" if not rows else (pb.RuleChunk(rules=rows).SerializeToString() if chunk.plain
                                         else chunk.SerializeToString())
            columns = _fast_columns(rows, wire)
            plain = _fast_plain(chunk.plain, self._names_for)
            if columns is None or plain is None:
                self._exact(chunk, n, None)  # raises, or builds what the fast path would
            else:
                tables = self.tables
                apps, events, rules = columns
                before = {app: len(tables.get(app, ())) for app in {*apps, *(g[0] for g in plain)}}
                digest = 0
                for app, event, rule in zip(apps, events, rules, strict=True):
                    table = tables.get(app)
                    if table is None:
                        table = tables[app] = {}
                    table[event] = rule.priority if rule.plain else rule
                    digest += rule_term(rule)
                for app, names, prios in plain:
                    table = tables.get(app)
                    if table is None:
                        table = tables[app] = {}
                    table.update(zip(names, prios, strict=True))
                    digest += plain_terms(app, names, prios)
                if sum(len(tables[a]) for a in before) - sum(before.values()) != n:
                    self._exact(chunk, n, before)  # a duplicate key: raises
                    raise AssertionError("unreachable: the exact path raises on a duplicate")
                self.digest += digest
        self.count += n

    def _names_for(self, app: str) -> dict[str, str]:
        names = self._names.get(app)
        if names is None:
            names = self._names[app] = names_of(self._in_force, app)
        return names

    def _exact(self, chunk: pb.RuleChunk, n: int, before: dict[str, int] | None) -> None:
        """One parse_rule per entry, in entry order; raises the first error.
        ``before``: the table sizes before this chunk, if it was added (keys
        from earlier chunks come first in a table); None: not added, and it is
        added if no error is found."""
        items = [rule_json(m) for m in chunk.rules]
        items += [{"app": g.app, "event": e, "priority": _PRIORITY_JSON.get(p, p)}
                  for g in chunk.plain for e, p in zip(g.events, g.priorities, strict=True)]
        numbers: Sequence[int] = list(chunk.entries) or range(self.count, self.count + n)
        tables = self.tables
        earlier: dict[str, AbstractSet[str]] = {}

        def known(app: str, event: str) -> bool:
            if before is None:
                return event in tables.get(app, ())
            keys = earlier.get(app)
            if keys is None:
                keys = earlier[app] = set(itertools.islice(tables.get(app, ()), before.get(app, 0)))
            return event in keys

        seen: set[tuple[str, str]] = set()
        parsed: list[Rule] = []
        for i in sorted(range(n), key=numbers.__getitem__):
            where = f"{self.where}[{numbers[i]}]"
            rule = parse_rule(items[i], where)
            key = (rule.app, rule.event)
            if key in seen or known(*key):
                raise _duplicate(where, key)
            seen.add(key)
            parsed.append(rule)
        if before is None:
            for rule in parsed:
                tables.setdefault(rule.app, {})[rule.event] = table_entry(rule)
            self.digest += sum(map(rule_term, parsed))


def _fast_plain(groups: Sequence[pb.PlainRules], names_for: Callable[[str], dict[str, str]]
                ) -> list[tuple[str, list[str], bytes]] | None:
    """(app, events, core priorities) per group, names shared through
    ``names_for(app)``; None when a value may be invalid."""
    out = []
    for group in groups:
        events = list(group.events)
        events = list(map(names_for(group.app).get, events, events))
        prios = group.priorities.translate(_CORE_PRIORITY_BYTES)
        if not group.app or "" in events or b"\xff" in prios:
            return None
        out.append((group.app, events, prios))
    return out


def _with_default(values: tuple[Any, ...], unset: Any, default: Any, field: str) -> Iterable[Any] | None:
    """A column of an optional field, ``unset`` (what an unset field reads as;
    a set zero was ruled out) replaced by the default; None if a set value is
    invalid. Each distinct value is checked once."""
    distinct = set(values)
    distinct.discard(unset)
    if not distinct:
        return itertools.repeat(default)  # unset in every rule: the common case
    if not all(_accepts(field, v) for v in distinct):
        return None
    return [v or default for v in values]


def _apps_json(msgs: Iterable[pb.AppSettings], where: str = "apps") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for i, msg in enumerate(msgs):
        if not msg.app:
            raise RulesError(f"{where}[{i}]: 'app' must be a non-empty string")
        if msg.app in out:
            raise RulesError(f"{where}[{i}] (app {msg.app!r}): the same app appears twice")
        out[msg.app] = {"mode": _MODE_JSON.get(msg.mode, msg.mode),
                        "default_priority": _APP_PRIORITY_JSON.get(msg.default_priority,
                                                                   msg.default_priority)}
    return out


def apps_from_pb(msgs: Iterable[pb.AppSettings]) -> dict[str, AppSettings]:
    return dict(parse_snapshot({"version": 0, "apps": _apps_json(msgs)}).apps)


def snapshot_from_requests(requests: Iterable[pb.PushSnapshotRequest],
                           previous: RulesSnapshot | None = None,
                           max_json_bytes: int = DEFAULT_MAX_JSON_BYTES) -> RulesSnapshot:
    """Assemble and validate a pushed snapshot: one SnapshotHeader, then
    RuleChunks carrying exactly header.rule_count rules (each chunk is
    converted as it arrives, so the work overlaps the upload), or the JSON
    document in pieces (at most ``max_json_bytes`` in all), parsed once whole.
    ``previous`` (the rules in force) lends its name strings (SnapshotTables)."""
    it = iter(requests)
    first = next(it, None)
    part = None if first is None else first.WhichOneof("part")
    if part == "json_head":
        assert first is not None
        return _snapshot_from_json_parts(first.json_head, it, previous, max_json_bytes)
    if part == "json":
        assert first is not None
        return _snapshot_from_json(first.json, it, previous, max_json_bytes)
    if first is None or part != "header":
        raise RulesError("push: the stream must start with a SnapshotHeader, a json_head or a piece "
                         "of JSON")
    header = first.header
    # Version and apps through the core (it checks modes and priorities).
    base = parse_snapshot({"version": header.version, "apps": _apps_json(header.apps)})
    table = SnapshotTables("rules", previous)
    for n, req in enumerate(it, 1):
        part = req.WhichOneof("part")
        if part != "chunk":
            raise RulesError(f"push: message {n}: expected a RuleChunk, got {part or 'an empty message'}")
        chunk = req.chunk
        if table.count + len(chunk.rules) + sum(len(g.events) for g in chunk.plain) > header.rule_count:
            raise RulesError(f"push: more rules than the {header.rule_count} the header announced")
        table.add(chunk)
    if table.count != header.rule_count:
        raise RulesError(f"push: the header announced {header.rule_count} rules but the stream "
                         f"carried {table.count}")
    return RulesSnapshot(base.version, table.tables, base.apps, table.count, table.digest)


def _snapshot_from_json(first: bytes, rest: Iterator[pb.PushSnapshotRequest],
                        previous: RulesSnapshot | None, max_bytes: int) -> RulesSnapshot:
    pieces, size = [first], len(first)
    for n, req in enumerate(rest, 2):
        part = req.WhichOneof("part")
        if part != "json":
            raise RulesError(f"push: message {n}: expected a piece of the JSON document, "
                             f"got {part or 'an empty message'}")
        size += len(req.json)
        if size > max_bytes:
            raise RulesError(f"push: the JSON document is larger than {max_bytes >> 20} MiB "
                             "(control.max_push_mb)")
        pieces.append(req.json)
    data = b"".join(pieces)
    del pieces
    started = time.monotonic()
    with _gc_pause:  # millions of objects made, no cycles: see _GcPause
        snapshot = parse_snapshot_json(data, None if previous is None else previous.tables)
    log.info("push: JSON document of %.1f MiB parsed in %.2fs", len(data) / 2**20,
             time.monotonic() - started)
    return snapshot


def _snapshot_from_json_parts(head: bytes, rest: Iterator[pb.PushSnapshotRequest],
                              previous: RulesSnapshot | None, max_bytes: int) -> RulesSnapshot:
    started = time.monotonic()
    parts = SnapshotParts(head, None if previous is None else previous.tables)
    n = 1
    for n, req in enumerate(rest, 2):
        part = req.WhichOneof("part")
        if part != "json_rules":
            raise RulesError(f"push: message {n}: expected json_rules, got {part or 'an empty message'}")
        if parts.size + len(req.json_rules) > max_bytes:
            raise RulesError(f"push: the JSON document is larger than {max_bytes >> 20} MiB "
                             "(control.max_push_mb)")
        with _gc_pause:  # see _GcPause; the collector runs between parts
            parts.add(req.json_rules, f"message {n}")
    snapshot = parts.snapshot()
    log.info("push: JSON document of %.1f MiB in %d parts received and parsed in %.2fs",
             parts.size / 2**20, n - 1, time.monotonic() - started)
    return snapshot


def delta_from_pb(req: pb.ApplyDeltaRequest) -> RulesDelta:
    """Validate an ApplyDeltaRequest (SPEC section 2: a delta)."""
    upserts = RuleTable("upserts")
    upserts.add(req.upserts, req.SerializeToString())
    rest = parse_delta({"base_version": req.base_version, "version": req.version,
                        "deletes": [{"app": k.app, "event": k.event} for k in req.deletes],
                        "apps": _apps_json(req.apps)})
    for i, key in enumerate(rest.deletes):
        if key in upserts.rules:
            raise RulesError(f"deletes[{i}] (app {key[0]!r}, event {key[1]!r}): also upserted")
    return RulesDelta(rest.base_version, rest.version, tuple(upserts.rules.values()), rest.deletes,
                      rest.apps)


# --- rules: core -> protobuf --------------------------------------------------


def _fill_rule(msg: pb.Rule, rule: Rule) -> None:
    msg.app = rule.app
    msg.event = rule.event
    msg.priority = _PRIORITY_TO_PB[rule.priority]
    if rule.sample_rate != 1.0:
        msg.sample_rate = rule.sample_rate
    if rule.offline:
        msg.state = pb.OFFLINE
    if rule.sample_key is not None:
        msg.sample_key = rule.sample_key
    if rule.max_rate is not None:
        msg.max_rate = rule.max_rate


def rule_to_pb(rule: Rule) -> pb.Rule:
    msg = pb.Rule()
    _fill_rule(msg, rule)
    return msg


def apps_to_pb(apps: Mapping[str, AppSettings]) -> list[pb.AppSettings]:
    return [pb.AppSettings(app=app, mode=pb.MONITOR if s.monitor else pb.ENFORCE,
                           default_priority=_PRIORITY_TO_PB[s.default_priority])
            for app, s in apps.items()]


def snapshot_to_requests(snapshot: RulesSnapshot,
                         chunk_size: int = DEFAULT_CHUNK_RULES) -> Iterator[pb.PushSnapshotRequest]:
    """A snapshot as a PushSnapshot stream (also the ExportRules stream):
    special rules as rows, plain ones as per-app columns."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    yield pb.PushSnapshotRequest(header=pb.SnapshotHeader(
        version=snapshot.version, apps=apps_to_pb(snapshot.apps), rule_count=snapshot.rule_count))
    entries = ((app, event, entry) for app, table in snapshot.tables.items()
               for event, entry in table.items())
    while batch := list(itertools.islice(entries, chunk_size)):
        req = pb.PushSnapshotRequest()
        add = req.chunk.rules.add
        groups: dict[str, tuple[list[str], bytearray]] = {}
        for app, event, entry in batch:
            if type(entry) is int:
                group = groups.get(app)
                if group is None:
                    group = groups[app] = ([], bytearray())
                group[0].append(event)
                group[1].append(_PRIORITY_TO_PB[entry])
            else:
                _fill_rule(add(), entry)  # type: ignore[arg-type]
        for app, (events, prios) in groups.items():
            req.chunk.plain.add(app=app, events=events, priorities=bytes(prios))
        yield req


def delta_to_pb(delta: RulesDelta) -> pb.ApplyDeltaRequest:
    req = pb.ApplyDeltaRequest(base_version=delta.base_version, version=delta.version,
                               deletes=[pb.RuleKey(app=a, event=e) for a, e in delta.deletes],
                               apps=apps_to_pb(delta.apps))
    add = req.upserts.add
    for rule in delta.upserts:
        _fill_rule(add(), rule)
    return req


# --- rules: JSON (SPEC section 2) -> protobuf, for the CLI ----------------------
#
# No core Rule objects: the gate validates what it receives. Only what protobuf
# cannot carry (an unknown priority name, a string where a number goes) is
# refused here, naming the entry.


def _named(where: str, fields: Mapping[str, Any]) -> str:
    app, event = fields.get("app"), fields.get("event")
    return f"{where} (app {app!r}, event {event!r})" if isinstance(event, str) else where


def _json_rule_fields(item: Any, where: str) -> dict[str, Any]:
    """Keyword arguments of a pb Rule for one JSON rule."""
    if not isinstance(item, dict):
        raise RulesError(f"{where}: expected an object, got {type(item).__name__}")
    fields = dict(item)
    app = fields.get("app")
    if type(app) is not str:
        text = app_text(app)
        if text is None:
            raise RulesError(f"{where}: 'app' must be a non-empty string or number, got {app!r}")
        fields["app"] = text
    if "priority" in fields:
        p = fields["priority"]
        priority = _JSON_PRIORITY.get(p) if isinstance(p, str) else None
        if priority is None:
            raise RulesError(f"{_named(where, fields)}: unknown priority {p!r} "
                             "(expected one of P0, P1, P2)")
        fields["priority"] = priority
    if "state" in fields:
        s = fields["state"]
        state = _JSON_STATE.get(s) if isinstance(s, str) else None
        if state is None:
            raise RulesError(f"{_named(where, fields)}: state must be 'active' or 'offline', got {s!r}")
        fields["state"] = state
    for name in ("sample_rate", "max_rate"):
        if name in fields:
            v = fields[name]
            if v is None and name == "max_rate":
                del fields[name]  # null: no cap, as in the core
            elif isinstance(v, bool) or not isinstance(v, int | float):
                raise RulesError(f"{_named(where, fields)}: {name} must be a number, got {v!r}")
    if "sample_key" in fields and fields["sample_key"] is None:
        del fields["sample_key"]
    return fields


def _add_json_rules(container: Any, items: Iterable[Any], where: str, start: int = 0,
                    numbers: Iterable[int] | None = None) -> None:
    """Rows for ``items``, numbered from ``start`` (or by ``numbers``) in errors."""
    add = container.add
    for i, item in zip(itertools.count(start) if numbers is None else numbers, items, strict=False):
        fields = _json_rule_fields(item, f"{where}[{i}]")
        try:
            add(**fields)
        except (TypeError, ValueError, OverflowError) as e:
            raise RulesError(f"{_named(f'{where}[{i}]', fields)}: {e}") from None


# app -> (events, proto priority numbers, entry numbers) of its plain rules.
_Groups = dict[str, tuple[list[str], bytearray, list[int]]]


def _classify(items: list[Any], start: int) -> tuple[_Groups, list[Any], list[int]]:
    """Plain rules (objects with nothing but a non-empty string app and event
    and a known priority) grouped per app; every other item as a row, with
    its entry number. (A Python loop: column scans with map/compress were
    measured slower.)"""
    groups: _Groups = {}
    rows: list[Any] = []
    row_numbers: list[int] = []
    priority = _JSON_PRIORITY
    for i, item in enumerate(items, start):
        # Keys: app and event (checked below), and priority if a third one.
        if type(item) is dict and (len(item) == 2 or (len(item) == 3 and "priority" in item)):
            app, event, p = item.get("app"), item.get("event"), item.get("priority", "P1")
            if type(app) is str and app and type(event) is str and event and type(p) is str:
                prio = priority.get(p)
                if prio is not None:
                    group = groups.get(app)
                    if group is None:
                        group = groups[app] = ([], bytearray(), [])
                    group[0].append(event)
                    group[1].append(prio)
                    group[2].append(i)
                    continue
        rows.append(item)
        row_numbers.append(i)
    return groups, rows, row_numbers


def _json_chunk(items: list[Any], start: int, where: str = "rules") -> pb.PushSnapshotRequest:
    """One RuleChunk for ``items`` (entries ``start``...): plain rules as
    per-app columns, the rest as rows; ``entries`` numbers them as in the
    JSON when that order changed."""
    groups, rows, row_numbers = _classify(items, start)
    req = pb.PushSnapshotRequest()
    chunk = req.chunk
    _add_json_rules(chunk.rules, rows, where, numbers=row_numbers)
    numbers = row_numbers
    for app, (events, prios, group_numbers) in groups.items():
        try:
            chunk.plain.add(app=app, events=events, priorities=bytes(prios))
        except (TypeError, ValueError):  # an event protobuf cannot carry: name it
            _add_json_rules(pb.RuleChunk().rules, ({"app": app, "event": e} for e in events), where,
                            numbers=group_numbers)
            raise
        numbers += group_numbers
    if numbers != list(range(start, start + len(items))):
        chunk.entries.extend(numbers)
    return req


def _json_version(obj: Mapping[str, Any], key: str, where: str) -> int:
    if key not in obj:
        raise RulesError(f"{where}: {key!r} is required")
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_VERSION:
        raise RulesError(f"{where}.{key}: version must be an unsigned 64-bit integer, got {v!r}")
    return v


def _json_apps(obj: Any) -> list[pb.AppSettings]:
    if obj is None:
        return []
    if not isinstance(obj, dict):
        raise RulesError("apps: expected an object keyed by app id")
    out = []
    for app, settings in obj.items():
        where = f"apps[{app!r}]"
        if not isinstance(settings, dict):
            raise RulesError(f"{where}: expected an object, got {type(settings).__name__}")
        unknown = sorted(set(settings) - {"mode", "default_priority"})
        if unknown:
            raise RulesError(f"{where}: unknown field(s) {', '.join(unknown)}")
        mode = settings.get("mode", "enforce")
        prio = settings.get("default_priority", "P2")
        if not isinstance(mode, str) or mode not in _JSON_MODE:
            raise RulesError(f"{where}: mode must be 'enforce' or 'monitor', got {mode!r}")
        if not isinstance(prio, str) or prio not in _JSON_PRIORITY:
            raise RulesError(f"{where}: unknown priority {prio!r} (expected one of P0, P1, P2)")
        out.append(pb.AppSettings(app=app, mode=_JSON_MODE[mode], default_priority=_JSON_PRIORITY[prio]))
    return out


def json_bytes_to_requests(data: bytes, piece_bytes: int = JSON_PIECE_BYTES
                           ) -> Iterator[pb.PushSnapshotRequest]:
    """A snapshot document (JSON bytes, unparsed) as a PushSnapshot stream."""
    view = memoryview(data)
    for start in range(0, max(len(data), 1), piece_bytes):
        yield pb.PushSnapshotRequest(json=bytes(view[start:start + piece_bytes]))


def json_parts_to_requests(head: bytes, parts: Iterable[bytes]) -> Iterator[pb.PushSnapshotRequest]:
    """A snapshot document split by ``core.snapshot_json.split_document`` as a
    PushSnapshot stream."""
    yield pb.PushSnapshotRequest(json_head=head)
    for part in parts:
        yield pb.PushSnapshotRequest(json_rules=part)


def json_document_to_requests(data: bytes, part_bytes: int = JSON_PIECE_BYTES
                              ) -> Iterator[pb.PushSnapshotRequest]:
    """A snapshot document (JSON bytes) as a PushSnapshot stream: split at
    rule boundaries where it can be, else whole in pieces."""
    split = split_document(data, part_bytes)
    if split is None:
        return json_bytes_to_requests(data, part_bytes)
    return json_parts_to_requests(*split)


def json_snapshot_to_requests(obj: Any, chunk_size: int = DEFAULT_CHUNK_RULES
                              ) -> Iterator[pb.PushSnapshotRequest]:
    """A SPEC section 2 snapshot (parsed JSON) as a PushSnapshot stream. The
    header is checked now; rules are converted lazily, chunk by chunk, and a
    rule protobuf cannot carry raises RulesError from the iterator."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    obj = check_keys(obj, {"version", "apps", "rules"}, "snapshot")
    version = _json_version(obj, "version", "snapshot")
    apps = _json_apps(obj.get("apps"))
    rules = obj.get("rules", [])
    if not isinstance(rules, list):
        raise RulesError("rules: expected a list of rules")
    header = pb.PushSnapshotRequest(header=pb.SnapshotHeader(version=version, apps=apps,
                                                             rule_count=len(rules)))
    return itertools.chain([header], _json_chunks(rules, chunk_size))


def _json_chunks(rules: list[Any], chunk_size: int) -> Iterator[pb.PushSnapshotRequest]:
    for start in range(0, len(rules), chunk_size):
        yield _json_chunk(rules[start:start + chunk_size], start)


def json_delta_to_pb(obj: Any) -> pb.ApplyDeltaRequest:
    """A SPEC section 2 delta (parsed JSON) as an ApplyDeltaRequest."""
    obj = check_keys(obj, {"base_version", "version", "upserts", "deletes", "apps"}, "delta")
    req = pb.ApplyDeltaRequest(base_version=_json_version(obj, "base_version", "delta"),
                               version=_json_version(obj, "version", "delta"),
                               apps=_json_apps(obj.get("apps")))
    upserts = obj.get("upserts", [])
    if not isinstance(upserts, list):
        raise RulesError("upserts: expected a list of rules")
    _add_json_rules(req.upserts, upserts, "upserts")
    deletes = obj.get("deletes", [])
    if not isinstance(deletes, list):
        raise RulesError("deletes: expected a list of {app, event}")
    for i, d in enumerate(deletes):
        d = check_keys(d, {"app", "event"}, f"deletes[{i}]")
        app, event = app_text(d.get("app")), d.get("event")
        if not app or not isinstance(event, str) or not event:
            raise RulesError(f"deletes[{i}]: needs a non-empty 'app' and 'event', got {d!r}")
        req.deletes.add(app=app, event=event)
    return req


def requests_to_json(requests: Iterable[pb.PushSnapshotRequest]) -> dict[str, Any]:
    """An exported stream as SPEC section 2 JSON, as the gate sent it (the
    gate validated it on the way in; this does not validate again)."""
    it = iter(requests)
    first = next(it, None)
    if first is None or first.WhichOneof("part") != "header":
        raise RulesError("export: the stream did not start with a SnapshotHeader")
    header = first.header
    rules: list[dict[str, Any]] = []
    for req in it:
        for msg in req.chunk.rules:
            out: dict[str, Any] = {"app": msg.app, "event": msg.event,
                                   "priority": _PRIORITY_JSON.get(msg.priority, msg.priority)}
            if msg.HasField("sample_rate"):
                out["sample_rate"] = msg.sample_rate
            if msg.state == pb.OFFLINE:
                out["state"] = "offline"
            if msg.HasField("sample_key"):
                out["sample_key"] = msg.sample_key
            if msg.HasField("max_rate"):
                out["max_rate"] = msg.max_rate
            rules.append(out)
        for group in req.chunk.plain:
            rules += [{"app": group.app, "event": e, "priority": _PRIORITY_JSON.get(p, p)}
                      for e, p in zip(group.events, group.priorities, strict=True)]
    if len(rules) != header.rule_count:
        raise RulesError(f"export: the header announced {header.rule_count} rules, "
                         f"the stream carried {len(rules)}")
    return {"version": header.version, "apps": _apps_json(header.apps), "rules": rules}


# --- status and results -------------------------------------------------------


def rules_info_to_pb(info: RulesInfo) -> pb.RulesInfo:
    msg = pb.RulesInfo(version=info.version, rule_count=info.rule_count, digest=info.digest,
                       app_count=info.app_count)
    seconds = math.floor(info.applied_at)
    msg.applied_at.seconds = seconds
    msg.applied_at.nanos = min(int((info.applied_at - seconds) * 1e9), 999_999_999)
    return msg


def rules_info_from_pb(msg: pb.RulesInfo) -> RulesInfo:
    return RulesInfo(version=msg.version, rule_count=msg.rule_count, digest=msg.digest,
                     applied_at=msg.applied_at.seconds + msg.applied_at.nanos / 1e9,
                     app_count=msg.app_count)


def worker_to_pb(w: WorkerView) -> pb.WorkerStatus:
    state = cast(pb.WorkerState, int(w.state))  # same numbers (tests/unit/test_control_serde.py)
    return pb.WorkerStatus(worker=w.worker, pid=w.pid, state=state, rules_version=w.rules_version,
                           input_lag=w.input_lag, events_per_second=w.events_per_second,
                           events_in=w.events_in, restarts=w.restarts)


def worker_from_pb(msg: pb.WorkerStatus) -> WorkerView:
    try:
        state = WorkerState(msg.state)
    except ValueError:  # a newer gate's state
        state = WorkerState.UNSPECIFIED
    return WorkerView(worker=msg.worker, pid=msg.pid, state=state, rules_version=msg.rules_version,
                      input_lag=msg.input_lag, events_per_second=msg.events_per_second,
                      events_in=msg.events_in, restarts=msg.restarts)


def status_to_pb(status: GateStatus) -> pb.Status:
    msg = pb.Status(instance=status.instance, serving=status.serving,
                    workers=[worker_to_pb(w) for w in status.workers])
    if status.rules is not None:
        msg.rules.CopyFrom(rules_info_to_pb(status.rules))
    return msg


def status_from_pb(msg: pb.Status) -> GateStatus:
    return GateStatus(instance=msg.instance, serving=msg.serving,
                      rules=rules_info_from_pb(msg.rules) if msg.HasField("rules") else None,
                      workers=[worker_from_pb(w) for w in msg.workers])


def push_result_to_pb(result: PushResult) -> pb.PushResponse:
    return pb.PushResponse(rules=rules_info_to_pb(result.rules),
                           workers=[pb.WorkerAck(worker=w, rules_version=v) for w, v in result.acks],
                           apply_seconds=result.apply_seconds)


def push_result_from_pb(msg: pb.PushResponse) -> PushResult:
    return PushResult(rules=rules_info_from_pb(msg.rules),
                      acks=[(a.worker, a.rules_version) for a in msg.workers],
                      apply_seconds=msg.apply_seconds)


def watch_interval(req: pb.WatchStatusRequest, default: float = 5.0) -> float:
    """The requested status interval (0 or nonsense: the default), clamped to 0.1 s .. 1 h."""
    s = req.interval_seconds
    return min(max(s, 0.1), 3600.0) if math.isfinite(s) and s > 0 else default


def proto_worker_states() -> dict[str, int]:
    """The proto's WorkerState names and numbers (a test keeps model.WorkerState in step)."""
    return dict(pb.WorkerState.items())


# --- per-event statistics -----------------------------------------------------

_ORDER_FROM_PB = {pb.STATS_ORDER_UNSPECIFIED: "count", pb.COUNT: "count", pb.BYTES: "bytes"}
_ORDER_TO_PB = {"count": pb.COUNT, "bytes": pb.BYTES}


def event_stats_request(query: StatsQuery) -> pb.EventStatsRequest:
    """A query as a request. Raises InvalidRequest for what protobuf cannot
    carry (an unknown order, a negative number); the gate checks the rest."""
    if query.by not in _ORDER_TO_PB:
        raise InvalidRequest(f"by: expected 'count' or 'bytes', got {query.by!r}")
    try:
        return pb.EventStatsRequest(top=query.top, by=_ORDER_TO_PB[query.by], app=query.app or "",
                                    decision=query.decision or "",
                                    window_minutes=query.window_minutes)
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidRequest(f"event stats request: {e}") from None


def stats_query_from_pb(req: pb.EventStatsRequest) -> StatsQuery:
    """Validate a request; InvalidRequest names the field."""
    by = _ORDER_FROM_PB.get(req.by)
    if by is None:
        raise InvalidRequest(f"by: unknown order {req.by} (expected COUNT or BYTES)")
    if req.decision and req.decision not in OUTCOMES:
        raise InvalidRequest(f"decision: unknown decision {req.decision!r} "
                             f"(expected one of {', '.join(OUTCOMES)})")
    if req.top > MAX_STATS_TOP:
        raise InvalidRequest(f"top: at most {MAX_STATS_TOP}, got {req.top}")
    return StatsQuery(top=req.top or DEFAULT_STATS_TOP, by=by, app=req.app or None,
                      decision=req.decision or None, window_minutes=req.window_minutes)


def event_stat_to_pb(s: EventStat) -> pb.EventStat:
    return pb.EventStat(app=s.app, event=s.event, decision=s.decision, count=s.count, bytes=s.bytes,
                        priority=s.priority, cost=s.cost, error=s.error)


def event_stat_from_pb(msg: pb.EventStat) -> EventStat:
    return EventStat(app=msg.app, event=msg.event, decision=msg.decision, count=msg.count,
                     bytes=msg.bytes, priority=msg.priority, cost=msg.cost, error=msg.error)


def app_stat_to_pb(a: AppStat) -> pb.AppStat:
    return pb.AppStat(app=a.app, events=a.events, bytes=a.bytes, unregistered=a.unregistered,
                      blocked=a.blocked, useless_ratio=a.useless_ratio)


def app_stat_from_pb(msg: pb.AppStat) -> AppStat:
    # useless_ratio is derived from the counts (AppStat.useless_ratio).
    return AppStat(app=msg.app, events=msg.events, bytes=msg.bytes, unregistered=msg.unregistered,
                   blocked=msg.blocked)


def event_stats_to_pb(report: EventStatsReport) -> pb.EventStatsResponse:
    return pb.EventStatsResponse(
        rows=[event_stat_to_pb(s) for s in report.rows],
        apps=[app_stat_to_pb(a) for a in report.apps],
        approximate=report.approximate,
        surging=[pb.SurgingEvent(app=s.app, event=s.event, baseline_per_second=s.baseline_per_second)
                 for s in report.surging],
        total_count=report.total_count)


def event_stats_from_pb(msg: pb.EventStatsResponse) -> EventStatsReport:
    return EventStatsReport(
        rows=[event_stat_from_pb(s) for s in msg.rows],
        apps=[app_stat_from_pb(a) for a in msg.apps],
        approximate=msg.approximate,
        surging=[SurgingEvent(s.app, s.event, s.baseline_per_second) for s in msg.surging],
        total_count=msg.total_count)
