"""A SPEC section 2 snapshot straight from its JSON bytes.

``parse_snapshot_json(data)`` is ``parse_snapshot(orjson.loads(data))``: the
same RulesSnapshot, or the same RulesError. It exists for speed. A 500k-rule
allow-list is 24 MB of JSON; as dicts (orjson) it takes 0.2 s to parse and
0.3 s more to sort into per-app tables. Decoded by msgspec into Structs that
name the rule fields, the parse takes half that and each rule is a few slot
reads, so the gate can take a pushed document as it is and the client
converts nothing. ``ctl push`` sends it split at rule boundaries
(``split_document``), which the gate decodes part by part as the parts
arrive (``SnapshotParts``): the same result as the whole document.

The fast path accepts only what it can prove the core accepts, and gives up
(returns None) on anything else, which then goes through orjson and
``parse_snapshot`` for the verdict and its wording. Where the two decoders
differ, the fast path gives up:

- UTF-8: a document with a non-ASCII byte is checked by Python's strict
  decoder first (it refuses what orjson refuses), as core/reader.py does.
- Integers beyond 64 bits (orjson reads them as floats): out of the version
  range, and out of 0..1 as a sample rate, so refused either way.
- Numbers as app ids, bools as numbers, null rules: Struct types refuse them.
- Duplicate JSON keys: both keep the last occurrence.
- Duplicate (app, event) rules: detected by count, named by the core.

tests/unit/test_snapshot_json.py compares both paths case by case and on
fuzzed mutations, whole and in parts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Literal

import msgspec
import orjson

from .reader import DECODE_ERRORS, valid_utf8
from .rules import (
    _PRIORITY_INDEX,
    MAX_VERSION,
    MODES,
    AppSettings,
    NamesInForce,
    Rule,
    RulesError,
    RulesSnapshot,
    Table,
    names_of,
    parse_snapshot,
)


class _Rule(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    app: str
    event: str
    # Literals: decoded as the one str object each, not a new one per rule.
    priority: Literal["P0", "P1", "P2"] = "P1"
    state: Literal["active", "offline"] = "active"
    sample_rate: float = 1.0
    sample_key: str | None = None
    max_rate: float | None = None


class _App(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    mode: str = "enforce"
    default_priority: str = "P2"


class _Snapshot(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    version: int
    apps: dict[str, _App] | None = None
    rules: list[_Rule] = msgspec.field(default_factory=list)


_DECODER = msgspec.json.Decoder(_Snapshot)
_NO_NAMES: dict[str, str] = {}


def parse_snapshot_json(data: bytes, in_force: NamesInForce | None = None) -> RulesSnapshot:
    """Validate a snapshot document (JSON bytes). ``in_force``: each app's
    event names in force (the tables of the rules in force), whose str objects
    the new tables reuse (``names_of``). Raises RulesError."""
    snapshot = _fast(data, in_force)
    if snapshot is not None:
        return snapshot
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise RulesError(f"not valid JSON: {e}") from None
    return parse_snapshot(obj)


def _fast(data: bytes, in_force: NamesInForce | None) -> RulesSnapshot | None:
    doc = _decoded(_DECODER, data)
    if doc is None:
        return None
    if not 0 <= doc.version <= MAX_VERSION:
        return None
    apps = _apps(doc.apps)
    if apps is None:
        return None
    tables: dict[str, Table] = {}
    if not _add(tables, doc.rules, in_force, {}):
        return None
    if sum(map(len, tables.values())) != len(doc.rules):
        return None  # a duplicate key: the core names it
    # No rules_digest: the authority sums it while the workers build.
    return RulesSnapshot(doc.version, tables, apps, len(doc.rules))


def _decoded(decoder: msgspec.json.Decoder[Any], data: bytes) -> Any:
    """``data`` decoded, or None where the fast path gives up: not valid
    UTF-8 (see reader.valid_utf8), or refused by the decoder."""
    if not valid_utf8(data):
        return None
    try:
        return decoder.decode(data)
    except DECODE_ERRORS:
        return None


# --- the document split at rule boundaries -----------------------------------
#
# ``ctl push`` sends a document as its head (the members other than "rules")
# and the rules in arrays of consecutive entries (split_document), so that the
# gate decodes each part as it arrives (SnapshotParts): the parse overlaps the
# upload, and each part's decoded objects are freed before the next part is
# decoded, so the next part reuses their memory. Decoded whole, a 500k-rule
# document's objects take ~100 MiB of fresh memory per push, and beside a busy
# stream the page faults for it cost as much CPU as the parse itself
# (bench/RESULTS.md).


class _Head(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    version: int
    apps: dict[str, _App] | None = None


_HEAD = msgspec.json.Decoder(_Head)
_RULES = msgspec.json.Decoder(list[_Rule])
_MEMBERS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_VALUE = msgspec.json.Decoder(msgspec.Raw)
_EMPTY_ARRAY = re.compile(rb"\[[ \t\r\n]*\]\Z")


def split_document(data: bytes, part_bytes: int) -> tuple[bytes, list[bytes]] | None:
    """A snapshot document as (head, rule arrays of about ``part_bytes``
    each): the head is a JSON object of the members other than "rules", the
    parts hold the "rules" array's elements verbatim, in order. None when the
    document is not valid UTF-8 and JSON, or not an object whose "rules" (if
    any) is an array: send it whole, so that the gate's verdict quotes it as
    it is. Duplicate members keep the last, as orjson and msgspec do."""
    members = _decoded(_MEMBERS, data)
    if members is None:
        return None
    rules = bytes(members.pop("rules", b"[]"))
    if not rules.startswith(b"["):
        return None
    head = b"{" + b",".join(orjson.dumps(k) + b":" + bytes(v) for k, v in members.items()) + b"}"
    parts = _rule_arrays(rules, part_bytes)
    return None if parts is None else (head, parts)


def _rule_arrays(array: bytes, part_bytes: int) -> list[bytes] | None:
    """A JSON array (valid JSON, without whitespace around it) cut into
    arrays of about ``part_bytes``. A cut goes after a ``}`` followed by a
    comma, and only where the elements before it, between brackets, are
    valid JSON (checked by msgspec's skipping parser, which makes no
    objects): that holds only at a boundary between elements, since a ``}``
    inside a string or a nested value leaves a string or a bracket open. None
    after too many failed tries for one cut (``},`` inside many strings), or
    when a part would be far larger than asked (no ``},`` to cut at, as in
    ``} ,``: it might not fit in a message): then the document is sent whole."""
    view = memoryview(array)
    parts: list[bytes] = []
    start, end = 1, len(array) - 1  # between the brackets
    if _EMPTY_ARRAY.match(array):
        return parts
    largest = max(32 * part_bytes, 1 << 20)
    while True:
        probe, cut, misses = start + part_bytes, end, 0
        while probe < end:
            i = array.find(b"},", probe, end)
            if i < 0 or i - start > largest:
                break
            part = b"".join((b"[", view[start:i + 1], b"]"))
            try:
                _VALUE.decode(part)
            except DECODE_ERRORS:
                misses += 1
                if misses > 16:
                    return None
                probe = i + 2
                continue
            parts.append(part)
            cut = i + 1
            break
        if cut == end:
            if end - start > largest:
                return None
            parts.append(b"".join((b"[", view[start:end], b"]")))
            break
        start = cut + 1  # past the comma
    return parts


class SnapshotParts:
    """A document received as (head, rule arrays) (split_document), decoded
    part by part: ``snapshot()`` is ``parse_snapshot_json`` of the document
    they mean, the same RulesSnapshot or the same RulesError. The fast path
    decodes each part as it is added; once it gives up, the parts are only
    kept, and ``snapshot()`` parses the document rebuilt from them."""

    def __init__(self, head: bytes, in_force: NamesInForce | None = None) -> None:
        try:
            members = _MEMBERS.decode(head)
        except DECODE_ERRORS as e:
            raise RulesError(f"push: the json_head is not a JSON object: {e}") from None
        if "rules" in members:
            raise RulesError("push: the json_head holds 'rules'; they travel as json_rules parts")
        self._head = head if members else b""
        self._in_force = in_force
        self._parts: list[bytes] = []
        self.size = len(head)
        self._tables: dict[str, Table] = {}
        self._seen: _SeenApps = {}
        self._count = 0
        self._version = 0
        self._apps: dict[str, AppSettings] | None = None
        h = _decoded(_HEAD, head)
        if h is not None and 0 <= h.version <= MAX_VERSION:
            self._version = h.version
            self._apps = _apps(h.apps)

    def add(self, part: bytes, where: str = "json_rules") -> None:
        """Decode one JSON array of rules. RulesError if it is not an array."""
        self._parts.append(part)
        self.size += len(part)
        rules = None if self._apps is None else _decoded(_RULES, part)
        if rules is not None and _add(self._tables, rules, self._in_force, self._seen):
            self._count += len(rules)
            return
        self._apps = None  # the fast path gives up: keep the parts, for the rebuilt document
        self._tables = {}
        try:
            _VALUE.decode(part)  # valid JSON, no object made per rule
        except DECODE_ERRORS as e:
            raise RulesError(f"push: {where} is not a JSON array of rules: {e}") from None
        if not part.lstrip().startswith(b"["):
            raise RulesError(f"push: {where} is not a JSON array of rules")

    @property
    def fast(self) -> bool:
        """Whether every part so far took the fast path."""
        return self._apps is not None

    def snapshot(self) -> RulesSnapshot:
        if self._apps is not None and sum(map(len, self._tables.values())) == self._count:
            return RulesSnapshot(self._version, self._tables, self._apps, self._count)
        return parse_snapshot_json(self.document(), self._in_force)

    def document(self) -> bytes:
        """The document the head and parts mean."""
        rules = b",".join(e for e in (p.strip()[1:-1].strip() for p in self._parts) if e)
        head = self._head.rstrip()[:-1] + b"," if self._head else b"{"
        return head + b'"rules":[' + rules + b"]}"


def _apps(found: dict[str, _App] | None) -> dict[str, AppSettings] | None:
    apps: dict[str, AppSettings] = {}
    for app, s in (found or {}).items():
        prio = _PRIORITY_INDEX.get(s.default_priority)
        if prio is None or s.mode not in MODES:
            return None
        apps[app] = AppSettings(s.mode == "monitor", prio)
    return apps


# app -> (its key in the tables, its table, .get of its names in force)
_SeenApps = dict[str, tuple[str, Table, Callable[[str], str | None]]]


def _add(tables: dict[str, Table], rules: list[_Rule], in_force: NamesInForce | None,
         apps: _SeenApps) -> bool:
    """Add ``rules`` to the per-app tables, in rule order (as
    RulesSnapshot.from_rules builds them); False if a rule may be invalid.
    ``apps``: the apps added so far (empty at the first call)."""
    prio_of = _PRIORITY_INDEX.get
    last_app: str | None = None
    key = ""
    table: Table = {}
    known: Callable[[str], str | None] = _NO_NAMES.get
    for r in rules:
        app, event = r.app, r.event
        prio = prio_of(r.priority)
        if prio is None or not event:
            return False
        if app != last_app:  # the rules of an app usually come together
            if not app:
                return False
            seen = apps.get(app)
            if seen is None:
                seen = apps[app] = (_copy(app), {}, names_of(in_force, app).get)
                tables[seen[0]] = seen[1]
            key, table, known = seen
            last_app = app
        name = known(event)
        if name is None:
            name = _copy(event)
        if r.state == "active" and r.sample_rate == 1.0 and r.sample_key is None and r.max_rate is None:
            table[name] = prio
        else:
            special = _special(r, key, name, prio)
            if special is None:
                return False
            table[name] = special
    return True


def _copy(text: str) -> str:
    """A new str equal to ``text``. Whatever the tables keep (names, app ids,
    sample keys, rates) is copied out of the decoded document: left in place,
    the survivors would pin each allocator arena of the ~100 MB the
    document's objects took, and CPython returns an arena to the system only
    once it is empty (measured: the supervisor kept +157 MiB after a 500k
    push instead of +38)."""
    return text.encode().decode()


def _special(r: _Rule, app: str, event: str, prio: int) -> Rule | None:
    """The Rule of a sampled, offline, keyed or capped rule, if valid."""
    rate, key, cap = r.sample_rate, r.sample_key, r.max_rate
    if not 0.0 <= rate <= 1.0:  # (the state is one of the two: a Literal)
        return None
    if key is not None and (key == "" or "" in key.split(".")):
        return None
    if cap is not None and (not math.isfinite(cap) or cap <= 0):
        return None
    # Copies of what was decoded (see _copy): a float is an object too.
    return Rule(app, event, prio, rate * 1.0, r.state == "offline",
                None if key is None else _copy(key), None if cap is None else cap * 1.0)
