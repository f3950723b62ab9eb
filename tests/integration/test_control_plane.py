"""The control plane on a real gate and the real broker: rules pushed and
swapped mid-stream, every routed event decided by the version its header
names, bad pushes refused with the old rules still routing, restarts keeping
the rules, tokens, and the status watch."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import orjson
import pytest

from etl_gate.control.client import CallError
from etl_gate.control.model import WorkerState
from etl_gate.core import (
    OUTCOMES,
    PRIORITIES,
    Decider,
    RulesError,
    apply_delta,
    parse_delta,
    parse_snapshot,
)
from etl_gate.gen import Generator, GenSpec

from .helpers import GateEnv, Out, wait_until

pytestmark = pytest.mark.integration


def _rules(gen: Generator, version: int, shuffle_seed: int) -> dict:
    """The generator's rules with a different priority/sampling mix per version."""
    import random

    rng = random.Random(shuffle_seed)
    rules = gen.rules()
    for r in rules["rules"]:
        r["priority"] = rng.choice(["P0", "P1", "P2"])
        r.pop("sample_rate", None)
        r.pop("state", None)
        roll = rng.random()
        if roll < 0.15:
            r["sample_rate"] = 0.5
        elif roll < 0.25:
            r["state"] = "offline"
    rules["version"] = version
    return rules


def _gate(env: GateEnv) -> None:
    env.create_topics()
    env.start(control=True)
    wait_until(lambda: _try(lambda: env.client().health()) is not None, 60, "control plane up")


def _try(fn):  # noqa: ANN001, ANN202
    try:
        return fn()
    except CallError:
        return None


