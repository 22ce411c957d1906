"""Helpers for the deploy tests: the dashboard's queries, finsent's metric names, a real Prometheus process."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "finsent.json"
RULES_DIR = DEPLOY / "prometheus" / "rules"

# Words of PromQL that look like metric names: functions are recognised by the "(" after them.
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:$.])([A-Za-z_:][\w:]*)(\s*\()?")


def load_dashboard() -> dict[str, Any]:
    """The committed dashboard JSON."""
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def dashboard_panels(dashboard: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every panel that shows data (rows flattened away)."""
    dashboard = dashboard or load_dashboard()
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def substitute(expr: str, topic: str = ".*", window: str = "5m", rate_interval: str = "30s") -> str:
    """The query Grafana would send, for the given variable values."""
    replacements = {
        "$__rate_interval": rate_interval,
        "${__rate_interval}": rate_interval,
        "$__interval": "5s",
        "$__range": "5m",
        "${topic}": topic,
        "$topic": topic,
        "${window}": window,
        "$window": window,
    }
    for variable, value in replacements.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


def metric_names(expr: str) -> set[str]:
    """Metric (and recording-rule) names a PromQL expression selects."""
    stripped = _STRING.sub('""', expr)
    stripped = _MATCHERS.sub(" ", stripped)
    stripped = _RANGE.sub(" ", stripped)
    stripped = _GROUPING.sub(" ", stripped)
    names = set()
    for match in _IDENT.finditer(stripped):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def exported_metric_names() -> set[str]:
    """Every series name finsent's registries can expose (service, monitor and alert metrics)."""
    from alerts.metrics import AlertMetrics
    from finsent.metrics import ClassifyMetrics
    from monitor.metrics import MonitorMetrics

    registry = CollectorRegistry()
    ClassifyMetrics(registry)
    MonitorMetrics(registry)
    AlertMetrics(registry)
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created"),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def rule_groups() -> list[dict[str, Any]]:
    """The rule groups of every file in deploy/prometheus/rules."""
    groups: list[dict[str, Any]] = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        groups.extend(yaml.safe_load(path.read_text(encoding="utf-8"))["groups"])
    return groups


def recording_rule_names() -> set[str]:
    """Names the recording rules define."""
    return {rule["record"] for group in rule_groups() for rule in group["rules"] if "record" in rule}


@dataclass
class Prometheus:
    """A real Prometheus server on loopback, scraping one target every second, with finsent's rules."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """Prometheus's own log so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def get(self, path: str, **params: str) -> Any:
        """GET an API path; the decoded `data` of a success."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (a scalar or string result becomes one sample)."""
        data = self.get("/api/v1/query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, seconds: float, step: str = "1s") -> list[dict[str, Any]]:
        """Range query over the last `seconds`, the way a Grafana time-series panel asks."""
        end = time.time()
        data = self.get(
            "/api/v1/query_range", query=expr, start=f"{end - seconds:.3f}", end=f"{end:.3f}", step=step
        )
        result: list[dict[str, Any]] = data["result"]
        return result

    def ready(self) -> bool:
        """True once /-/ready answers 200."""
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_prometheus(binary: str, workdir: Path, targets: list[str], port: int) -> Prometheus:
    """Start Prometheus (1 s scrape and rule evaluation, job finsent) against `targets` (host:port) with
    the rule files of deploy/prometheus/rules; wait until ready."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(path) for path in sorted(RULES_DIR.glob("*.yml"))],
        "scrape_configs": [{"job_name": "finsent", "static_configs": [{"targets": targets}]}],
    }
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log_path = workdir / "prometheus.log"
    command = [
        binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        "--log.level=warn",
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    server = Prometheus(process, port, log_path)
    deadline = time.monotonic() + 30
    while not server.ready():
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode}: {server.log()[-2000:]}")
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"prometheus not ready within 30s: {server.log()[-2000:]}")
        time.sleep(0.2)
    return server


def panel_queries(dashboard: dict[str, Any] | None = None) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query of every panel."""
    for panel in dashboard_panels(dashboard):
        for target in panel.get("targets", []):
            yield panel, target
