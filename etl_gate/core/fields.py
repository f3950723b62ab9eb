"""Reading the few fields the decision needs out of a parsed event (SPEC section 1).

Paths are dotted (``header.app_id``) and always split on dots. A path is
compiled once into a getter so the hot loop does no string work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MISSING: Any = object()
"""Returned by a getter when the path is absent (distinct from JSON null)."""

Getter = Callable[[Any], Any]


def compile_path(path: str) -> Getter:
    parts = tuple(path.split("."))
    if len(parts) == 1:
        key = parts[0]

        def get_one(obj: Any) -> Any:
            return obj.get(key, MISSING)

        return get_one

    def get_nested(obj: Any) -> Any:
        return walk(obj, parts)

    return get_nested


def walk(value: Any, parts: tuple[str, ...]) -> Any:
    """The value at ``parts`` inside ``value`` (nested dicts), else MISSING."""
    for part in parts:
        if type(value) is not dict:
            return MISSING
        value = value.get(part, MISSING)
        if value is MISSING:
            return MISSING
    return value


def first_present(obj: Any, getters: tuple[Getter, ...]) -> Any:
    """The value at the first path that is present and not null, else MISSING."""
    for get in getters:
        value = get(obj)
        if value is not MISSING and value is not None:
            return value
    return MISSING


def event_time_ms(value: Any) -> int | None:
    """Epoch seconds or milliseconds (SPEC section 1) as integer milliseconds.

    Values below 1e11 are seconds (1e11 s is the year 5138; 1e11 ms is 1973),
    so both units of any realistic time are told apart.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value != value or value in (float("inf"), float("-inf")) or value < 0:
        return None
    if value < 1e11:
        return int(value * 1000)
    return int(value)
