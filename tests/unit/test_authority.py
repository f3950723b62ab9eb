"""The supervisor's rules authority and state dir, without workers: a fake
publish/applied pair stands in for the pool (no Kafka involved)."""

from __future__ import annotations

from pathlib import Path

import pytest

from etl_gate.control.authority import RulesAuthority
from etl_gate.control.model import PropagationTimeout
from etl_gate.control.store import DELTAS, SNAPSHOT, RulesStore
from etl_gate.core import Decider, DecisionSettings, parse_delta, parse_snapshot
from etl_gate.core.digest import digest_sum, hex_digest
from etl_gate.core.packed import PackedDelta, PackedRules
from etl_gate.core.rules import BaseVersionMismatch, StaleVersion
from etl_gate.rules_source import RulesFileWatcher


def snap(version: int, n: int = 10) -> dict:
    return {"version": version, "apps": {"m": {"mode": "monitor"}},
            "rules": [{"app": "a", "event": f"e{i}", "priority": f"P{i % 3}"} for i in range(n)]}


class FakeWorkers:
    """Applies what is published to real deciders, like the worker feed does."""

    def __init__(self, n: int, authority: RulesAuthority, stuck: set[int] = frozenset()) -> None:
        self.deciders: dict[int, Decider | None] = dict.fromkeys(range(n))
        self.stuck = stuck
        self.published: list[str] = []
        authority.connect(self.publish, self.applied)

    def publish(self, kind: str, blob: bytes) -> None:
        self.published.append(kind)
        for w, d in self.deciders.items():
            if w in self.stuck:
                continue
            if kind == "snapshot":
                self.deciders[w] = Decider(PackedRules.from_bytes(blob), DecisionSettings())
            else:
                assert d is not None
                self.deciders[w] = d.with_delta(PackedDelta.from_bytes(blob))

    def applied(self) -> dict[int, int]:
        return {w: (d.version if d else 0) for w, d in self.deciders.items()}


def make(tmp_path: Path, **kw) -> tuple[RulesAuthority, FakeWorkers]:
    a = RulesAuthority(RulesStore(tmp_path / "state"), timeout_s=0.3, clock=lambda: 1000.0)
    return a, FakeWorkers(2, a, **kw)


def test_push_persists_publishes_and_acks(tmp_path: Path) -> None:
    a, w = make(tmp_path)
    result = a.push_snapshot(parse_snapshot(snap(3)))
    assert result.acks == [(0, 3), (1, 3)]
    assert result.rules.version == 3 and result.rules.rule_count == 10
    assert result.rules.applied_at == 1000.0 and result.rules.app_count == 2
    assert (tmp_path / "state" / SNAPSHOT).exists()
    assert w.published == ["snapshot"]


def test_stale_version_is_rejected_and_nothing_changes(tmp_path: Path) -> None:
    a, w = make(tmp_path)
    a.push_snapshot(parse_snapshot(snap(3)))
    with pytest.raises(StaleVersion) as e:
        a.push_snapshot(parse_snapshot(snap(3, n=2)))
    assert e.value.current == 3
    assert a.info().rule_count == 10 and w.published == ["snapshot"]  # type: ignore[union-attr]


def test_delta_on_wrong_base_names_the_current_version(tmp_path: Path) -> None:
    a, w = make(tmp_path)
    with pytest.raises(BaseVersionMismatch):  # nothing in force yet
        a.apply_delta(parse_delta({"base_version": 0, "version": 1}))
    a.push_snapshot(parse_snapshot(snap(3)))
    with pytest.raises(BaseVersionMismatch) as e:
        a.apply_delta(parse_delta({"base_version": 2, "version": 4}))
    assert e.value.current == 3 and a.version == 3 and w.published == ["snapshot"]