def test_pushes_mid_stream_every_event_decided_by_its_header_version(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    env = GateEnv(kafka_bootstrap, tmp_path, workers=2, partitions=4, rules_file=False)
    gen = Generator(GenSpec(count=30000, seed=21, id_prefix="h", malformed_share=0.0))
    events = list(gen.events())
    _gate(env)
    client = env.client()
    # Never received rules: not serving, nothing consumed.
    assert client.health() == "NOT_SERVING"
    env.produce(events[:2000])
    time.sleep(3)
    assert all(v < 0 for v in env.committed().values())
    assert {w.state for w in client.status().workers} == {WorkerState.WAITING}

    v1, v2 = _rules(gen, 1, 1), _rules(gen, 2, 2)
    assert client.push_json(v1).rules.version == 1
    wait_until(lambda: client.health() == "SERVING", 10, "health SERVING once rules arrived")
    feeder = threading.Thread(target=env.produce, args=(events[2000:], 6000), daemon=True)
    feeder.start()
    time.sleep(1.0)
    r2 = client.push_json_bytes(orjson.dumps(v2))  # as `ctl push` sends it: the gate parses
    assert r2.rules.version == 2 and sorted(r2.acks) == [(0, 2), (1, 2)]
    time.sleep(1.0)
    moved = [{**r, "priority": "P0"} for r in v2["rules"][:40]]
    delta = {"base_version": 2, "version": 3, "upserts": moved,
             "deletes": [{"app": r["app"], "event": r["event"]} for r in v2["rules"][40:60]]}
    assert client.apply_delta_json(delta).rules.version == 3
    feeder.join(60)
    wait_until(env.all_committed, 120, "every input committed")
    env.stop_all()

    s1 = parse_snapshot(v1)
    s2 = parse_snapshot(v2)
    s3 = apply_delta(s2, parse_delta(delta))
    settings = env.cfg.decision_settings()
    deciders = {s.version: Decider(s, settings) for s in (s1, s2, s3)}
    outs = env.read()
    by_id: dict[str, list[Out]] = {}
    for o in outs:
        by_id.setdefault(o.id, []).append(o)
    versions_seen = set()
    topics = env.cfg.topics.priority_topics
    for raw, _key, _ts in events:
        got = by_id.get(Out("", 0, 0, raw, None, {}, 0).id, [])
        verdicts = {v: d.decide(raw, 0) for v, d in deciders.items()}
        routed = [o for o in got if o.topic in topics]
        for o in routed:
            version = int(o.headers["rules-version"])
            versions_seen.add(version)
            v = verdicts[version]
            assert v.priority >= 0, f"{o.id}: routed, but version {version} says {OUTCOMES[v.outcome]}"
            assert o.topic == topics[v.priority]
            assert o.headers["priority"] == PRIORITIES[v.priority].encode()
        if all(v.priority >= 0 for v in verdicts.values()):
            assert routed, f"event {Out('', 0, 0, raw, None, {}, 0).id} routed by every version, lost"
    assert versions_seen == {1, 2, 3}


def test_bad_pushes_are_refused_and_the_old_rules_keep_routing(kafka_bootstrap: str,
                                                               tmp_path: Path) -> None:
    env = GateEnv(kafka_bootstrap, tmp_path, workers=1, partitions=2, rules_file=False)
    gen = Generator(GenSpec(count=2000, seed=22, id_prefix="b", malformed_share=0.0,
                            unregistered_share=0.0))
    _gate(env)
    client = env.client()
    good = _rules(gen, 5, 5)
    client.push_json(good)
    first = good["rules"][0]
    bad_cases = {
        "unknown priority": {**good, "version": 6,
                             "rules": [{**first, "priority": "P7"}, *good["rules"][1:]]},
        "sample_rate": {**good, "version": 6, "rules": [{**first, "sample_rate": 1.5}]},
        "non-empty": {**good, "version": 6, "rules": [{"app": "1000", "event": ""}]},
        "duplicate": {**good, "version": 6, "rules": [first, first]},
        "not newer": {**good, "version": 5},
    }
    for needle, snapshot in bad_cases.items():
        # As rows, a priority the protobuf enum cannot carry is refused by the
        # client already; everything else is refused by the gate.
        with pytest.raises((CallError, RulesError)) as e:
            client.push_json(snapshot)
        assert needle in str(e.value), e.value
        if isinstance(e.value, CallError):
            assert e.value.code == "INVALID_ARGUMENT"
        else:
            assert needle == "unknown priority"
        # As the JSON document (`ctl push`), the gate refuses each one.
        with pytest.raises(CallError) as refused:
            client.push_json_bytes(orjson.dumps(snapshot))
        assert refused.value.code == "INVALID_ARGUMENT" and needle in str(refused.value)
    with pytest.raises(CallError) as e:
        client.apply_delta_json({"base_version": 4, "version": 6, "upserts": [first]})
    assert e.value.code == "FAILED_PRECONDITION" and e.value.current_version == 5
    info = client.rules_info()
    assert info.version == 5 and info.rule_count == len(good["rules"])

    events = list(gen.events())
    env.produce(events)
    wait_until(env.all_committed, 60, "events routed")
    env.stop_all()
    routed = [o for o in env.read() if o.topic in env.cfg.topics.priority_topics]
    assert routed and {o.headers["rules-version"] for o in routed} == {b"5"}


def test_restart_keeps_pushed_rules(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = GateEnv(kafka_bootstrap, tmp_path, workers=1, partitions=2, rules_file=False)
    gen = Generator(GenSpec(count=1000, seed=23, id_prefix="s", malformed_share=0.0,
                            unregistered_share=0.0))
    _gate(env)
    client = env.client()
    client.push_json(_rules(gen, 7, 7))
    client.apply_delta_json({"base_version": 7, "version": 8,
                             "upserts": [{"app": "1000", "event": "late_add", "priority": "P0"}]})
    digest = client.rules_info().digest
    client.close()
    env.stop_all()
    assert env.procs[0].returncode == 0

    env.start(control=True)  # same name: same state dir and port
    client = env.client()
    wait_until(lambda: _try(client.health) == "SERVING", 60, "the restarted gate to serve")
    info = client.rules_info()
    assert (info.version, info.digest) == (8, digest)
    env.produce(list(gen.events()))
    wait_until(env.all_committed, 60, "events routed after the restart")
    env.stop_all()
    routed = [o for o in env.read() if o.topic in env.cfg.topics.priority_topics]
    assert routed and {o.headers["rules-version"] for o in routed} == {b"8"}


def test_tokens_guard_mutations_and_watch_reports_a_push(kafka_bootstrap: str,
                                                         tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text("# platform\nwrite-secret\nread-secret read\n")
    env = GateEnv(kafka_bootstrap, tmp_path, workers=1, partitions=1, rules_file=False,
                  extra_toml='tokens_file = "tokens"\n')
    gen = Generator(GenSpec(count=10, seed=24))
    _gate(env)
    snapshot = _rules(gen, 3, 3)
    for options, code in (({}, "UNAUTHENTICATED"), ({"token": "nope"}, "UNAUTHENTICATED"),
                          ({"token": "read-secret"}, "PERMISSION_DENIED")):
        with pytest.raises(CallError) as e:
            env.client(**options).push_json(snapshot)
        assert e.value.code == code
    assert env.client().status().rules is None  # refused calls changed nothing

    seen: list[int] = []
    watcher = env.client()

    def watch() -> None:
        for status in watcher.watch(interval_s=0.5):
            if status.rules is not None:
                seen.append(status.rules.version)
                return

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    time.sleep(1)
    env.client(token="write-secret").push_json(snapshot)
    t.join(30)
    assert seen == [3]
    env.stop_all()
