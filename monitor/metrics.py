"""Prometheus export of monitor snapshots and counters, into a registry the caller owns."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

from monitor.config import OTHER_TOPIC
from monitor.core import SENTIMENTS, MonitorCounters, Observation, Outcome
from monitor.snapshot import WindowSnapshot


def _value(value: float | None) -> float:
    # An empty window has no rate; NaN shows as a gap in Grafana and never satisfies a PromQL comparison.
    return math.nan if value is None else value


def _remove(gauge: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # older prometheus_client versions raise for an absent series
        gauge.remove(*labels)


class MonitorMetrics:
    """Gauges per topic and window, counters per outcome and per topic and sentiment.

    Topic labels are capped at ``max_topics`` distinct values (then ``other``) as a second guard on
    cardinality behind the monitor's own topic bounding.
    """

    def __init__(self, registry: CollectorRegistry, max_topics: int = 64) -> None:
        self.max_topics = max_topics
        self._topics: set[str] = set()
        self._windows: set[str] = set()
        self._evicted_seen = 0
        window = ["news_topic", "window"]
        self.negative_rate = Gauge(
            "finsent_negative_rate",
            "Fraction of messages labelled negative in the window",
            window,
            registry=registry,
        )
        self.expected_negative_rate = Gauge(
            "finsent_expected_negative_rate",
            "Mean calibrated p_negative of messages in the window",
            window,
            registry=registry,
        )
        self.window_messages = Gauge(
            "finsent_window_messages", "Messages in the window (volume)", window, registry=registry
        )
        self.window_negative_messages = Gauge(
            "finsent_window_negative_messages",
            "Messages labelled negative in the window",
            window,
            registry=registry,
        )
        self.surge = Gauge(
            "finsent_negative_rate_surge",
            "One-sided binomial z of the window's negative rate against the topic baseline",
            window,
            registry=registry,
        )
        self.baseline = Gauge(
            "finsent_negative_rate_baseline",
            "Exponentially weighted baseline of the topic's negative rate",
            ["news_topic"],
            registry=registry,
        )
        self.baseline_std = Gauge(
            "finsent_negative_rate_baseline_stddev",
            "Exponentially weighted standard deviation of the topic's negative rate",
            ["news_topic"],
            registry=registry,
        )
        self.watermark = Gauge(
            "finsent_monitor_watermark_timestamp_seconds",
            "Latest event time less allowed_lateness: buckets before it are final (lateness is judged per topic)",
            registry=registry,
        )
        self.messages = Counter(
            "finsent_monitor_messages",
            "Scored messages seen by the monitor, by outcome (applied, duplicate, late)",
            ["outcome"],
            registry=registry,
        )
        self.classified = Counter(
            "finsent_classified_messages",
            "Messages counted by the monitor (each id once), by topic and sentiment",
            ["news_topic", "sentiment"],
            registry=registry,
        )
        self.clamped = Counter(
            "finsent_monitor_future_timestamps",
            "Messages stamped more than max_future_skew ahead of processing time, counted at the latest event time",
            registry=registry,
        )
        self.dedupe_evicted = Counter(
            "finsent_monitor_dedupe_evicted",
            "Message ids forgotten early because the dedupe memory reached its cap",
            registry=registry,
        )
        for outcome in Outcome:
            self.messages.labels(outcome=outcome.value)

    def declare_topics(self, topics: Iterable[str]) -> None:
        """Create each topic x sentiment counted series at 0, so rate() sees each one's first message."""
        for topic in topics:
            for sentiment in SENTIMENTS:
                self.classified.labels(news_topic=self._topic(topic), sentiment=sentiment)

    def _topic(self, topic: str) -> str:
        if topic in self._topics:
            return topic
        if len(self._topics) >= self.max_topics:
            return OTHER_TOPIC
        self._topics.add(topic)
        return topic

    def record(self, observation: Observation, sentiment: str) -> None:
        """Count one observation returned by ``Monitor.observe``."""
        self.messages.labels(outcome=observation.outcome.value).inc()
        if observation.clamped:
            self.clamped.inc()
        label = sentiment.strip().lower()
        if observation.outcome is Outcome.APPLIED and label in SENTIMENTS:
            self.classified.labels(news_topic=self._topic(observation.topic), sentiment=label).inc()

    def publish(
        self, snapshots: Iterable[WindowSnapshot], counters: MonitorCounters, watermark: float | None
    ) -> None:
        """Set the gauges from ``Monitor.snapshot`` output and catch up counters kept by the monitor."""
        for snap in snapshots:
            topic = self._topic(snap.topic)
            self._windows.add(snap.window)
            self.negative_rate.labels(topic, snap.window).set(_value(snap.rate))
            self.expected_negative_rate.labels(topic, snap.window).set(_value(snap.expected_rate))
            self.window_messages.labels(topic, snap.window).set(snap.volume)
            self.window_negative_messages.labels(topic, snap.window).set(snap.negative)
            self.surge.labels(topic, snap.window).set(_value(snap.surge))
            self.baseline.labels(topic).set(_value(snap.baseline_mean))
            self.baseline_std.labels(topic).set(_value(snap.baseline_std))
        if watermark is not None:
            self.watermark.set(watermark)
        if counters.dedupe_evicted > self._evicted_seen:
            self.dedupe_evicted.inc(counters.dedupe_evicted - self._evicted_seen)
        self._evicted_seen = counters.dedupe_evicted

    def forget(self, topics: Iterable[str]) -> None:
        """Remove the gauge series of topics no longer published here (another instance owns them now)."""
        window_gauges = (
            self.negative_rate,
            self.expected_negative_rate,
            self.window_messages,
            self.window_negative_messages,
            self.surge,
        )
        for topic in topics:
            if topic not in self._topics:  # published under "other" (the cap): that series is shared
                continue
            for window in self._windows:
                for gauge in window_gauges:
                    _remove(gauge, topic, window)
            _remove(self.baseline, topic)
            _remove(self.baseline_std, topic)
