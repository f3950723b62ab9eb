"""The Grafana dashboard queries only what the gate exports.

Every PromQL expression in ``config/grafana/etl-gate.json`` (panels, panels
nested in collapsed rows, annotations, template variables) must name at least
one ``etl_gate_`` series, and every such name must be a sample that
``etl_gate.metrics.GateMetrics`` really exports, with only the labels it
carries. A renamed metric or a typo in a panel fails here, not on a wall
screen.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from prometheus_client.metrics import MetricWrapperBase

from etl_gate.metrics import GateMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "config" / "grafana" / "etl-gate.json"

# A metric name is any identifier that starts with etl_gate_, whatever follows
# it: '{', '[', ')', ',', a space or the end of the expression. String literals
# are removed first so a label value such as job="etl_gate_x" is not taken for one.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_METRIC = re.compile(r"(?<![A-Za-z0-9_:])etl_gate_[A-Za-z0-9_:]*")
_SELECTOR = re.compile(r"(?<![A-Za-z0-9_:])(etl_gate_[A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")


# --- what the gate exports -------------------------------------------------------------------

def _touch(metric: MetricWrapperBase) -> None:
    """Give a metric one child so that it shows up in ``collect()`` with its samples."""
    names = metric._labelnames  # no public accessor; stable across prometheus_client releases
    child: Any = metric.labels(*["x"] * len(names)) if names else metric
    if isinstance(metric, Counter):
        child.inc()
    elif isinstance(metric, Gauge):
        child.set(1)
    elif isinstance(metric, Histogram | Summary):
        child.observe(0.01)
    else:
        raise AssertionError(f"teach this test to touch a {type(metric).__name__}")


@cache
def exported() -> dict[str, frozenset[str]]:
    """Sample name -> its label names, for every sample GateMetrics exports."""
    metrics = GateMetrics(CollectorRegistry())
    declared = [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    assert declared, "GateMetrics declares no metric"
    for m in declared:
        _touch(m)
    samples: dict[str, frozenset[str]] = {}
    for family in metrics.registry.collect():
        assert family.samples, f"{family.name}: no samples after touching it"
        for s in family.samples:
            samples[s.name] = frozenset(s.labels)
    return samples


def test_exported_names_follow_the_exposition_rules() -> None:
    names = exported()
    assert "etl_gate_events_total" in names and "etl_gate_events" not in names
    assert {"etl_gate_end_to_end_latency_seconds_bucket", "etl_gate_end_to_end_latency_seconds_sum",
            "etl_gate_end_to_end_latency_seconds_count"} <= set(names)
    assert "le" in names["etl_gate_end_to_end_latency_seconds_bucket"]
    assert "etl_gate_rules_version" in names


# --- what the dashboard asks for -------------------------------------------------------------

@cache
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def _walk(node: Any, path: str) -> Iterator[tuple[str, str, Any]]:
    """(path, key, value) for every key of every object in the JSON tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield path, k, v
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every query in the dashboard."""
    found = [(f"{path}.expr", v) for path, k, v in _walk(dashboard(), "") if k == "expr"]
    for var in dashboard()["templating"]["list"]:
        if var.get("type") != "query":
            continue
        q = var.get("query")
        found.append((f"templating.{var['name']}", q["query"] if isinstance(q, dict) else q))
    return found


def panels(nodes: list[dict[str, Any]] | None = None) -> Iterator[dict[str, Any]]:
    """Every panel that is not a row, including panels nested in collapsed rows."""
    for p in dashboard()["panels"] if nodes is None else nodes:
        if p.get("type") == "row":
            yield from panels(p.get("panels", []))
        else:
            yield p


def metric_names(expr: str) -> set[str]:
    return set(_METRIC.findall(_STRING.sub('""', expr)))


def test_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.99, sum by (le) (rate(etl_gate_a_bucket[5m])))'
            ' / etl_gate_b + etl_gate_c{x="etl_gate_not_a_metric"} - (etl_gate_d)'
            ' or label_values(etl_gate_e, app) or etl_gate_f\n')
    assert metric_names(expr) == {"etl_gate_a_bucket", "etl_gate_b", "etl_gate_c", "etl_gate_d",
                                  "etl_gate_e", "etl_gate_f"}


def test_the_dashboard_has_queries_in_panels_rows_and_templating() -> None:
    where = [w for w, _ in expressions()]
    assert len(where) >= 20
    assert any(w.startswith("templating.") for w in where)
    assert any(re.match(r"\.panels\[\d+\]\.panels\[", w) for w in where), \
        "expected panels nested in a collapsed row"


@pytest.mark.parametrize("where,expr", expressions(), ids=[w for w, _ in expressions()])
def test_every_expression_uses_only_exported_metrics(where: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{where}: uses no etl_gate_ metric: {expr!r}"
    unknown = sorted(names - set(exported()))
    assert not unknown, f"{where}: not exported by the gate: {unknown} in {expr!r}"


@pytest.mark.parametrize("where,expr", expressions(), ids=[w for w, _ in expressions()])
def test_brackets_balance(where: str, expr: str) -> None:
    # No PromQL parser here; this catches the usual hand-editing slip.
    stack: list[str] = []
    for ch in _STRING.sub('""', expr):
        if ch in "([{":
            stack.append(")]}"["([{".index(ch)])
        elif ch in ")]}":
            assert stack and stack.pop() == ch, f"{where}: unbalanced {ch!r} in {expr!r}"
    assert not stack, f"{where}: unclosed bracket in {expr!r}"


@pytest.mark.parametrize("where,expr", expressions(), ids=[w for w, _ in expressions()])
def test_label_matchers_name_labels_the_metric_has(where: str, expr: str) -> None:
    # A matcher on a label the series lacks (say app on the DLQ counter) silently
    # selects nothing; only real labels of the series may be filtered on.
    for name, matchers in _SELECTOR.findall(_STRING.sub('""', expr)):
        labels = set(_MATCHER_LABEL.findall(matchers)) - {"__name__"}
        missing = sorted(labels - exported().get(name, frozenset()))
        assert not missing, f"{where}: {name} has no label(s) {missing}: {expr!r}"


def test_there_is_a_panel_for_each_view() -> None:
    by_panel = {p["title"]: " ".join(t.get("expr", "") for t in p.get("targets", [])) for p in panels()}

    def some(pattern: str) -> bool:
        return any(re.search(pattern, e, re.S) for e in by_panel.values())

    assert some(r"by \([^)]*\bdecision\b[^)]*\) \(rate\(etl_gate_events_total"), "events by decision"
    assert some(r"by \([^)]*\bpriority\b[^)]*\) \(rate\(etl_gate_events_total"), "events by priority"
    assert some(r'etl_gate_events_total\{decision="unregistered".*/.*etl_gate_events_total'), \
        "unregistered share"
    assert some(r"etl_gate_useless_event_ratio"), "useless-event ratio"
    assert some(r"by \(partition\) \(etl_gate_consumer_lag_messages"), "consumer lag per partition"
    for q in ("0.5", "0.99", "0.999"):
        assert some(rf"histogram_quantile\({q}, .*etl_gate_end_to_end_latency_seconds_bucket"), \
            f"latency quantile {q}"
    assert some(r"histogram_quantile\(0\.99, .*etl_gate_batch_duration_seconds_bucket"), "batch p99"
    assert some(r"etl_gate_rules_version"), "rules version"
    assert some(r"time\(\) - .*etl_gate_rules_applied_timestamp_seconds"), "rules age"
    assert some(r"etl_gate_surging_events") and some(r"etl_gate_surges_total"), "surges"


def test_panels_are_well_formed() -> None:
    d = dashboard()
    ids = [p["id"] for p in d["panels"]] + [c["id"] for p in d["panels"] for c in p.get("panels", [])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert 36 <= d["schemaVersion"] <= 41
    for p in panels():
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    app = variables["app"]["query"]
    assert (app["query"] if isinstance(app, dict) else app) == "label_values(etl_gate_events_total, app)"
