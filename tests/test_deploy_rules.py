"""Prometheus recording and alerting rules: promtool check + promtool unit tests, names, thresholds."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.integration.debian import require_binary
from tests.integration.prometheus_fixture import (
    DEPLOY,
    RULES_DIR,
    exported_metric_names,
    metric_names,
    recording_rule_names,
    rule_groups,
)

TESTS_DIR = DEPLOY / "prometheus" / "tests"


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )


def test_promtool_check_rules() -> None:
    files = sorted(RULES_DIR.glob("*.yml"))
    assert [path.name for path in files] == ["finsent-alerts.yml", "finsent-recording.yml"]
    result = promtool("check", "rules", *map(str, files))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    files = sorted(TESTS_DIR.glob("*.yaml"))
    assert [path.name for path in files] == ["alerts.yaml", "recording.yaml"]
    result = promtool("test", "rules", *map(str, files))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files), result.stdout


def test_unit_tests_catch_a_rule_that_does_not_sum_across_replicas(tmp_path: Path) -> None:
    """The promtool tests are not vacuous: per-replica rates (by instance) break them."""
    shutil.copytree(DEPLOY / "prometheus", tmp_path / "prometheus")
    recording = tmp_path / "prometheus" / "rules" / "finsent-recording.yml"
    text = recording.read_text()
    broken = text.replace("sum by (news_topic) (rate(", "sum by (news_topic, instance) (rate(")
    assert broken != text
    recording.write_text(broken)
    result = promtool("test", "rules", str(tmp_path / "prometheus" / "tests" / "recording.yaml"))
    assert result.returncode != 0
    assert "finsent:negative_rate:ratio_rate5m" in result.stdout + result.stderr


def test_compose_prometheus_config_and_alertmanager_config_are_valid(tmp_path: Path) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]  # where compose mounts the rules
    assert config["scrape_configs"][0]["job_name"] == "finsent"  # the job the alerts expect
    config["rule_files"] = [str(path) for path in sorted(RULES_DIR.glob("*.yml"))]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    result = promtool("check", "config", str(local))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout, result.stdout
    amtool = subprocess.run(
        [require_binary("amtool"), "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert amtool.returncode == 0, amtool.stdout + amtool.stderr


def test_rules_use_only_metrics_finsent_exports() -> None:
    known = exported_metric_names() | recording_rule_names() | {"up"}
    for group in rule_groups():
        for rule in group["rules"]:
            names = metric_names(rule["expr"])
            assert names, rule
            assert names <= known, f"{rule.get('record') or rule.get('alert')}: {sorted(names - known)}"


def test_rule_names_and_labels() -> None:
    recorded = recording_rule_names()
    for window in ("5m", "15m", "1h"):
        assert f"finsent:negative_rate:ratio_rate{window}" in recorded
    for name in recorded:
        assert re.fullmatch(r"finsent:[a-z_]+:[a-z0-9_]+", name), name  # level:metric:operations
    alerts = {rule["alert"]: rule for group in rule_groups() for rule in group["rules"] if "alert" in rule}
    assert {
        "FinsentTopicNegativeRateHigh",
        "FinsentConsumerLagHigh",
        "FinsentDown",
        "FinsentDLQRateHigh",
    } <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    # The negative-rate alert needs a volume guard.
    assert "finsent:messages_scored:increase15m" in alerts["FinsentTopicNegativeRateHigh"]["expr"]


def test_alert_thresholds_match_the_dashboard() -> None:
    dashboard = load_module(DEPLOY / "grafana" / "dashboard.py")
    alerts = {
        rule["alert"]: rule["expr"] for group in rule_groups() for rule in group["rules"] if "alert" in rule
    }

    def threshold(alert: str, metric: str) -> float:
        match = re.search(re.escape(metric) + r"[^>]*>\s*([0-9.]+)", alerts[alert])
        assert match, (alert, metric)
        return float(match.group(1))

    assert threshold("FinsentTopicNegativeRateHigh", "ratio_rate15m") == dashboard.NEGATIVE_RATE_CRIT
    assert threshold("FinsentConsumerLagHigh", "lag_messages:sum") == dashboard.LAG_CRIT
    assert threshold("FinsentEndToEndLatencyHigh", "p99_5m") == dashboard.LATENCY_P99_CRIT
    assert threshold("FinsentDLQRateHigh", "ratio_rate5m") == dashboard.DLQ_RATIO_CRIT
    assert threshold("FinsentTopicNegativeSurge", "surge") == dashboard.SURGE_CRIT


def test_kubernetes_prometheusrule_is_generated_from_the_rule_files() -> None:
    generator = load_module(DEPLOY / "k8s" / "prometheusrule.py")
    committed = (DEPLOY / "k8s" / "prometheusrule.yaml").read_text()
    assert committed == generator.render(), "run python deploy/k8s/prometheusrule.py"
    assert yaml.safe_load(committed)["spec"]["groups"] == rule_groups()


@pytest.mark.parametrize("path", sorted(TESTS_DIR.glob("*.yaml")), ids=lambda path: path.name)
def test_unit_test_files_load_the_shipped_rules(path: Path) -> None:
    spec = yaml.safe_load(path.read_text())
    loaded = {(path.parent / name).resolve() for name in spec["rule_files"]}
    assert loaded <= {p.resolve() for p in RULES_DIR.glob("*.yml")}
    assert loaded
