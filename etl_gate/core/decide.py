"""The per-event decision of SPEC section 3, as a pure function of
(payload bytes, compiled rules, input timestamp).

``Decider`` is built once per rules version (``build_decider``) and never
mutated except for the token buckets of rate-capped rules, whose state is the
whole point of a cap. It does no I/O, logging, metrics or locking; adapters
act on the ``Verdict`` it returns. Verdicts are shared, precomputed objects
(headers included), so deciding allocates nothing beyond what the JSON parser
returns.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

import mmh3
import orjson

from .fields import MISSING, Getter, event_time_ms, first_present
from .packed import PackedDelta, PackedRules, pack
from .reader import DECODE_ERRORS, INVALID, EventReader, orjson_value, reader_getter, struct_attribute
from .rules import PRIORITIES, BaseVersionMismatch, Rule, RulesSnapshot, app_text

# Outcomes (SPEC section 3). Ints so adapters can count into a list by index.
PASSED, SAMPLED_OUT, UNREGISTERED, BLOCKED, MALFORMED, THROTTLED = range(6)
OUTCOMES: tuple[str, ...] = ("passed", "sampled_out", "unregistered", "blocked",
                             "malformed", "throttled")

# Why an event is malformed; the value of the DLQ's `error` header.
MALFORMED_REASONS = ("invalid_json", "not_object", "missing_app", "bad_app",
                     "missing_event", "bad_event")

Headers = list[tuple[str, bytes]]


class Verdict:
    """What to do with one event. Shared between events: never mutate."""

    __slots__ = ("outcome", "priority", "headers", "reason", "quarantine")

    def __init__(self, outcome: int, priority: int = -1, headers: Headers | None = None,
                 reason: str | None = None, quarantine: bool = False) -> None:
        self.outcome = outcome
        self.priority = priority  # index into PRIORITIES; -1: not routed
        self.headers = headers  # tag headers for routed events (None: tagging off)
        self.reason = reason  # malformed reason
        self.quarantine = quarantine  # unregistered copy to the quarantine topic

    @property
    def routed(self) -> bool:
        return self.priority >= 0

    def __repr__(self) -> str:
        prio = PRIORITIES[self.priority] if self.priority >= 0 else "-"
        return f"Verdict({OUTCOMES[self.outcome]}, {prio}, reason={self.reason})"


class DecideFn(Protocol):
    def __call__(self, raw: bytes, ts_ms: int | None = None, /) -> Verdict: ...


class Seen:
    """The app and event of the last well-formed event a decider decided,
    for the worker's per-event statistics (a malformed event leaves it
    unchanged: its key is its reason)."""

    __slots__ = ("app", "event")

    def __init__(self) -> None:
        self.app = ""
        self.event = ""


@dataclass(frozen=True, slots=True)
class DecisionSettings:
    """The parts of the gate config that change decisions (SPEC section 1-4)."""

    app_path: str = "app_id"
    event_path: str = "event"
    sample_keys: tuple[str, ...] = ("user_id", "device_id")
    time_path: str = "time"
    seed: int = 0
    tag_headers: bool = True
    quarantine_rate: float = 0.0
    # Share of each rule's max_rate this decider enforces: 1/workers, since a
    # cap is per gate instance and every worker process decides on its own.
    rate_share: float = 1.0


def threshold(rate: float) -> int:
    """Keep iff mmh3 < threshold (SPEC section 3.3)."""
    return int(rate * 4294967296)


def rate_text(rate: float) -> bytes:
    """Decimal text of a sample rate for the `sample-rate` header (SPEC section 4):
    the shortest repr's digits, never exponent notation (1e-05 -> 0.00001)."""
    return format(Decimal(repr(float(rate))), "f").encode()


