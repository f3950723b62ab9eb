"""Writing the priority into the payload (SPEC section 4, ``tag.field``).

Only that one top-level field is added or replaced; every other byte of the
payload stays as it was (no re-serialisation, so number formatting, key order
and whitespace survive). Inputs here have already passed the JSON parser, so
the scanner may assume well-formed JSON.
"""

from __future__ import annotations

import re

import orjson

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_SCALAR = re.compile(rb"[^,}\]\s]*")
_WS = re.compile(rb"[ \t\r\n]*")


class FieldTagger:
    """Adds or replaces one top-level string field; built once per config."""

    __slots__ = ("field", "_needle", "_values", "_escape")

    def __init__(self, field: str) -> None:
        self.field = field
        self._needle = orjson.dumps(field)
        # Pre-encoded `"field":"P0"` pieces, one per priority.
        self._values = {p: orjson.dumps(p) for p in ("P0", "P1", "P2")}
        # Other spellings of the key: a \u escape, or "\/" when the name has a "/".
        self._escape = b"\\" if "/" in field else b"\\u"

    def tag(self, raw: bytes, priority: str) -> bytes:
        value = self._values[priority]
        # Fast path: the key's bytes (or an escape that could spell them) are
        # absent, so the field is certainly not present: insert after "{".
        if self._needle not in raw and self._escape not in raw:
            return self._insert(raw, value)
        spans = _top_level_value_spans(raw, self.field)
        if not spans:
            return self._insert(raw, value)
        out = bytearray()
        pos = 0
        for start, end in spans:
            out += raw[pos:start]
            out += value
            pos = end
        out += raw[pos:]
        return bytes(out)

    def _insert(self, raw: bytes, value: bytes) -> bytes:
        brace = raw.index(b"{")
        after = _WS.match(raw, brace + 1).end()  # type: ignore[union-attr]
        sep = b"" if raw[after:after + 1] == b"}" else b","
        return raw[:brace + 1] + self._needle + b":" + value + sep + raw[brace + 1:]


def _skip_value(raw: bytes, pos: int) -> int:
    c = raw[pos:pos + 1]
    if c == b'"':
        return _STRING.match(raw, pos).end()  # type: ignore[union-attr]
    if c in (b"{", b"["):
        depth = 0
        n = len(raw)
        while pos < n:
            ch = raw[pos]
            if ch == 0x22:  # '"'
                pos = _STRING.match(raw, pos).end()  # type: ignore[union-attr]
                continue
            if ch in (0x7B, 0x5B):
                depth += 1
            elif ch in (0x7D, 0x5D):
                depth -= 1
                if depth == 0:
                    return pos + 1
            pos += 1
        return pos
    return _SCALAR.match(raw, pos).end()  # type: ignore[union-attr]


def _top_level_value_spans(raw: bytes, field: str) -> list[tuple[int, int]]:
    """Byte spans of the values of every top-level member named ``field``."""
    spans: list[tuple[int, int]] = []
    pos = _WS.match(raw, 0).end() + 1  # type: ignore[union-attr]  # past "{"
    while True:
        pos = _WS.match(raw, pos).end()  # type: ignore[union-attr]
        if raw[pos:pos + 1] != b'"':
            return spans  # "}" of the object
        key_end = _STRING.match(raw, pos).end()  # type: ignore[union-attr]
        key = orjson.loads(raw[pos:key_end])
        pos = _WS.match(raw, key_end).end() + 1  # type: ignore[union-attr]  # past ":"
        start = _WS.match(raw, pos).end()  # type: ignore[union-attr]
        end = _skip_value(raw, start)
        if key == field:
            spans.append((start, end))
        pos = _WS.match(raw, end).end()  # type: ignore[union-attr]
        if raw[pos:pos + 1] == b",":
            pos += 1
