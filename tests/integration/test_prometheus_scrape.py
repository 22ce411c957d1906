"""A real Prometheus scraping a running finsent during a replay: every dashboard query returns data,
and the recording rules agree with finsent's own monitor gauges.

finsent runs scaled out, as the rules are meant for: two `finsent run --stage classify` replicas in one
consumer group, a `--stage monitor` and a `--stage alerts` process, all scraped every second.

Tolerance of the agreement (also in README.md): for every topic with at least MIN_VOLUME
messages in the window, |finsent:negative_rate:ratio_rate<w> - finsent_negative_rate{window=<w>}| <=
RATE_TOLERANCE (absolute). The two are different estimators of the same share: the gauge counts each
message id once by event time (published_at) inside the window; the rule divides processing-time
rate()s of counters, which Prometheus extrapolates from 1 s samples, and each (topic, sentiment,
replica) counter series loses what it counted before its first scrape (up to one scrape interval, ~1 s of
traffic). In this replay every message's event time falls inside all three windows, there are no
duplicates, so the only differences are those sampling effects: at most a couple of messages per
series, i.e. up to about 0.02 of a rate over >= 50 messages (measured). 0.05 allows that and still
catches a rule that sums the wrong thing (one sentiment in the denominator, a ratio of the wrong
labels), which moves the rate by tenths. On a long-running stream the rule (rate over the last 5m of
processing time) and the gauge (last 5m of event time) also differ by the stream's lag and by
duplicates after a crash; see README.md. Volumes: finsent:messages_scored:increase<w>
(summed over both replicas) within VOLUME_TOLERANCE (25 %, relative) of finsent_window_messages: the
same pre-first-scrape loss, measured at up to 12 % here; a rule that dropped a replica or a sentiment
would be off by a third or more, and a rule left per replica fails the one-series-per-topic checks.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaProducer

from finsent.broker import EmbeddedBroker, free_port
from finsent.replay import Headline, load_headlines
from finsent.replay import replay as replay_headlines
from tests.integration.conftest import ROOT, ServiceProcess, produce
from tests.integration.debian import require_binary
from tests.integration.prometheus_fixture import (
    Prometheus,
    dashboard_panels,
    load_dashboard,
    start_prometheus,
    substitute,
)

pytestmark = pytest.mark.integration

REPLAY = 1500
RATE = 50.0  # msg/s: 30 s of event time, below one process's ~265 msg/s so the service keeps up
TICKS = 20
VALID = REPLAY + TICKS
# Baselines form only from buckets the watermark (newest event time - allowed lateness) has closed.
# The replay is published BACKDATE s in the past and spans 30 s of event time, so with a lateness of
# 60 s nothing in it can ever be late, however unevenly the two replicas progress; TICKS messages
# published now, sent after the replay is counted, move the watermark past all of its 1 s buckets.
LATENESS = 60
BACKDATE = 100.0
MONITOR_FLAGS = (
    "--eval-interval",
    "1",
    "--bucket-seconds",
    "1",
    "--allowed-lateness",
    str(LATENESS),
    "--baseline-min-samples",
    "3",
    "--min-volume",
    "5",
)
MALFORMED = [b"not json", b'{"id": "x"}', b'["a list"]', b""] * 5  # 20 DLQ records of 3 reasons
MIN_VOLUME = 50
RATE_TOLERANCE = 0.05
# Relative. Each (topic, sentiment, replica) counter series loses what it counted before its first
# scrape (a message or two; up to 6 series per topic here) and increase() extrapolates: measured up to
# 12 % under for a topic with ~60 messages on a loaded machine.
VOLUME_TOLERANCE = 0.25
# Queries that count events a healthy replay does not produce; they must still be valid PromQL and
# may return nothing (the test says which ones did). Everything else must return data.
EVENT_QUERIES = ("finsent_stream_errors_total",)


def metrics_port(service: ServiceProcess, timeout: float = 60) -> int:
    """The port of /metrics from the service's log line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(r"metrics on http://[\d.]+:(\d+)/metrics", service.log())
        if match:
            return int(match.group(1))
        assert service.alive(), service.log()
        time.sleep(0.2)
    pytest.fail(f"no metrics port in the service log after {timeout:.0f}s:\n{service.log()}")


def scalar(prometheus: Prometheus, expr: str) -> float:
    """The single value of an instant query (NaN when empty)."""
    result = prometheus.query(expr)
    return float(result[0]["value"][1]) if result else math.nan


def wait_for(
    prometheus: Prometheus, expr: str, want: float, timeout: float, services: list[ServiceProcess]
) -> None:
    """Poll an instant query until it returns `want` (failing early if a service died)."""
    deadline = time.monotonic() + timeout
    value = math.nan
    while time.monotonic() < deadline:
        value = scalar(prometheus, expr)
        if value == want:
            return
        for service in services:
            assert service.alive(), service.log()[-3000:]
        time.sleep(0.5)
    logs = "\n".join(service.log()[-1500:] for service in services)
    pytest.fail(f"{expr} = {value}, want {want} after {timeout:.0f}s\n{logs}")


