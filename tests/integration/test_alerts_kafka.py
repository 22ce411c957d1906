"""Kafka alert delivery against the real embedded broker: one event on `alerts`, keyed by fingerprint."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from alerts import IDEMPOTENCY_HEADER, AlertEngine, AlertEvent, Dispatcher, Rule, Subscription
from finsent.broker import EmbeddedBroker
from monitor import Headline, WindowSnapshot
from tests.integration.conftest import TopicReader

pytestmark = pytest.mark.integration


def test_alert_event_is_produced_keyed_by_fingerprint(
    broker: EmbeddedBroker, reader: Callable[[EmbeddedBroker, str], TopicReader], tmp_path: Path
) -> None:
    engine = AlertEngine([Rule(name="neg", rate_above=0.5, min_volume=1)])
    snapshot = WindowSnapshot(
        "Macro", "5m", 300, 1000.0, 10, 8, 0.8, 0.75, None, None, None, (Headline(0.9, "n-1", "Bad", 999.0),)
    )
    (event,) = engine.evaluate([snapshot], 1000.0)
    with Dispatcher(
        [Subscription("bus", "kafka", topic="alerts", timeout_s=20)],
        tmp_path / "outbox.db",
        kafka_bootstrap=broker.bootstrap,
    ) as dispatcher:
        dispatcher.record([event], engine.to_state())
        assert dispatcher.deliver_due() == 1

    records = reader(broker, "alerts").until(lambda r: len(r) >= 1, 30, "the alert event")
    (record,) = records
    assert record.key == event.fingerprint.encode()
    assert AlertEvent.from_dict(json.loads(record.value)) == event
    assert dict(record.headers)[IDEMPOTENCY_HEADER] == event.notification_key.encode()