class TokenBucket:
    """A rate cap in events/s over an injected millisecond clock.

    The clock only moves forward: an older timestamp (another partition that
    lags) is treated as the latest one seen. Burst capacity is one second.
    """

    __slots__ = ("rate", "capacity", "tokens", "last_ms")

    def __init__(self, rate: float) -> None:
        self.rate = rate / 1000.0  # tokens per millisecond
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.last_ms: int | None = None

    def take(self, now_ms: int) -> bool:
        last = self.last_ms
        if last is None:
            self.last_ms = now_ms
        elif now_ms > last:
            tokens = self.tokens + (now_ms - last) * self.rate
            self.tokens = tokens if tokens < self.capacity else self.capacity
            self.last_ms = now_ms
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class _CompiledRule:
    """A rule that needs more than a lookup: offline, sampled or capped. Holds
    no version-specific state, so a delta keeps it (and its bucket)."""

    __slots__ = ("vkey", "offline", "threshold", "key_getters", "bucket")

    def __init__(self, vkey: tuple[int, float], offline: bool, thresh: int | None,
                 key_getters: tuple[Getter, ...], bucket: TokenBucket | None) -> None:
        self.vkey = vkey  # (priority, sample rate): picks the version's pass verdict
        self.offline = offline
        self.threshold = thresh
        self.key_getters = key_getters
        self.bucket = bucket


class _RarePath:
    """What ``decide`` does after the lookup for all but a plain registered
    event: monitor mode, quarantine, offline, sampling, caps (SPEC section 3
    steps 2-5). Apart from the Decider, which holds the compiled ``decide``
    that holds this: were it the Decider's own method, the two would form a
    cycle that only the cyclic collector frees, which the workers run seldom
    (kafka/collector.py), and a swapped-out 500k-rule decider must go as
    soon as the hot loop drops it."""

    __slots__ = ("monitor", "passes", "quarantine_threshold", "default_keys", "seed",
                 "get_time", "clock_ms")

    def __init__(self, d: Decider, clock_ms: int) -> None:
        self.monitor = d._monitor
        self.passes = d._passes  # the Decider's own dict (headers_for reads it too)
        self.quarantine_threshold = d._quarantine_threshold
        self.default_keys = d._default_keys
        self.seed = d._seed
        self.get_time = d._get_time
        self.clock_ms = clock_ms  # the latest event time seen (replay's clock for caps)

    def decide(self, obj: Any, raw: bytes, ts_ms: int | None, capp: _CompiledApp | None,
               rule: Any) -> Verdict:
        if rule is None:
            if capp is not None and capp.monitor_priority >= 0:
                # monitor mode: passes, counted unregistered
                return self.monitor[capp.monitor_priority]
            if self.quarantine_threshold and self.hash(
                    obj, raw, self.default_keys) < self.quarantine_threshold:
                return _UNREGISTERED_QUARANTINE
            return _UNREGISTERED_DROP
        if rule.offline:
            return _BLOCKED
        if rule.threshold is not None and self.hash(obj, raw, rule.key_getters) >= rule.threshold:
            return _SAMPLED_OUT
        if rule.bucket is not None:
            if ts_ms is None:
                t = event_time_ms(orjson_value(self.get_time(obj)))
                if t is not None and t > self.clock_ms:
                    self.clock_ms = t
                ts_ms = self.clock_ms
            if not rule.bucket.take(ts_ms):
                return _THROTTLED
        return self.passes[rule.vkey]

    def hash(self, obj: object, raw: bytes, getters: tuple[Getter, ...]) -> int:
        value = first_present(obj, getters)
        if value is MISSING:
            key = raw
        elif type(value) is str:
            key = value.encode()
        else:
            key = orjson.dumps(orjson_value(value))
        return mmh3.hash(key, self.seed, signed=False)


class _CompiledApp:
    """One app's table: event -> priority (an int, for plain rules) or a
    _CompiledRule. Ints, not verdicts, so the table is independent of the
    version and a delta copies only the apps it touches."""

    __slots__ = ("events", "monitor_priority")

    def __init__(self, events: dict[str, int | _CompiledRule], monitor_priority: int) -> None:
        self.events = events
        self.monitor_priority = monitor_priority  # -1: enforce


_MALFORMED = {r: Verdict(MALFORMED, reason=r) for r in MALFORMED_REASONS}
_SAMPLED_OUT = Verdict(SAMPLED_OUT)
_THROTTLED = Verdict(THROTTLED)
_BLOCKED = Verdict(BLOCKED)
_UNREGISTERED_DROP = Verdict(UNREGISTERED)
_UNREGISTERED_QUARANTINE = Verdict(UNREGISTERED, quarantine=True)