def has_data(series: list[dict[str, Any]]) -> bool:
    """True when any series has a non-NaN value (instant `value` or range `values`)."""
    for item in series:
        points = item.get("values") or [item.get("value")]
        if any(point is not None and not math.isnan(float(point[1])) for point in points):
            return True
    return False


def replay(bootstrap: str, headlines: list[Headline], rate: float | None, backdate: float) -> None:
    """Send headlines as news at `rate` msg/s, each published `backdate` seconds before it is sent."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)

    def send(message: dict[str, Any]) -> None:
        published = datetime.fromtimestamp(time.time() - backdate, UTC)
        message["published_at"] = published.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        producer.send("news.raw", value=json.dumps(message).encode("utf-8"))

    try:
        assert replay_headlines(send, headlines, source="replay:test", rate=rate) == len(headlines)
        producer.flush(30)
    finally:
        producer.close(10)


def alert_files(directory: Path) -> tuple[Path, Path]:
    """A rule that fires for every topic with negative news (so the alert panels have data) and a
    Kafka subscription (so notifications are counted)."""
    rules = directory / "rules.yaml"
    rules.write_text(
        yaml.safe_dump(
            {"rules": [{"name": "any-negative", "window": "5m", "rate_above": 0.0, "min_volume": 5}]}
        ),
        encoding="utf-8",
    )
    subscriptions = directory / "subscriptions.yaml"
    subscriptions.write_text(
        yaml.safe_dump({"subscriptions": [{"name": "alerts-topic", "kind": "kafka", "topic": "alerts"}]}),
        encoding="utf-8",
    )
    return rules, subscriptions


def test_dashboard_queries_return_data_and_rules_match_gauges(
    broker: EmbeddedBroker, start_service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    started = time.monotonic()
    prometheus_binary = require_binary("prometheus")
    rules, subscriptions = alert_files(tmp_path)
    # The scaled-out shape: two classify replicas sharing news.raw's 3 partitions (one ONNX thread each
    # on this 2-core machine), one monitor, one alerts process; Prometheus scrapes all four.
    group = "finsent-prometheus"
    services = [
        start_service(broker, "--stage", "classify", "--threads", "1", group=group),
        start_service(broker, "--stage", "classify", "--threads", "1", group=group),
        start_service(
            broker, "--stage", "monitor", *MONITOR_FLAGS, group=group, state_dir=tmp_path / "monitor"
        ),
        start_service(
            broker,
            "--stage",
            "alerts",
            "--rules",
            str(rules),
            "--subscriptions",
            str(subscriptions),
            group=group,
            state_dir=tmp_path / "alerts",
        ),
    ]
    targets = [f"127.0.0.1:{metrics_port(service)}" for service in services]
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    prometheus = start_prometheus(prometheus_binary, workdir, targets, free_port())
    try:
        wait_for(prometheus, 'sum(up{job="finsent"})', len(services), 30, services)
        # Both classify replicas in the group with partitions before the replay starts, and the
        # monitor and alerts stages in theirs.
        wait_for(prometheus, 'sum(finsent_ready{stage="classify"})', 2, 60, services)
        wait_for(prometheus, 'sum(finsent_ready{stage=~"monitor|alerts"})', 2, 60, services)
        headlines = load_headlines(ROOT / "data" / "stock_tweets_stream_2020.csv")[:VALID]
        assert len(headlines) == VALID
        produce(broker.bootstrap, list(MALFORMED))
        replay(broker.bootstrap, headlines[:REPLAY], RATE, backdate=BACKDATE)
        wait_for(prometheus, 'sum(finsent_window_messages{window="5m"})', REPLAY, 120, services)
        replay(broker.bootstrap, headlines[REPLAY:], None, backdate=0)
        # Everything scored and acknowledged, everything counted once by the monitor.
        wait_for(prometheus, "sum(finsent_messages_scored_total)", VALID, 30, services)
        wait_for(prometheus, "sum(finsent_messages_invalid_total)", len(MALFORMED), 10, services)
        wait_for(prometheus, 'sum(finsent_window_messages{window="5m"})', VALID, 30, services)
        wait_for(prometheus, 'sum(finsent_monitor_messages_total{outcome!="applied"})', 0, 1, services)
        # The work really was shared: each classify replica scored part of the stream.
        per_replica = prometheus.query("sum by (instance) (finsent_messages_scored_total)")
        shares = sorted(float(item["value"][1]) for item in per_replica)
        print(f"scored per classify replica: {shares}")
        assert len(shares) == 2 and shares[0] > 0, per_replica
        # Two more rule evaluations after the last sample that changed.
        time.sleep(3)
        rules_loaded = prometheus.get("/api/v1/rules")["groups"]
        assert {group["name"] for group in rules_loaded} >= {"finsent.negative_rate", "finsent.alerts"}
        for rule_group in rules_loaded:
            for rule in rule_group["rules"]:
                assert rule["health"] == "ok", rule

        check_rules_against_gauges(prometheus)
        check_dashboard_queries(prometheus, time.monotonic() - started)
    finally:
        prometheus.stop()
    print(f"test took {time.monotonic() - started:.0f}s")


def check_rules_against_gauges(prometheus: Prometheus) -> None:
    """Recording rules (counters, all replicas) vs the monitor's gauges, per topic and window."""
    compared = 0
    for window in ("5m", "15m", "1h"):
        volumes = {
            item["metric"]["news_topic"]: float(item["value"][1])
            for item in prometheus.query(f'finsent_window_messages{{window="{window}"}}')
        }
        gauges = {
            item["metric"]["news_topic"]: float(item["value"][1])
            for item in prometheus.query(f'finsent_negative_rate{{window="{window}"}}')
        }
        recorded_series = prometheus.query(f"finsent:negative_rate:ratio_rate{window}")
        # One series per topic, summed over the replicas (no instance or sentiment label left).
        assert all(set(item["metric"]) == {"__name__", "news_topic"} for item in recorded_series), (
            recorded_series
        )
        recorded = {item["metric"]["news_topic"]: float(item["value"][1]) for item in recorded_series}
        increase_series = prometheus.query(f"finsent:messages_scored:increase{window}")
        assert all(set(item["metric"]) == {"__name__", "news_topic"} for item in increase_series)
        increases = {item["metric"]["news_topic"]: float(item["value"][1]) for item in increase_series}
        differences = {
            topic: round(recorded.get(topic, math.nan) - gauges[topic], 4)
            for topic, volume in volumes.items()
            if volume >= MIN_VOLUME
        }
        print(f"window {window}: rule - gauge per topic with >= {MIN_VOLUME} messages: {differences}")
        # Volumes: the counters' increase over both replicas against the monitor's window count.
        volume_errors = {
            topic: round(increases[topic] / volume - 1, 3)
            for topic, volume in volumes.items()
            if volume >= MIN_VOLUME
        }
        print(f"window {window}: increase / window volume - 1: {volume_errors}")
        assert max(map(abs, volume_errors.values())) <= VOLUME_TOLERANCE, volume_errors
        assert sum(volumes.values()) == VALID, volumes
        # Every topic the monitor saw has a recorded rate (0 for a topic without negatives), and no
        # other topic does.
        assert set(recorded) == {topic for topic, volume in volumes.items() if volume > 0}
        assert len(differences) >= 5, volumes  # the replay spreads over many topics
        worst = max(differences.items(), key=lambda item: abs(item[1]))
        assert abs(worst[1]) <= RATE_TOLERANCE, (window, worst, differences)
        compared += len(differences)
    # All messages at once: the rule's overall negative share matches the monitor's counter exactly
    # enough to catch a wrong label (e.g. counting only one replica or one sentiment).
    overall_rule = scalar(
        prometheus,
        'sum(rate(finsent_messages_scored_total{sentiment="negative"}[5m]))'
        " / sum(rate(finsent_messages_scored_total[5m]))",
    )
    overall_gauge = scalar(
        prometheus,
        'sum(finsent_window_negative_messages{window="5m"}) / sum(finsent_window_messages{window="5m"})',
    )
    print(
        f"overall negative share: rule {overall_rule:.4f}, monitor {overall_gauge:.4f}; {compared} compared"
    )
    assert abs(overall_rule - overall_gauge) <= 0.02


