"""Reading an event's few decision fields without parsing the whole event.

A decision needs the app, the event name and, for a sampled rule, a user key:
three or four of the twenty-odd fields of a typical event. ``orjson.loads``
builds every field (the ``props`` object, each string) only to drop them; a
schema-directed decoder (msgspec, with a Struct that names just the needed
top-level fields) validates the whole document but materialises only those
fields, in about half the time on ~350-byte events (bench/core_bench.py).

What the decision sees is what ``orjson.loads`` would give (SPEC section 1,
3), checked edge case by edge case in tests/unit/test_reader.py:

- UTF-8: msgspec does not validate UTF-8 inside strings it skips, so a
  message with any non-ASCII byte is first checked with Python's strict
  decoder (it rejects what orjson rejects: bad sequences, overlongs,
  surrogates). ASCII-only messages, the common case, need no check.
- Duplicate keys: both keep the last occurrence.
- Integers outside orjson's 64-bit range: orjson reads them as floats,
  msgspec as ints. ``orjson_value`` converts the values the decision reads
  (app, sample key, time), so a sample key hashes to the same bytes.
- Documents msgspec rejects go to ``orjson.loads`` for the verdict. That keeps
  orjson's answer for documents nested 1000 to 1023 deep, which msgspec
  refuses at Python's recursion limit while orjson accepts up to 1024.
- One difference is kept on purpose: a number too large for a double
  (``1e400``) in a field the decision does not read. RFC 8259 section 6 calls
  it valid JSON and leaves its range to implementations; msgspec skips it
  unread, orjson refuses the whole event. The gate passes such an event
  through untouched (docs/DECISIONS.md). In a field the decision reads, both
  refuse it: the event is malformed, as before.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import orjson

from .fields import MISSING, Getter, walk

# What a failed decode raises. RecursionError: msgspec's nesting limit;
# orjson's error: the decode of a reader whose keys msgspec cannot match
# (EventReader).
DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError,
                 orjson.JSONDecodeError)

INVALID: Any = object()
"""What ``EventReader.read`` returns for a message that is not valid JSON."""

_I64_MIN = -(1 << 63)
_U64_MAX = (1 << 64) - 1


def orjson_value(value: Any) -> Any:
    """``value`` as ``orjson.loads`` would have produced it: integers beyond
    its 64-bit range become floats, inside containers too."""
    t = type(value)
    if t is int:
        return value if _I64_MIN <= value <= _U64_MAX else float(value)
    if t is dict:
        return {k: orjson_value(v) for k, v in value.items()}
    if t is list:
        return [orjson_value(v) for v in value]
    return value


def valid_utf8(data: bytes) -> bool:
    """Whether ``data`` is valid UTF-8, by Python's strict decoder: it refuses
    what orjson refuses (bad sequences, overlongs, surrogates), which msgspec
    does not check in the strings it skips. ASCII, the common case, needs no
    decode."""
    if data.isascii():
        return True
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _matchable(key: str) -> bool:
    """Whether msgspec can match ``key`` by name: it refuses names with a
    quote, a backslash or a control character."""
    return not any(c in '"\\' or c < " " for c in key)


def _field_name(segment: str) -> str:
    # A Struct attribute for any JSON key: deterministic, so getters made for
    # one reader work on the Struct of any reader that has the same segment.
    return "f_" + segment.encode().hex()


class EventReader:
    """Decodes events into a Struct holding the first segment of each path
    (``header`` for ``header.app_id``; absent fields read as MISSING)."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = frozenset(paths)
        self.segments = tuple(sorted({p.split(".")[0] for p in self.paths}))
        names = [_field_name(s) for s in self.segments]
        fields = [(n, Any, MISSING) for n in names]
        self.decode: Callable[[bytes], Any]
        # gc=False: a decoded event holds JSON values only, which cannot
        # form cycles; untracked Structs are cheaper to create and free.
        if all(map(_matchable, self.segments)):
            self.struct: Any = msgspec.defstruct(
                "Event", fields, rename=dict(zip(names, self.segments, strict=True)), gc=False)
            self.decode = msgspec.json.Decoder(self.struct).decode
        else:
            # A key msgspec will not match (a quote, a backslash or a control
            # character in it): parse the whole event instead, slower but
            # the same values, rather than refuse the config or the rules.
            self.struct = msgspec.defstruct("Event", fields, gc=False)
            self.decode = _whole_event_decoder(self.struct, self.segments)

    def covers(self, path: str) -> bool:
        return path in self.paths

    def read(self, raw: bytes) -> Any:
        """The event's Struct; INVALID if it is not valid JSON (or not UTF-8);
        the parsed value if it is JSON but not an object."""
        if not valid_utf8(raw):
            return INVALID
        try:
            return self.decode(raw)
        except DECODE_ERRORS:
            pass
        # Not valid for msgspec: orjson has the last word (see module doc).
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return INVALID
        if type(obj) is not dict:
            return obj
        return self.from_dict(obj)

    def from_dict(self, obj: dict[str, Any]) -> Any:
        """The Struct of an event already parsed into a dict."""
        return self.struct(*[obj.get(s, MISSING) for s in self.segments])


def _whole_event_decoder(struct: Any, segments: tuple[str, ...]) -> Callable[[bytes], Any]:
    """A decode that parses the whole event: raises as the msgspec one does.
    A closure, not a method: the reader holding its own bound method would be
    a reference cycle."""

    def decode(raw: bytes) -> Any:
        obj = orjson.loads(raw)
        if type(obj) is not dict:
            raise msgspec.ValidationError("not an object")
        return struct(*[obj.get(s, MISSING) for s in segments])

    return decode


def struct_attribute(path: str) -> str | None:
    """The Struct attribute holding a top-level ``path``; None for a nested one."""
    return None if "." in path else _field_name(path)


def reader_getter(path: str) -> Getter:
    """A getter for ``path`` on the Struct of any EventReader that covers it:
    the value, or MISSING when absent."""
    parts = path.split(".")
    name = _field_name(parts[0])
    rest = tuple(parts[1:])
    if not rest:
        return operator.attrgetter(name)  # C speed: the common, top-level path

    def get_nested(obj: Any) -> Any:
        return walk(getattr(obj, name), rest)

    return get_nested