class Decider:
    """Compiled rules + settings: ``decide(raw, ts_ms)`` for every event.

    Build it from a snapshot (``build_decider``) or its packed form
    (``Decider(packed, settings, previous)``, ``previous``: the decider it
    replaces, whose name strings it reuses); ``with_delta`` returns a new decider and
    leaves this one untouched, so the hot loop can keep using it meanwhile.
    """

    _rare: _RarePath
    decide: DecideFn
    """Decide one event. ``ts_ms`` is the clock for rate caps: the input's
    Kafka timestamp; ``None`` uses the event's own time field (replay)."""

    def __init__(self, packed: PackedRules | RulesSnapshot, settings: DecisionSettings,
                 previous: Decider | None = None) -> None:
        if isinstance(packed, RulesSnapshot):
            packed = pack(packed)
        self.version = packed.version
        self.rule_count = packed.rule_count
        self.seen = Seen()
        self.settings = settings
        self._seed = settings.seed
        self._get_app = reader_getter(settings.app_path)
        self._get_event = reader_getter(settings.event_path)
        self._get_time = reader_getter(settings.time_path)
        self._default_keys = tuple(reader_getter(p) for p in settings.sample_keys)
        self._key_cache: dict[str, tuple[Getter, ...]] = {}
        self._set_reader({k[3] for k in packed.kinds if k[3] is not None})
        self._quarantine_threshold = threshold(settings.quarantine_rate)
        self._make_verdicts()
        # Compiled rules without a bucket hold no per-rule state, so one per
        # distinct setting serves every rule that has it (a 500k list has a
        # handful): ~190 bytes saved per special rule.
        self._shared: dict[tuple[int, float, bool, str | None], _CompiledRule] = {}
        self._apps: dict[str, _CompiledApp] = {}
        kinds = packed.kinds
        # Event names are shared with the decider in force (``previous``):
        # see PackedRules.tables.
        in_force = None if previous is None else {a: c.events for a, c in previous._apps.items()}
        for app, events, special in packed.tables(in_force):
            # ``events`` ({event: priority}, built in C from this app's packed
            # segment) becomes the table itself: no copy, no per-rule Python
            # work for plain rules.
            if special:
                compiled = self._compiled
                for event, k in special.items():
                    events[event] = compiled(*kinds[k])  # type: ignore[assignment]
            self._apps[app] = _CompiledApp(events, -1)  # type: ignore[arg-type]
        del in_force
        self._set_apps(packed.apps)
        self._numbers = _number_apps(self._apps)
        self._bind()

    def _set_reader(self, rule_keys: set[str]) -> None:
        """The decoder of this version: it reads the configured paths and
        every rule's own sample key."""
        st = self.settings
        self._reader = EventReader({st.app_path, st.event_path, st.time_path, *st.sample_keys,
                                    *rule_keys})

    def _make_verdicts(self) -> None:
        """The verdicts of this version: their headers name it."""
        version_bytes = str(self.version).encode()
        tag = self.settings.tag_headers

        def headers(priority: int, rate: float) -> Headers | None:
            if not tag:
                return None
            h = [("priority", PRIORITIES[priority].encode()), ("rules-version", version_bytes)]
            if rate < 1.0:
                h.append(("sample-rate", rate_text(rate)))
            return h

        self._plain = [Verdict(PASSED, p, headers(p, 1.0)) for p in range(len(PRIORITIES))]
        self._monitor = [Verdict(UNREGISTERED, p, headers(p, 1.0)) for p in range(len(PRIORITIES))]
        self._passes: dict[tuple[int, float], Verdict] = {}
        self._headers = headers

    def _pass_verdict(self, vkey: tuple[int, float]) -> Verdict:
        v = self._passes.get(vkey)
        if v is None:
            v = self._passes[vkey] = Verdict(PASSED, vkey[0], self._headers(*vkey))
        return v

    def _app(self, app: str) -> _CompiledApp:
        capp = self._apps.get(app)
        if capp is None:
            capp = self._apps[app] = _CompiledApp({}, -1)
        return capp

    def _set_apps(self, apps: dict[str, tuple[bool, int]]) -> None:
        for app, (monitor, prio) in apps.items():
            self._app(app).monitor_priority = prio if monitor else -1

    def _set_rule(self, capp: _CompiledApp, rule: Rule) -> None:
        capp.events[rule.event] = (rule.priority if rule.plain else
                                   self._compiled(rule.priority, rule.sample_rate, rule.offline,
                                                  rule.sample_key, rule.max_rate))

    def _compiled(self, priority: int, sample_rate: float, offline: bool, sample_key: str | None,
                  max_rate: float | None) -> _CompiledRule:
        """The compiled form of a special rule: shared when it has no bucket."""
        capped = max_rate is not None and not offline
        if not capped:
            shared = self._shared.get((priority, sample_rate, offline, sample_key))
            if shared is not None:
                return shared
        getters = self._default_keys
        if sample_key is not None:
            getters = self._key_cache.get(sample_key) or self._key_cache.setdefault(
                sample_key, (reader_getter(sample_key),))
        bucket = TokenBucket(max_rate * self.settings.rate_share) if capped else None  # type: ignore[operator]
        vkey = (priority, sample_rate)
        self._pass_verdict(vkey)
        rule = _CompiledRule(vkey, offline, threshold(sample_rate) if sample_rate < 1.0 else None,
                             getters, bucket)
        if not capped:
            self._shared[(priority, sample_rate, offline, sample_key)] = rule
        return rule

    def with_delta(self, delta: PackedDelta) -> Decider:
        """A new decider: this one with ``delta`` applied. Only the apps the
        delta touches are copied; untouched rules keep their buckets."""
        if delta.base_version != self.version:
            raise BaseVersionMismatch(delta.base_version, self.version)
        apps = dict(self._apps)
        copied: set[str] = set()
        added: list[str] = []  # apps this delta brings

        def writable(app: str) -> _CompiledApp:
            capp = apps.get(app)
            if app not in copied:
                if capp is None:
                    added.append(app)
                capp = apps[app] = (_CompiledApp(dict(capp.events), capp.monitor_priority)
                                    if capp is not None else _CompiledApp({}, -1))
                copied.add(app)
            assert capp is not None
            return capp

        count = self.rule_count
        for app, event in delta.deletes:
            if writable(app).events.pop(event, None) is not None:
                count -= 1
        new = Decider.__new__(Decider)
        new.__dict__.update(self.__dict__)
        new.version = delta.version
        new.seen = Seen()
        new._apps = apps
        new._key_cache = dict(self._key_cache)
        new._shared = dict(self._shared)
        keys = {r.sample_key for r in delta.upserts if r.sample_key is not None}
        if not all(map(self._reader.covers, keys)):
            new._set_reader(keys | self._reader.paths)
        new._make_verdicts()
        for vkey in self._passes:
            new._pass_verdict(vkey)
        for app, (monitor, prio) in delta.apps.items():
            writable(app).monitor_priority = prio if monitor else -1
        for rule in delta.upserts:
            capp = writable(rule.app)
            if rule.event not in capp.events:
                count += 1
            new._set_rule(capp, rule)
        new.rule_count = count
        new._numbers = {**self._numbers, **_number_apps(added)} if added else self._numbers
        new._bind()
        return new

    def _bind(self) -> None:
        """(Re)compile ``decide`` for this version's reader, tables and verdicts."""
        # The rate caps' clock carries over from the decider this one replaces.
        clock_ms = self._rare.clock_ms if hasattr(self, "_rare") else 0
        self._rare = _RarePath(self, clock_ms)
        self.decide = _compile_decide(self)

    def headers_for(self, raw: bytes, priority: int) -> Headers | None:
        """The tag headers this decider gave a routed event (for re-producing
        an output whose delivery failed: delivery reports carry no headers).
        Sampling and caps are not re-applied: the event already passed them."""
        if not self.settings.tag_headers:
            return None
        obj = self._reader.read(raw)
        if type(obj) is self._reader.struct:
            app = app_text(orjson_value(self._get_app(obj)))
            capp = self._apps.get(app) if app is not None else None
            rule = capp.events.get(self._get_event(obj)) if capp is not None else None
            if isinstance(rule, _CompiledRule):
                return self._passes[rule.vkey].headers
        return self._plain[priority].headers


