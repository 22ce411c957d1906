"""The monitor stage reports readiness, consumer lag and stream errors like classify does, on a real broker.

Before, only classify exported them: a monitor that fell behind or lost its group showed nothing to
FinsentConsumerLagHigh, FinsentNotReady or the dashboard's lag panel.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry

from finsent.broker import EmbeddedBroker
from finsent.monitor_stage import MonitorStage
from tests.test_stage_monitor import ListSink, scored, stage_config

pytestmark = pytest.mark.integration

RECORDS = 300


def lags(registry: CollectorRegistry, topic: str) -> dict[str, float]:
    """Partition -> exported lag of ``topic``."""
    return {
        sample.labels["partition"]: sample.value
        for family in registry.collect()
        if family.name == "finsent_consumer_lag_messages"
        for sample in family.samples
        if sample.labels["topic"] == topic
    }


def test_the_monitor_stage_reports_readiness_lag_and_errors(broker: EmbeddedBroker, tmp_path: Path) -> None:
    topics = ["Energy | Oil", "Macro", "IPO", "Earnings", "Dividend"]
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for i in range(RECORDS):  # keyed by topic label, as classify writes news.scored
        topic = topics[i % len(topics)]
        stamp = f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z"
        value = scored(id=f"s{i}", topic=topic, published_at=stamp)
        producer.send("news.scored", key=topic.encode(), value=value)
    producer.flush(30)
    producer.close()
    config = stage_config(
        tmp_path,
        bootstrap_servers=broker.bootstrap,
        group_id="health",
        session_timeout_ms="6000",
        heartbeat_interval_ms="1000",
        max_poll_interval_ms="20000",
    )
    registry = CollectorRegistry()
    stage = MonitorStage(config, registry, sink=ListSink())
    handle = stage.handle

    def slowly(record: Any) -> None:  # a backlog that lasts long enough to be seen
        time.sleep(0.01)
        handle(record)

    stage.handle = slowly  # type: ignore[method-assign]
    stage.max_poll_records = 20  # lag is reported between polls: a backlog longer than one poll
    thread = threading.Thread(target=stage.run, daemon=True)
    thread.start()
    try:
        most_behind = 0.0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            behind = lags(registry, "news.scored")
            most_behind = max(most_behind, sum(behind.values()))
            caught_up = stage.monitor.counters.applied == RECORDS and behind and not any(behind.values())
            if caught_up and registry.get_sample_value("finsent_ready", {"stage": "monitor"}) == 1.0:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"monitor never caught up: applied {stage.monitor.counters.applied}, lags {behind}")
        assert most_behind > 0  # the backlog showed while it was read
        assert set(behind) == {"0", "1", "2"}  # every partition of news.scored (all owned)
        # kafka-python's poll() does not raise without a broker: readiness must notice by itself.
        broker.stop()
        deadline = time.monotonic() + 30
        while registry.get_sample_value("finsent_ready", {"stage": "monitor"}) != 0.0:
            assert time.monotonic() < deadline, "still ready 30 s after the broker stopped"
            time.sleep(0.2)
        broker_errors = {"stage": "monitor", "kind": "broker"}
        assert (registry.get_sample_value("finsent_stream_errors_total", broker_errors) or 0) >= 1
        stage.on_error("commit")
        assert (
            registry.get_sample_value("finsent_stream_errors_total", {"stage": "monitor", "kind": "commit"})
            == 1
        )
        assert registry.get_sample_value("finsent_monitor_errors_total", {"kind": "commit"}) == 1
    finally:
        stage.request_stop()
        thread.join(30)
    assert not thread.is_alive()
    assert registry.get_sample_value("finsent_ready", {"stage": "monitor"}) == 0.0
