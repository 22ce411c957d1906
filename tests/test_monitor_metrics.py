"""Prometheus export of monitor snapshots, into an injected registry."""

import math

from prometheus_client import CollectorRegistry

from monitor import OTHER_TOPIC, Monitor, MonitorConfig
from monitor.metrics import MonitorMetrics

T0 = 1_700_000_000.0


def test_gauges_and_counters_follow_the_monitor() -> None:
    registry = CollectorRegistry()
    metrics = MonitorMetrics(registry)
    monitor = Monitor(MonitorConfig(horizons=(300, 900), topics=("Macro", "IPO"), min_volume=1))
    for i, (topic, sentiment) in enumerate(
        [("Macro", "negative"), ("Macro", "neutral"), ("Crypto", "negative")]
    ):
        metrics.record(monitor.observe(f"m{i}", topic, sentiment, 0.5, T0 + i, "h"), sentiment)
    metrics.record(monitor.observe("m0", "Macro", "negative", 0.5, T0, "h"), "negative")
    metrics.publish(monitor.snapshot(T0 + 3), monitor.counters, monitor.watermark)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("finsent_negative_rate", news_topic="Macro", window="5m") == 0.5
    assert value("finsent_window_messages", news_topic="Macro", window="15m") == 2
    assert value("finsent_window_negative_messages", news_topic=OTHER_TOPIC, window="5m") == 1
    assert value("finsent_expected_negative_rate", news_topic="Macro", window="5m") == 0.5
    empty = value("finsent_negative_rate", news_topic="IPO", window="5m")
    assert empty is not None and math.isnan(empty)
    surge = value("finsent_negative_rate_surge", news_topic="Macro", window="5m")
    assert surge is not None and math.isnan(surge)  # no baseline yet
    baseline = value("finsent_negative_rate_baseline", news_topic="Macro")
    assert baseline is not None and math.isnan(baseline)
    assert value("finsent_monitor_messages_total", outcome="applied") == 3
    assert value("finsent_monitor_messages_total", outcome="duplicate") == 1
    assert value("finsent_monitor_messages_total", outcome="late") == 0
    assert value("finsent_classified_messages_total", news_topic="Macro", sentiment="negative") == 1
    assert value("finsent_monitor_watermark_timestamp_seconds") == T0 + 2 - 120


def test_topic_labels_are_capped() -> None:
    registry = CollectorRegistry()
    metrics = MonitorMetrics(registry, max_topics=2)
    monitor = Monitor(MonitorConfig(horizons=(300,)))
    for i in range(5):
        metrics.record(monitor.observe(f"m{i}", f"topic{i}", "neutral", 0.1, T0, "h"), "neutral")
    metrics.publish(monitor.snapshot(T0), monitor.counters, monitor.watermark)
    topics = {
        sample.labels["news_topic"]
        for family in registry.collect()
        for sample in family.samples
        if "news_topic" in sample.labels
    }
    assert topics == {"topic0", "topic1", OTHER_TOPIC}


def test_dedupe_evictions_are_counted_once() -> None:
    registry = CollectorRegistry()
    metrics = MonitorMetrics(registry)
    monitor = Monitor(MonitorConfig(horizons=(300,), dedupe_max_ids=1))
    for i in range(3):
        monitor.observe(f"m{i}", "Macro", "neutral", 0.1, T0 + 10 * i, "h")
        metrics.publish([], monitor.counters, monitor.watermark)
    metrics.publish([], monitor.counters, monitor.watermark)
    assert registry.get_sample_value("finsent_monitor_dedupe_evicted_total") == 2
