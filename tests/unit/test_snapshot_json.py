"""``parse_snapshot_json(data)`` against its definition,
``parse_snapshot(orjson.loads(data))``: the same snapshot (tables in the same
order) or the same error, case by case and on fuzzed documents; and the fast
path is the one taken for ordinary documents. The same for a document split
at rule boundaries (``split_document``) and decoded part by part
(``SnapshotParts``), with parts of one rule and of many."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from typing import Any

import orjson
import pytest

from etl_gate.core import snapshot_json
from etl_gate.core.rules import RulesError, RulesSnapshot, parse_snapshot
from etl_gate.core.snapshot_json import SnapshotParts, parse_snapshot_json, split_document

BASE: dict[str, Any] = {
    "version": 7,
    "apps": {"1128": {"mode": "monitor", "default_priority": "P1"}, "9": {}},
    "rules": [
        {"app": "1128", "event": "video_play", "priority": "P0"},
        {"app": "1128", "event": "feed_scroll", "priority": "P2", "sample_rate": 0.1},
        {"app": "9", "event": "a"},
        {"app": "1128", "event": "debug_trace", "state": "offline"},
        {"app": "9", "event": "b", "priority": "P2", "state": "active", "sample_rate": 1},
        {"app": "1128", "event": "like", "priority": "P1", "sample_key": "device.id", "max_rate": 5000},
        {"app": "7", "event": "capped", "max_rate": 0.5, "sample_rate": 0},
    ],
}


def reference(data: bytes) -> tuple[str, Any]:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        return "error", f"not valid JSON: {e}"
    try:
        return "ok", parse_snapshot(obj)
    except RulesError as e:
        return "error", str(e)


def fast(data: bytes) -> tuple[str, Any]:
    try:
        return "ok", parse_snapshot_json(data)
    except RulesError as e:
        return "error", str(e)


def in_parts(data: bytes, part_bytes: int) -> tuple[str, Any] | None:
    """What the gate makes of ``data`` split as ``ctl push`` splits it (None:
    the ctl sends it whole)."""
    split = split_document(data, part_bytes)
    if split is None:
        return None
    head, parts = split
    try:
        received = SnapshotParts(head)
        for part in parts:
            received.add(part)
        return "ok", received.snapshot()
    except RulesError as e:
        return "error", str(e)


def assert_same(data: bytes) -> tuple[str, Any]:
    want = reference(data)
    for got in (fast(data), in_parts(data, 1), in_parts(data, 1 << 20)):
        if got is None:
            # Sent whole: not JSON, not an object, or "rules" not an array. A
            # valid snapshot is never one of those.
            assert want[0] == "error", (data, want)
            continue
        assert_agrees(data, want, got)
    return want


def assert_agrees(data: bytes, want: tuple[str, Any], got: tuple[str, Any]) -> None:
    assert got[0] == want[0], (data, want, got)
    if want[0] == "error":
        if want[1].startswith("not valid JSON"):
            # Split documents are JSON; a value msgspec takes and orjson
            # refuses (a lone surrogate) is refused, at a position in the
            # document the parts rebuild.
            assert got[1].startswith("not valid JSON"), (data, got)
        else:
            assert got[1] == want[1], data
    else:
        a, b = want[1], got[1]
        assert isinstance(a, RulesSnapshot) and isinstance(b, RulesSnapshot)
        assert b == a, data
        # The same order too: exports and digests walk the tables.
        assert list(b.tables) == list(a.tables)
        assert all(list(b.tables[app].items()) == list(a.tables[app].items()) for app in a.tables)
        assert list(b.apps.items()) == list(a.apps.items())


def test_the_base_document_takes_the_fast_path_and_agrees() -> None:
    data = orjson.dumps(BASE)
    assert snapshot_json._fast(data, None) is not None
    assert assert_same(data)[0] == "ok"


def test_a_big_document_takes_the_fast_path() -> None:
    n = 50_007
    rules: list[dict[str, Any]] = [{"app": str(i // 5000), "event": f"e{i % 9000}", "priority": f"P{i % 3}"}
                                   for i in range(n)]
    rules[-3] = {**rules[-3], "sample_rate": 0.25, "sample_key": "user.id"}
    data = orjson.dumps({"version": 1, "rules": rules})
    snap = snapshot_json._fast(data, None)
    assert snap is not None and snap.rule_count == n
    assert_same(data)
    # A key repeated far apart is found, and named by the core.
    rules.append(dict(rules[0]))
    assert assert_same(orjson.dumps({"version": 1, "rules": rules}))[1].startswith(
        f"rules[{n}] (app '0', event 'e0'): duplicate key")


def test_a_split_document_is_decoded_part_by_part_on_the_fast_path() -> None:
    rules = [{"app": str(i // 700), "event": f"e{i % 900}", "priority": f"P{i % 3}"} for i in range(5_000)]
    rules[4_321] = {**rules[4_321], "sample_rate": 0.25, "state": "offline"}
    doc = {"apps": {"3": {"mode": "monitor"}}, "version": 9, "rules": rules, "version ": 1}
    data = orjson.dumps({**doc, "version ": None}).replace(b',"version ":null', b"")
    split = split_document(data, 4096)
    assert split is not None
    head, parts = split
    assert orjson.loads(head) == {"apps": {"3": {"mode": "monitor"}}, "version": 9}
    assert 20 < len(parts) < 60 and all(len(p) < 4096 + 100 for p in parts)
    assert [r for p in parts for r in orjson.loads(p)] == rules
    received = SnapshotParts(head)
    for part in parts:
        received.add(part)
        assert received.fast
    assert received.snapshot() == parse_snapshot(orjson.loads(data))
    assert orjson.loads(received.document()) == orjson.loads(data)
    # A key repeated in another part is found, and named by the core.
    received.add(orjson.dumps([rules[0]]))
    with pytest.raises(RulesError, match=r"^rules\[5000\] \(app '0', event 'e0'\): duplicate key"):
        received.snapshot()


def test_split_cuts_only_between_rules() -> None:
    tricky = [{"app": "a", "event": "},{"}, {"app": "a", "event": 'x"},{"app":"b"'},
              {"app": "a", "event": "n", "priority": {"p": [{"q": 1}, {"r": 2}]}}] * 40
    data = orjson.dumps({"version": 1, "rules": tricky})
    for part_bytes in (1, 30, 100, 1000):
        split = split_document(data, part_bytes)
        assert split is not None
        parts = split[1]
        assert [r for p in parts for r in orjson.loads(p)] == tricky
        assert part_bytes > 1 or len(parts) == len(tricky)  # a part per rule
    # Strings full of "}," make too many false cuts: the document goes whole.
    many = orjson.dumps({"version": 1, "rules": [{"app": "a", "event": "},{" * 100}] * 3})
    assert split_document(many, 1) is None
    # No "}," to cut at, and more than a part may hold (32 x asked, at least 1 MiB): whole.
    spaced = orjson.dumps({"version": 1, "rules": [{"app": "a", "event": f"e{i}"} for i in range(40_000)]})
    spaced = spaced.replace(b"},{", b"} ,{")
    assert len(spaced) > 1 << 20 and split_document(spaced, 1) is None
    assert split_document(spaced[:1000].rsplit(b"} ,", 1)[0] + b"}]}", 1) is not None  # small: one part


def test_what_is_not_a_head_or_a_rules_array_is_refused_by_name() -> None:
    for head, fragment in ((b"[]", "json_head is not a JSON object"),
                           (b'{"version": 1', "json_head is not a JSON object"),
                           (b'{"version": 1, "rules": []}', "json_head holds 'rules'")):
        with pytest.raises(RulesError, match=fragment):
            SnapshotParts(head)
    received = SnapshotParts(b'{"version": 1}')
    received.add(b'[{"app": "a", "event": "e"}]')
    for part in (b'{"app": "a", "event": "f"}', b'[{"app": "a"}], [', b"[1] [2]"):
        with pytest.raises(RulesError, match="message 3 is not a JSON array of rules"):
            received.add(part, "message 3")
    # The ctl sends what it cannot split whole: not JSON, not an object, or
    # "rules" not an array.
    for data in (b'{"version": 1, "rules": {}}', b"[]", b'{"version": 1, "rules": [', b'{"a": "\xff"}'):
        assert split_document(data, 100) is None


def test_names_are_shared_with_the_rules_in_force() -> None:
    first = parse_snapshot_json(orjson.dumps(BASE))
    in_force = first.tables
    kept = next(k for k in in_force["1128"] if k == "video_play")
    snap = parse_snapshot_json(orjson.dumps({**BASE, "version": 2}), in_force)
    assert snap == replace(first, version=2)
    assert next(k for k in snap.tables["1128"] if k == "video_play") is kept
    # Only the same app's names are lent; a new name is a copy of the decoded one.
    doc = {"version": 3, "rules": [{"app": "x", "event": "video_play"},
                                   {"app": "1128", "event": "video_play"}]}
    snap = parse_snapshot_json(orjson.dumps(doc), in_force)
    x, y = (next(iter(snap.tables[a])) for a in ("x", "1128"))
    assert x == y == "video_play" and y is kept and x is not kept


CASES = [
    b'{"version": 1}',
    b'{"version": 1, "rules": []}',
    b'{"version": 1, "apps": null, "rules": []}',
    b'{"version": 1, "rules": null}',
    b'{"version": 1.0}',
    b'{"version": true}',
    b'{"version": -1}',
    b'{"version": 18446744073709551615}',
    b'{"version": 18446744073709551616}',
    b'{"version": 1, "version": 2}',
    b'{}',
    b'[]',
    b'null',
    b'',
    b'{"version": 1} x',
    b'\xef\xbb\xbf{"version": 1}',
    b' {"version": 1} ',
    b'{"version": 1, "extra": 1}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e", "event": "f"}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e"}, {"app": "a", "event": "e"}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e"}, {"app": "b", "event": "e"}]}',
    b'{"version": 1, "rules": [{"app": 1128, "event": "e"}]}',
    b'{"version": 1, "rules": [{"app": 1.5, "event": "e"}]}',
    b'{"version": 1, "rules": [{"app": true, "event": "e"}]}',
    b'{"version": 1, "rules": [{"app": "", "event": "e"}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": ""}]}',
    b'{"version": 1, "rules": [{"app": "a"}]}',
    b'{"version": 1, "rules": [{"event": "e"}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e", "x": 1}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e", "priority": "P3"}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e", "priority": null}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e", "priority": {}}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e", "priority": ["P0"]}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e", "sample_rate": true}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e", "sample_rate": 1e400}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e", "sample_rate": -0.0}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e", "sample_rate": 1.0000001}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e", "sample_rate": 100000000000000000000000}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e", "sample_rate": null}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e", "state": "paused"}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e", "sample_key": ""}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e", "sample_key": "a..b"}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e", "sample_key": null}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e", "sample_key": 3}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e", "max_rate": 0}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e", "max_rate": -3}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e", "max_rate": null}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e", "max_rate": 7}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "\\ud800"}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "\\ud83d\\ude00"}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e\xff"}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e\xed\xa0\x80"}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "\xc3\xa9t\xc3\xa9"}]}',
    b'{"version": 1, "rules": [[]]}',
    b'{"version": 1, "rules": [null]}',
    b'{"version": 1, "apps": {"a": {"mode": "shadow"}}}',
    b'{"version": 1, "apps": {"a": {"default_priority": "P9"}}}',
    b'{"version": 1, "apps": {"a": {"x": 1}}}',
    b'{"version": 1, "apps": {"a": null}}',
    b'{"version": 1, "apps": []}',
    b'{"version": 1, "apps": {"": {}}}',
    # Where split_document must not cut: "}," inside strings and nested values.
    b'{"version": 1, "rules": [{"app": "a", "event": "},{"}, {"app": "a", "event": "x\\"},{\\"}"}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e", "priority": {"x": [{"y": 1}, {"z": 2}]}}, '
    b'{"app": "b", "event": "f"}]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e", "x": {"y": {}}}, {"app": "a", "event": "f"}]}',
    b'{\n "rules" : [\n  {"app": "a", "event": "e"} ,\n  {"app": "a", "event": "f"},\n'
    b'  {"app": "a", "event": "g"}\n ] ,\n "version": 1\n}',
    b'{"version": 1, "rules": [ ]}',
    b'{"version": 1, "rules": [1, {"app": "a", "event": "e"}, 2]}',
    b'{"version": 1, "rules": [{"app": "a", "event": "e"},{"app": "a", "event": "f"}], "rules": []}',
    b'{"rules": [{"app": "a", "event": "e"}], "version": 1, "rules": [{"app": "a", "event": "f"}]}',
]


@pytest.mark.parametrize("data", CASES)
def test_edge_cases_agree(data: bytes) -> None:
    assert_same(data)


# Values a fuzzed field may take: every type, and the boundaries of each check.
VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 2, 0.0, -0.0, 0.5, 1.0, 1.5, 1e-300, 2**63, 2**64, -(2**63) - 1,
    "", "a", "P0", "P1", "P2", "P3", "p0", "active", "offline", "enforce", "monitor", "a.b", "a..b",
    ".a", "1128", "é", [], {}, [1], {"a": 1},
]
FIELDS = ["app", "event", "priority", "state", "sample_rate", "sample_key", "max_rate", "extra"]


def mutate(rng: random.Random) -> bytes:
    doc: dict[str, Any] = orjson.loads(orjson.dumps(BASE))
    for _ in range(rng.randint(1, 3)):
        rules = doc.get("rules")
        rules = rules if isinstance(rules, list) and rules else None
        apps = doc.get("apps") if isinstance(doc.get("apps"), dict) else None
        r = rng.random()
        if r < 0.6 and rules is not None:
            rule = rng.choice(rules)
            field = rng.choice(FIELDS)
            if not isinstance(rule, dict):
                pass
            elif rng.random() < 0.2:
                rule.pop(field, None)
            else:
                rule[field] = rng.choice(VALUES)
        elif r < 0.7 and rules is not None:
            rule = rng.choice(rules)
            rules.append(dict(rule) if isinstance(rule, dict) else rule)  # often a duplicate key
        elif r < 0.8 and apps is not None:
            apps[rng.choice(["1128", "9", "new"])] = {
                rng.choice(["mode", "default_priority", "x"]): rng.choice(VALUES)}
        elif r < 0.9:
            doc[rng.choice(["version", "apps", "rules", "other"])] = rng.choice(VALUES)
        elif rules is not None:
            rules[rng.randrange(len(rules))] = rng.choice(VALUES)
    data = json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode()  # big ints too
    if rng.random() < 0.15:  # and now and then a damaged byte
        i = rng.randrange(len(data))
        data = data[:i] + bytes([rng.choice(b'{}[],:"\\0 e-.\xff\xc3')]) + data[i + 1:]
    return data


def test_fuzzed_documents_agree() -> None:
    rng = random.Random(20261122)
    outcomes = {"ok": 0, "error": 0, "fast": 0}
    for _ in range(5_000):
        data = mutate(rng)
        kind = assert_same(data)[0]
        outcomes[kind] += 1
        if kind == "ok" and snapshot_json._fast(data, None) is not None:
            outcomes["fast"] += 1
    # Each kind is exercised, or the fuzzing proves little.
    assert outcomes["ok"] > 300 and outcomes["error"] > 3000 and outcomes["fast"] > 200, outcomes
