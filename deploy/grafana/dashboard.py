"""Generate the provisioned Grafana dashboard deploy/grafana/dashboards/finsent.json.

The JSON is committed (reviewable, and what Grafana provisions); this script is its source.
`python deploy/grafana/dashboard.py` rewrites it, `--check` exits 1 when the file is out of date
(tests/test_deploy_dashboard.py runs the same comparison).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "finsent.json"
UID = "finsent-overview"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
WINDOWS = ("5m", "15m", "1h")
TOPIC = 'news_topic=~"$topic"'
MSG_PER_S = "suffix: msg/s"  # Grafana custom unit: the value followed by " msg/s"

# Thresholds shown on panels; the alerting rules in deploy/prometheus/rules/finsent-alerts.yml use the
# same numbers (tests/test_deploy_rules.py checks they stay in step).
NEGATIVE_RATE_WARN = 0.4
NEGATIVE_RATE_CRIT = 0.5
SURGE_WARN = 3.0
SURGE_CRIT = 4.0
LAG_WARN = 1000
LAG_CRIT = 5000
LATENCY_P99_WARN = 1.0
LATENCY_P99_CRIT = 5.0
DLQ_RATIO_CRIT = 0.05


def thresholds(*steps: tuple[float, str]) -> dict[str, Any]:
    """Absolute thresholds starting green."""
    return {
        "mode": "absolute",
        "steps": [{"color": "green", "value": None}]
        + [{"color": color, "value": value} for value, color in steps],
    }


def target(
    expr: str, legend: str = "", ref: str = "A", instant: bool = False, table: bool = False
) -> dict[str, Any]:
    """One Prometheus query of a panel (table: one row per series, labels as columns)."""
    query: dict[str, Any] = {
        "datasource": DATASOURCE,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "refId": ref,
        "range": not instant,
        "instant": instant,
    }
    if table:
        query["format"] = "table"
    return query


class Layout:
    """Hands out gridPos rectangles left to right, top to bottom, on Grafana's 24-column grid."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.row_height = 0
        self.next_id = 1

    def place(self, width: int, height: int) -> dict[str, int]:
        """The next rectangle of this size (wrapping to a new line when it does not fit)."""
        if self.x + width > 24:
            self.newline()
        pos = {"x": self.x, "y": self.y, "w": width, "h": height}
        self.x += width
        self.row_height = max(self.row_height, height)
        return pos

    def newline(self) -> None:
        """Start a new line below the tallest panel of the current one."""
        self.y += self.row_height
        self.x = 0
        self.row_height = 0

    def ident(self) -> int:
        """A fresh panel id."""
        self.next_id += 1
        return self.next_id - 1


def row(layout: Layout, title: str) -> dict[str, Any]:
    """A (non-collapsed) row header."""
    layout.newline()
    panel = {
        "type": "row",
        "id": layout.ident(),
        "title": title,
        "collapsed": False,
        "gridPos": layout.place(24, 1),
        "panels": [],
    }
    layout.newline()
    return panel