# ``decide`` is compiled per decider from this template, the way dataclasses
# writes __init__: a top-level app or event path becomes a plain attribute
# read of the decoded Struct (``obj.f_6170705f6964``), and every table and
# verdict list the lookup needs is a closure variable. Against the same code
# as a method reading them through ``self`` and operator.attrgetter, a
# decision takes 10-19% less time (paired runs, bench/RESULTS.md 2026-12-07
# 03:38-04:45 by hand). Only the fast path is
# here: a plain registered event. Everything rarer is ``_RarePath``.
_DECIDE_TEMPLATE = """
def make(seen, decode, read, Struct, DECODE_ERRORS, INVALID, MISSING, MALFORMED, app_text,
         orjson_value, get_app, get_event, apps_get, number_apps_get, plain, rare):
    def decide(raw, ts_ms=None):
        if raw.isascii():  # the common case; see reader.py for the others
            try:
                obj = decode(raw)  # always a Struct
            except DECODE_ERRORS:
                obj = read(raw)
                if type(obj) is not Struct:
                    return MALFORMED["invalid_json" if obj is INVALID else "not_object"]
        else:
            obj = read(raw)
            if type(obj) is not Struct:
                return MALFORMED["invalid_json" if obj is INVALID else "not_object"]
        app = {app}
        if type(app) is not str:
            # A registered app sent as a JSON integer: one lookup, not two
            # calls (half the benchmark's events; see _number_apps).
            text = number_apps_get(app) if type(app) is int else None
            if text is None:
                if app is MISSING:
                    return MALFORMED["missing_app"]
                text = app_text(orjson_value(app))
                if text is None:
                    return MALFORMED["bad_app"]
            app = text
        event = {event}
        if type(event) is not str:
            return MALFORMED["missing_event" if event is MISSING else "bad_event"]
        # For per-event statistics: what the last well-formed event was. Two
        # slot stores instead of a result tuple per event.
        seen.app = app
        seen.event = event
        capp = apps_get(app)
        if capp is None:
            return rare(obj, raw, ts_ms, None, None)
        rule = capp.events.get(event)
        if type(rule) is int:
            return plain[rule]  # the common case: a plain registered event
        return rare(obj, raw, ts_ms, capp, rule)
    return decide
"""


