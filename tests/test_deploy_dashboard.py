"""The provisioned Grafana dashboard: generated from deploy/grafana/dashboard.py, queries only finsent's
own metric names, a topic variable every per-topic query uses, units and thresholds, provisioning that
points at the file."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.integration.prometheus_fixture import (
    DASHBOARD,
    DEPLOY,
    dashboard_panels,
    exported_metric_names,
    load_dashboard,
    metric_names,
    panel_queries,
    recording_rule_names,
    substitute,
)

# Metrics that carry a news_topic label: every query over them must honour the $topic selection.
PER_TOPIC = re.compile(
    r"finsent_(negative_rate|expected_negative_rate|window_messages|window_negative_messages|"
    r"negative_rate_surge|negative_rate_baseline|alerts_active)\b|finsent:negative_rate:"
)


def generator() -> ModuleType:
    """deploy/grafana/dashboard.py as a module."""
    spec = importlib.util.spec_from_file_location("finsent_dashboard", DEPLOY / "grafana" / "dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for _, target in panel_queries(dashboard)]


def test_committed_json_is_what_the_generator_writes() -> None:
    assert DASHBOARD.read_text(encoding="utf-8") == generator().render(), (
        "deploy/grafana/dashboards/finsent.json is stale: run python deploy/grafana/dashboard.py"
    )


def test_every_panel_has_a_query_unit_datasource_and_a_place(dashboard: dict[str, Any]) -> None:
    panels = dashboard_panels(dashboard)
    assert len(panels) >= 15
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not cells & occupied, f"panel {panel['title']!r} overlaps another"
        occupied |= cells
    for panel in panels:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), f"panel {panel['title']!r} has no unit"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_queries_use_only_metric_names_finsent_exports(dashboard: dict[str, Any]) -> None:
    exported = exported_metric_names()
    known = exported | recording_rule_names()
    # The parser itself: names are found, label names, functions and keywords are not.
    assert metric_names(
        'histogram_quantile(0.99, sum by (le) (rate(finsent_end_to_end_latency_seconds_bucket{x="a|b"}[5m])))'
    ) == {"finsent_end_to_end_latency_seconds_bucket"}
    assert metric_names("count(a == 1) or on (news_topic) vector(0) / b:rule:x") == {"a", "b:rule:x"}
    # The registries really were read (one name from each of service, monitor and alerts).
    assert {"finsent_messages_scored_total", "finsent_negative_rate", "finsent_alerts_active"} <= exported
    used: set[str] = set()
    for expr in exprs(dashboard):
        names = metric_names(substitute(expr))
        assert names, f"no metric in {expr!r}"
        unknown = names - known
        assert not unknown, f"{expr!r} uses names finsent does not export: {sorted(unknown)}"
        used |= names
    # What the issue asks the dashboard to show.
    required = {
        "finsent_negative_rate",
        "finsent_negative_rate_baseline",
        "finsent_window_messages",
        "finsent_negative_rate_surge",
        "finsent_alerts_active",
        "finsent_messages_scored_total",
        "finsent_end_to_end_latency_seconds_bucket",
        "finsent_consumer_lag_messages",
        "finsent_messages_invalid_total",
        "finsent_model_info",
    }
    assert required <= used, sorted(required - used)


def test_each_window_has_a_negative_rate_panel_with_its_baseline(dashboard: dict[str, Any]) -> None:
    for window in ("5m", "15m", "1h"):
        matching = [
            panel
            for panel in dashboard_panels(dashboard)
            if any(
                f'window="{window}"' in t["expr"] and "finsent_negative_rate{" in t["expr"]
                for t in panel["targets"]
            )
        ]
        assert len(matching) == 1, window
        panel = matching[0]
        assert any("finsent_negative_rate_baseline" in t["expr"] for t in panel["targets"]), window
        defaults = panel["fieldConfig"]["defaults"]
        assert (defaults["unit"], defaults["min"], defaults["max"]) == ("percentunit", 0, 1)
        assert len(defaults["thresholds"]["steps"]) >= 2, "negative rate panels need thresholds"
    p50_p99 = " ".join(exprs(dashboard))
    assert "histogram_quantile(0.5," in p50_p99 and "histogram_quantile(0.99," in p50_p99


def test_units_match_what_is_measured(dashboard: dict[str, Any]) -> None:
    for panel in dashboard_panels(dashboard):
        unit = panel["fieldConfig"]["defaults"]["unit"]
        joined = " ".join(t["expr"] for t in panel["targets"])
        if "_latency_seconds" in joined:
            assert unit == "s", panel["title"]
        if joined.startswith("finsent_negative_rate{") or "ratio_rate" in joined:
            assert unit == "percentunit", panel["title"]
        if "rate(finsent_messages_scored_total" in joined and "histogram" not in joined:
            assert unit in ("suffix: msg/s", "percentunit"), panel["title"]


def test_topic_and_window_variables_exist_and_are_used(dashboard: dict[str, Any]) -> None:
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    topic = variables["topic"]
    assert topic["type"] == "query"
    assert "label_values(finsent_messages_scored_total, news_topic)" in topic["query"]["query"]
    assert topic["includeAll"] and topic["multi"] and topic["allValue"] == ".*"
    assert variables["datasource"]["query"] == "prometheus"
    assert [option["value"] for option in variables["window"]["options"]] == ["5m", "15m", "1h"]
    per_topic = [expr for expr in exprs(dashboard) if PER_TOPIC.search(expr)]
    assert len(per_topic) >= 8
    for expr in per_topic:
        if 'state="firing"} == 1' in expr:  # the firing-alert count is deliberately over all topics
            continue
        assert 'news_topic=~"$topic"' in expr, f"per-topic query ignores $topic: {expr}"
    assert sum('window="$window"' in expr for expr in exprs(dashboard)) >= 2


def test_provisioning_points_at_the_dashboard_and_datasource() -> None:
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (prometheus,) = datasources["datasources"]
    assert prometheus["type"] == "prometheus" and prometheus["uid"] == "prometheus"
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/finsent.yml").read_text())
    (provider,) = providers["providers"]
    container_path = provider["options"]["path"]
    # The compose file mounts the repository folders at the paths the provisioning files name.
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    mounts = {}
    for volume in compose["services"]["grafana"]["volumes"]:
        source, target = volume.split(":")[:2]
        mounts[target] = (DEPLOY / source).resolve()
    assert mounts[container_path] == DASHBOARD.parent.resolve()
    assert (mounts[container_path] / DASHBOARD.name).is_file()
    assert (
        mounts["/etc/grafana/provisioning/dashboards"]
        == (DEPLOY / "grafana/provisioning/dashboards").resolve()
    )
    assert (
        mounts["/etc/grafana/provisioning/datasources"]
        == (DEPLOY / "grafana/provisioning/datasources").resolve()
    )
    home = compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).parent == Path(container_path) and Path(home).name == DASHBOARD.name