def panel(
    layout: Layout,
    kind: str,
    title: str,
    targets: list[dict[str, Any]],
    *,
    unit: str,
    width: int = 12,
    height: int = 8,
    description: str = "",
    steps: dict[str, Any] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    overrides: list[dict[str, Any]] | None = None,
    options: dict[str, Any] | None = None,
    decimals: int | None = None,
    transformations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A panel with a unit, thresholds and its queries."""
    defaults: dict[str, Any] = {"unit": unit, "thresholds": steps or thresholds()}
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    if decimals is not None:
        defaults["decimals"] = decimals
    if kind == "timeseries":
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 0, "showPoints": "never"}
        if steps is not None:
            defaults["custom"]["thresholdsStyle"] = {"mode": "dashed"}
        defaults["color"] = {"mode": "palette-classic"}
    else:
        defaults["color"] = {"mode": "thresholds"}
    result: dict[str, Any] = {
        "type": kind,
        "id": layout.ident(),
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": layout.place(width, height),
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
        "targets": [dict(t, refId=chr(ord("A") + i)) for i, t in enumerate(targets)],
    }
    if transformations:
        result["transformations"] = transformations
    if kind == "timeseries" and not options:
        result["options"] = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    return result


def dashed(pattern: str) -> dict[str, Any]:
    """Override: series whose name matches the regex are drawn dashed (baselines)."""
    return {
        "matcher": {"id": "byRegexp", "options": pattern},
        "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}],
    }


def stat_options(text_mode: str = "value") -> dict[str, Any]:
    """Stat panel options: last value, no sparkline for text."""
    return {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "value",
        "graphMode": "area" if text_mode == "value" else "none",
        "textMode": text_mode,
        "justifyMode": "auto",
        "orientation": "auto",
    }


def rate(metric: str, extra: str = "") -> str:
    """rate() over Grafana's rate interval, with an optional label matcher."""
    selector = f"{metric}{{{extra}}}" if extra else metric
    return f"rate({selector}[$__rate_interval])"


def service_row(layout: Layout) -> list[dict[str, Any]]:
    """Row "Service": stat panels for throughput, lag, DLQ share, alerts, replicas and model."""
    return [
        row(layout, "Service"),
        panel(
            layout,
            "stat",
            "Throughput (scored)",
            [target(f"sum({rate('finsent_messages_scored_total')})")],
            unit=MSG_PER_S,
            width=4,
            height=4,
            description="Scored messages per second, all classify replicas.",
            options=stat_options(),
        ),
        panel(
            layout,
            "stat",
            "Consumer lag",
            [target("sum(max by (topic, partition) (finsent_consumer_lag_messages))")],
            unit="short",
            width=4,
            height=4,
            description="Messages behind the high watermark, summed over partitions (max per partition: a "
            "replica that lost a partition keeps its last value until it restarts).",
            steps=thresholds((LAG_WARN, "orange"), (LAG_CRIT, "red")),
            options=stat_options(),
        ),
        panel(
            layout,
            "stat",
            "DLQ share",
            [
                target(
                    f"(sum({rate('finsent_messages_invalid_total')}) or vector(0))"
                    f" / sum({rate('finsent_messages_consumed_total')})"
                )
            ],
            unit="percentunit",
            width=4,
            height=4,
            description="Share of consumed records sent to the dead-letter topic.",
            steps=thresholds((DLQ_RATIO_CRIT / 5, "orange"), (DLQ_RATIO_CRIT, "red")),
            options=stat_options(),
            decimals=2,
        ),
        panel(
            layout,
            "stat",
            "Firing alerts",
            [target('count(finsent_alerts_active{state="firing"} == 1) or vector(0)')],
            unit="short",
            width=4,
            height=4,
            description="Alerts finsent's own rules hold in state firing.",
            steps=thresholds((1, "red")),
            options=stat_options(),
        ),
        panel(
            layout,
            "stat",
            "Ready classify replicas",
            [target('sum(finsent_ready{stage="classify"})')],
            unit="short",
            width=4,
            height=4,
            description="Processes in their consumer group with a working broker connection.",
            steps={
                "mode": "absolute",
                "steps": [{"color": "red", "value": None}, {"color": "green", "value": 1}],
            },
            options=stat_options(),
        ),
        panel(
            layout,
            "stat",
            "Model version",
            [
                target(
                    "count by (version, variant, provider) (finsent_model_info)",
                    "{{version}} {{variant}} {{provider}}",
                    instant=True,
                )
            ],
            unit="none",
            width=4,
            height=4,
            description="Model version, ONNX variant and execution provider; one line per distinct "
            "combination (two lines during a rollout).",
            options=stat_options("name"),
        ),
    ]


def negative_rate_panel(layout: Layout, window: str) -> dict[str, Any]:
    """One window's negative rate per topic, with the topic baselines dashed."""
    return panel(
        layout,
        "timeseries",
        f"Negative rate, {window} window, with baseline",
        [
            target(f'finsent_negative_rate{{{TOPIC}, window="{window}"}}', "{{news_topic}}"),
            target(f"finsent_negative_rate_baseline{{{TOPIC}}}", "{{news_topic}} baseline"),
        ],
        unit="percentunit",
        width=8,
        minimum=0,
        maximum=1,
        description=f"Monitor gauge: share of messages labelled negative in the last {window} of event "
        "time (each message id once); dashed: the topic's exponentially weighted baseline.",
        steps=thresholds((NEGATIVE_RATE_WARN, "orange"), (NEGATIVE_RATE_CRIT, "red")),
        overrides=[dashed(".* baseline$")],
    )


def negative_rate_row(layout: Layout) -> list[dict[str, Any]]:
    """Row "Negative rate per topic": each window's rate and baseline, volume, surge, recording rules."""
    return [
        row(layout, "Negative rate per topic"),
        *(negative_rate_panel(layout, window) for window in WINDOWS),
        panel(
            layout,
            "timeseries",
            "Window volume",
            [target(f'finsent_window_messages{{{TOPIC}, window="$window"}}', "{{news_topic}}")],
            unit="short",
            width=8,
            minimum=0,
            description="Messages per topic in the selected window (the volume behind each rate).",
        ),
        panel(
            layout,
            "timeseries",
            "Surge statistic",
            [target(f'finsent_negative_rate_surge{{{TOPIC}, window="$window"}}', "{{news_topic}}")],
            unit="none",
            width=8,
            description="One-sided binomial z of the window's negative rate against the topic baseline "
            "(no value below the minimum volume or before the baseline has enough samples).",
            steps=thresholds((SURGE_WARN, "orange"), (SURGE_CRIT, "red")),
        ),
        panel(
            layout,
            "timeseries",
            "Negative rate from counters, all replicas",
            [
                target(f"finsent:negative_rate:ratio_rate{window}{{{TOPIC}}}", f"{{{{news_topic}}}} {window}")
                for window in WINDOWS
            ],
            unit="percentunit",
            width=8,
            minimum=0,
            maximum=1,
            description="Prometheus recording rules: negative share of scored-message counter rates summed "
            "over every classify replica (processing time, no dedupe).",
            steps=thresholds((NEGATIVE_RATE_WARN, "orange"), (NEGATIVE_RATE_CRIT, "red")),
        ),
    ]


def alerts_row(layout: Layout) -> list[dict[str, Any]]:
    """Row "Alerts": the active alerts and the delivery of their notifications."""
    return [
        row(layout, "Alerts"),
        panel(
            layout,
            "table",
            "Active alerts",
            [
                target(
                    f"max by (rule, news_topic, severity, state) (finsent_alerts_active{{{TOPIC}}}) > 0",
                    instant=True,
                    table=True,
                )
            ],
            unit="none",
            width=12,
            description="Alerts of finsent's rules that are pending or firing now.",
            options={"showHeader": True, "cellHeight": "sm"},
            transformations=[
                {"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}},
            ],
        ),
        panel(
            layout,
            "timeseries",
            "Alert notifications",
            [
                target(
                    "sum by (kind, outcome) (rate(finsent_alert_notifications_total[$__rate_interval]))",
                    "{{kind}} {{outcome}}",
                ),
                target("sum(finsent_alert_outbox_pending)", "outbox pending"),
            ],
            unit="short",
            width=12,
            minimum=0,
            description="Deliveries per second by channel and outcome, and the outbox backlog "
            "(notifications not yet delivered).",
        ),
    ]


def pipeline_row(layout: Layout) -> list[dict[str, Any]]:
    """Row "Pipeline": throughput, latency, lag, dead letters, batching and stream errors."""
    return [
        row(layout, "Pipeline"),
        panel(
            layout,
            "timeseries",
            "Throughput",
            [
                target(f"sum({rate('finsent_messages_consumed_total')})", "consumed"),
                target(f"sum({rate('finsent_messages_scored_total')})", "scored"),
                target(
                    f"sum by (news_topic) ({rate('finsent_messages_scored_total', TOPIC)})", "{{news_topic}}"
                ),
            ],
            unit=MSG_PER_S,
            width=12,
            minimum=0,
            description="Records consumed and scored per second (all replicas) and scored per topic.",
        ),
        panel(
            layout,
            "timeseries",
            "End-to-end latency",
            [
                target(
                    f"histogram_quantile({q}, sum by (le) ({rate('finsent_end_to_end_latency_seconds_bucket')}))",
                    f"p{round(q * 100)}",
                )
                for q in (0.5, 0.99)
            ]
            + [
                target(
                    f"histogram_quantile(0.99, sum by (le) ({rate('finsent_inference_latency_seconds_bucket')}))",
                    "model p99 per batch",
                )
            ],
            unit="s",
            width=12,
            minimum=0,
            description="Input record's Kafka timestamp to the scored record's acknowledgement, all "
            "replicas; and model time per micro-batch.",
            steps=thresholds((LATENCY_P99_WARN, "orange"), (LATENCY_P99_CRIT, "red")),
        ),
        panel(
            layout,
            "timeseries",
            "Consumer lag by partition",
            [
                target(
                    "max by (topic, partition) (finsent_consumer_lag_messages)",
                    "{{topic}}/{{partition}}",
                )
            ],
            unit="short",
            width=12,
            minimum=0,
            steps=thresholds((LAG_WARN, "orange"), (LAG_CRIT, "red")),
        ),
        panel(
            layout,
            "timeseries",
            "Dead-letter rate by reason",
            [
                target(
                    f"sum by (reason) ({rate('finsent_messages_invalid_total')})",
                    "{{reason}}",
                )
            ],
            unit=MSG_PER_S,
            width=12,
            minimum=0,
            description="Records sent to the DLQ per second, by reason.",
        ),
        panel(
            layout,
            "timeseries",
            "Batch size and buffer",
            [
                target(
                    f"histogram_quantile(0.5, sum by (le) ({rate('finsent_batch_size_messages_bucket')}))",
                    "batch size p50",
                ),
                target("sum(finsent_buffered_messages)", "buffered"),
                target("sum(finsent_fetch_paused)", "paused replicas"),
            ],
            unit="short",
            width=12,
            minimum=0,
            description="Micro-batch size, messages waiting for a batch, replicas pausing fetch for "
            "backpressure.",
        ),
        panel(
            layout,
            "timeseries",
            "Monitor input and stream errors",
            [
                target(f"sum by (outcome) ({rate('finsent_monitor_messages_total')})", "monitor {{outcome}}"),
                target(
                    f"sum by (stage, kind) ({rate('finsent_stream_errors_total')})",
                    "{{stage}} error {{kind}}",
                ),
            ],
            unit=MSG_PER_S,
            width=12,
            minimum=0,
            description="Scored messages the monitor applied, dropped as duplicates or late; recoverable "
            "stream errors by kind.",
        ),
    ]


def variables() -> list[dict[str, Any]]:
    """The dashboard's variables: data source, topic (multi-select) and window."""
    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {"selected": True, "text": "Prometheus", "value": "prometheus"},
            "hide": 0,
        },
        {
            "name": "topic",
            "label": "Topic",
            "type": "query",
            "datasource": DATASOURCE,
            "definition": "label_values(finsent_messages_scored_total, news_topic)",
            "query": {
                "query": "label_values(finsent_messages_scored_total, news_topic)",
                "refId": "topics",
            },
            "refresh": 2,
            "sort": 1,
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "hide": 0,
        },
        {
            "name": "window",
            "label": "Window",
            "type": "custom",
            "query": ",".join(WINDOWS),
            "options": [{"selected": window == "15m", "text": window, "value": window} for window in WINDOWS],
            "current": {"selected": True, "text": "15m", "value": "15m"},
            "multi": False,
            "includeAll": False,
            "hide": 0,
        },
    ]


def build() -> dict[str, Any]:
    """The whole dashboard as a dict."""
    layout = Layout()
    panels = [
        *service_row(layout),
        *negative_rate_row(layout),
        *alerts_row(layout),
        *pipeline_row(layout),
    ]
    return {
        "uid": UID,
        "title": "finsent: news sentiment",
        "description": "Per-topic negative sentiment rates and the health of the finsent pipeline.",
        "tags": ["finsent"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": variables()},
        "panels": panels,
    }


def render() -> str:
    """The dashboard as the committed JSON text."""
    return json.dumps(build(), indent=2) + "\n"


def main() -> int:
    """Write the dashboard, or with --check compare it with the committed file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON is out of date")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUTPUT.is_file() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is out of date: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