def check_dashboard_queries(prometheus: Prometheus, elapsed: float) -> None:
    """Every panel's queries, as Grafana sends them (all topics, and one topic), return data."""
    busiest = max(
        prometheus.query('finsent_window_messages{window="5m"}'), key=lambda item: float(item["value"][1])
    )["metric"]["news_topic"]
    # Grafana escapes a selected value for a regex matcher, doubling the backslash inside PromQL's string.
    busiest_regex = re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", busiest)
    empty_allowed: list[str] = []
    failures: list[str] = []
    checked = 0
    dashboard = load_dashboard()
    for panel in dashboard_panels(dashboard):
        panel_has_data = False
        for target in panel["targets"]:
            for topic in (".*", busiest_regex):
                expr = substitute(target["expr"], topic=topic, window="5m", rate_interval="30s")
                if target.get("instant"):
                    result = prometheus.query(expr)
                else:
                    result = prometheus.query_range(expr, seconds=min(elapsed, 300), step="2s")
                checked += 1
                if has_data(result):
                    panel_has_data = True
                elif any(name in expr for name in EVENT_QUERIES):
                    empty_allowed.append(f"{panel['title']}: {expr}")
                else:
                    failures.append(f"{panel['title']} [{topic}]: {expr}")
        if not panel_has_data:
            failures.append(f"panel {panel['title']!r}: no query returned data")
    print(f"{checked} dashboard queries checked; empty but allowed (no such events): {empty_allowed}")
    assert not failures, "\n".join(failures)
