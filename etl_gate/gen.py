"""``etl-gate gen``: realistic synthetic events plus the rules file that matches.

One source of data for demos, tests and benchmarks. Deterministic for a given
seed and start time. Every event carries a unique ``id`` (also inside
malformed ones, as text), so a test can prove that nothing was lost.

The mix: ``apps`` apps with ``events_per_app`` registered event names each,
traffic Zipf-distributed over names; a share of registered events sampled,
a few offline, and a share of traffic with unregistered names and malformed
payloads. Payloads are padded to about ``size`` bytes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

# Malformed variants: what buggy SDKs and collectors really send.
_MALFORMED_KINDS = ("truncated", "not_object", "missing_app", "bool_app", "missing_event",
                    "bad_utf8")


@dataclass(frozen=True)
class GenSpec:
    count: int = 10_000
    apps: int = 4
    events_per_app: int = 50
    unregistered_share: float = 0.10
    malformed_share: float = 0.005
    sampled_share: float = 0.10  # share of registered event names with a sample rate
    offline_share: float = 0.02
    monitor_apps: int = 0  # the last N apps are in monitor mode
    numeric_app_ids: bool = True  # half the apps send their id as a JSON number
    size: int = 350
    seed: int = 1
    # Event time of the first event; None: so that the last one is now.
    start_ms: int | None = None
    step_ms: int = 1  # event time advances by this per event
    rules_version: int = 1
    max_rate: float = 0.0  # >0: the hottest event of each app gets this cap
    id_prefix: str = "e"


class Generator:
    def __init__(self, spec: GenSpec) -> None:
        self.spec = spec
        rng = random.Random(spec.seed)
        self.rng = rng
        self.apps = [str(1000 + 128 * i) for i in range(spec.apps)]
        verbs = ["play", "click", "scroll", "view", "like", "share", "open", "close", "search",
                 "buy", "comment", "follow", "swipe", "pause", "seek", "impression"]
        nouns = ["video", "feed", "banner", "profile", "live", "shop", "ad", "story", "music",
                 "settings", "search", "cart", "comment", "page", "tab", "player"]
        names = [f"{n}_{v}" for n in nouns for v in verbs]
        rng.shuffle(names)
        self.registered = {a: names[:spec.events_per_app] for a in self.apps}
        self.unregistered = [f"debug_{n}" for n in names[:40]]
        # Zipf weights over each app's names: a few events carry most traffic.
        self.weights = [1.0 / (r + 1) for r in range(spec.events_per_app)]
        self.users = [f"u{rng.randrange(10**9):09d}" for _ in range(5000)]
        # Default: the events end now. Kafka refuses timestamps more than an
        # hour ahead, and a fixed past date falls out of topic retention.
        self.start_ms = (spec.start_ms if spec.start_ms is not None
                         else int(time.time() * 1000) - spec.count * spec.step_ms)

    def rules(self) -> dict[str, Any]:
        spec, rng = self.spec, random.Random(self.spec.seed + 7)
        rules: list[dict[str, Any]] = []
        for app in self.apps:
            for rank, name in enumerate(self.registered[app]):
                rule: dict[str, Any] = {"app": app, "event": name,
                                        "priority": rng.choices(["P0", "P1", "P2"], [1, 4, 5])[0]}
                roll = rng.random()
                if roll < spec.offline_share:
                    rule["state"] = "offline"
                elif roll < spec.offline_share + spec.sampled_share:
                    rule["sample_rate"] = rng.choice([0.01, 0.1, 0.25, 0.5])
                if spec.max_rate and rank == 0:
                    rule["max_rate"] = spec.max_rate
                rules.append(rule)
        apps = {a: {"mode": "monitor", "default_priority": "P2"}
                for a in self.apps[len(self.apps) - spec.monitor_apps:]} if spec.monitor_apps else {}
        return {"version": spec.rules_version, "apps": apps, "rules": rules}

    def events(self) -> Iterator[tuple[bytes, bytes, int]]:
        """(payload, key, event time ms) for each event."""
        spec, rng = self.spec, self.rng
        pad_base = "abcdefghijklmnopqrstuvwxyz0123456789"
        for i in range(spec.count):
            app_index = i % len(self.apps)
            app = self.apps[app_index]
            if rng.random() < spec.unregistered_share:
                name = rng.choice(self.unregistered)
            else:
                name = rng.choices(self.registered[app], self.weights)[0]
            user = rng.choice(self.users)
            t = self.start_ms + i * spec.step_ms
            # Odd-numbered apps send their id as a JSON number (SPEC: same app).
            app_value: Any = int(app) if spec.numeric_app_ids and app_index % 2 else app
            ev: dict[str, Any] = {"id": f"{spec.id_prefix}{i}", "app_id": app_value,
                                  "event": name, "user_id": user,
                                  "device_id": "d" + user[-6:],
                                  "time": t, "props": {"page": "home", "pos": i % 50}}
            body = orjson.dumps(ev)
            pad = spec.size - len(body) - 10
            if pad > 0:
                ev["props"]["pad"] = (pad_base * (pad // len(pad_base) + 1))[:pad]
            payload = orjson.dumps(ev)
            if rng.random() < spec.malformed_share:
                payload = self._malform(ev, rng.choice(_MALFORMED_KINDS))
            yield payload, user.encode(), t

    @staticmethod
    def _malform(ev: dict[str, Any], kind: str) -> bytes:
        if kind == "truncated":
            return orjson.dumps(ev)[:-2]
        if kind == "not_object":
            return orjson.dumps([ev])  # an array holding the event
        if kind == "missing_app":
            return orjson.dumps({k: v for k, v in ev.items() if k != "app_id"})
        if kind == "bool_app":
            return orjson.dumps({**ev, "app_id": True})
        if kind == "missing_event":
            return orjson.dumps({k: v for k, v in ev.items() if k != "event"})
        return orjson.dumps(ev).replace(b'"props"', b'"pr\xffops"')  # invalid UTF-8