def _field_expr(path: str, getter: str) -> str:
    """Source for reading ``path`` off the decoded Struct ``obj``: the
    attribute itself for a top-level path (its name is hex digits: no input
    reaches the source), else a call of the path's getter."""
    name = struct_attribute(path)
    return f"obj.{name}" if name is not None else f"{getter}(obj)"


@functools.lru_cache(maxsize=16)
def _maker(source: str) -> Callable[..., DecideFn]:
    """The template's ``make`` for one pair of field expressions, compiled
    once (0.3 ms): each decider only calls it for a new closure."""
    namespace: dict[str, Any] = {}
    exec(compile(source, "<etl_gate decide>", "exec"), namespace)  # noqa: S102
    return namespace["make"]  # type: ignore[no-any-return]


def _compile_decide(d: Decider) -> DecideFn:
    st = d.settings
    source = _DECIDE_TEMPLATE.replace("{app}", _field_expr(st.app_path, "get_app")).replace(
        "{event}", _field_expr(st.event_path, "get_event"))
    reader = d._reader
    # Not the decider itself: see _RarePath.
    return _maker(source)(d.seen, reader.decode, reader.read, reader.struct, DECODE_ERRORS,
                          INVALID, MISSING, _MALFORMED, app_text, orjson_value, d._get_app,
                          d._get_event, d._apps.get, d._numbers.get, d._plain,
                          d._rare.decide)


def _number_apps(apps: Iterable[str]) -> dict[int, str]:
    """Integer -> app id, for each app an event may name by a JSON integer
    (SPEC section 1: ``1128`` is app ``"1128"``): exactly the apps whose id
    ``app_text`` gives back for that integer, so the lookup and the general
    path agree. The value is the table's own string: its hash is cached."""
    out: dict[int, str] = {}
    for app in apps:
        digits = app[1:] if app[:1] == "-" else app
        if digits.isascii() and digits.isdigit():
            n = int(app)
            if app_text(orjson_value(n)) == app:
                out[n] = app
    return out


def build_decider(snapshot: RulesSnapshot, settings: DecisionSettings) -> Decider:
    return Decider(pack(snapshot), settings)