def test_digest_is_order_independent_and_follows_deltas(tmp_path: Path) -> None:
    a, _ = make(tmp_path)
    a.push_snapshot(parse_snapshot(snap(3)))
    delta = {"base_version": 3, "version": 4,
             "upserts": [{"app": "a", "event": "e1", "priority": "P0"},
                         {"app": "b", "event": "new", "sample_rate": 0.5}],
             "deletes": [{"app": "a", "event": "e2"}], "apps": {"m": {"mode": "enforce"}}}
    result = a.apply_delta(parse_delta(delta))
    s = a.snapshot()
    assert s is not None and result.rules.rule_count == 10
    assert result.rules.app_count == 3  # a, m (settings only) and the new b
    expected = hex_digest(digest_sum(reversed(list(s.rules.values())), dict(s.apps)))
    assert result.rules.digest == expected
    # Same content pushed as a snapshot in another order: same digest.
    again = snap(5)
    rules = {(r["app"], r["event"]): r for r in again["rules"]}
    rules[("a", "e1")] = {"app": "a", "event": "e1", "priority": "P0"}
    rules[("b", "new")] = {"app": "b", "event": "new", "sample_rate": 0.5}
    del rules[("a", "e2")]
    again["rules"] = list(reversed(rules.values()))
    again["apps"] = {"m": {"mode": "enforce"}}
    assert a.push_snapshot(parse_snapshot(again)).rules.digest == expected


def test_restart_reloads_snapshot_and_deltas(tmp_path: Path) -> None:
    a, _ = make(tmp_path)
    a.push_snapshot(parse_snapshot(snap(3)))
    a.apply_delta(parse_delta({"base_version": 3, "version": 4,
                               "upserts": [{"app": "a", "event": "x"}]}))
    a.apply_delta(parse_delta({"base_version": 4, "version": 5,
                               "deletes": [{"app": "a", "event": "e0"}]}))
    assert (tmp_path / "state" / DELTAS).read_bytes().count(b"\n") == 2
    b = RulesAuthority(RulesStore(tmp_path / "state"), timeout_s=0.3)
    assert b.load_state()
    assert b.snapshot() == a.snapshot() and b.info().digest == a.info().digest  # type: ignore[union-attr]


def test_torn_last_delta_line_is_ignored(tmp_path: Path) -> None:
    a, _ = make(tmp_path)
    a.push_snapshot(parse_snapshot(snap(3)))
    a.apply_delta(parse_delta({"base_version": 3, "version": 4,
                               "upserts": [{"app": "a", "event": "x"}]}))
    with open(tmp_path / "state" / DELTAS, "ab") as f:
        f.write(b'{"base_version":4,"vers')  # a crash mid-append: never acknowledged
    b = RulesAuthority(RulesStore(tmp_path / "state"), timeout_s=0.3)
    assert b.load_state() and b.version == 4


def test_propagation_timeout_names_the_lagging_worker(tmp_path: Path) -> None:
    a, _ = make(tmp_path, stuck={1})
    with pytest.raises(PropagationTimeout) as e:
        a.push_snapshot(parse_snapshot(snap(3)))
    assert e.value.lagging == [1] and "worker(s) [1]" in str(e.value)
    assert a.version == 3  # persisted and in force; worker 1 keeps converging


def test_rules_file_watcher_submits_only_newer_valid_versions(tmp_path: Path) -> None:
    import orjson

    a, _ = make(tmp_path)
    path = tmp_path / "rules.json"
    path.write_bytes(orjson.dumps(snap(2)))
    watcher = RulesFileWatcher(path, a.push_snapshot, lambda: a.version)
    assert watcher.poll(strict=True) and a.version == 2
    assert not watcher.poll()  # unchanged
    path.write_bytes(b'{"version": 9, "rules": [{"app": "a", "event": ""}]}')
    assert not watcher.poll() and a.version == 2  # rejected, old rules stay
    path.write_bytes(orjson.dumps(snap(1)))
    assert not watcher.poll() and a.version == 2  # older than the rules in force
    path.write_bytes(orjson.dumps(snap(7, n=3)))
    assert watcher.poll() and a.version == 7


def test_a_digest_summed_on_the_way_is_the_digest(tmp_path: Path) -> None:
    from etl_gate.control import serde

    obj = snap(4, 50)
    obj["rules"].append({"app": "b", "event": "s", "sample_rate": 0.5})
    via_grpc = serde.snapshot_from_requests(serde.json_snapshot_to_requests(obj))
    assert via_grpc.rules_digest is not None
    a, _ = make(tmp_path / "a")
    b, _ = make(tmp_path / "b")
    assert (a.push_snapshot(via_grpc).rules.digest
            == b.push_snapshot(parse_snapshot(obj)).rules.digest
            == hex_digest(digest_sum(parse_snapshot(obj).rules.values(), parse_snapshot(obj).apps)))
