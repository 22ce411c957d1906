"""The monitor's window records and the Kafka alert subscription keep producing after a broker restart.

A restarted broker (tansu, memory storage) answers an idempotent producer's InitProducerId with an
error kafka-python never recovers from: every later record fails. Both producers used to keep that
producer for good (the monitor even counted its failed records as produced); they now replace it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
from kafka.errors import KafkaError

from alerts import DeliveryError, KafkaSender, Subscription
from finsent.broker import EmbeddedBroker
from finsent.windows_sink import KafkaWindowsSink
from ingest import KafkaSettings
from tests.integration.conftest import TopicReader
from tests.test_alerts_delivery import fire

pytestmark = pytest.mark.integration


def retry_until_delivered(attempt: Callable[[], None], seconds: float) -> list[str]:
    """Call attempt() until it returns without error or seconds pass; the errors it raised before."""
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    while True:
        try:
            attempt()
            return errors
        except (KafkaError, DeliveryError) as error:
            errors.append(repr(error))
            if time.monotonic() > deadline:
                pytest.fail(f"still failing after {seconds:.0f}s: {errors[-3:]}")
            time.sleep(0.5)


def restart(broker: EmbeddedBroker) -> None:
    broker.stop()
    broker.start()


@pytest.fixture
def sink(broker: EmbeddedBroker) -> Iterator[KafkaWindowsSink]:
    """The monitor's window-record sink, with one record produced and acknowledged; closed afterwards."""
    windows = KafkaWindowsSink(KafkaSettings(broker.bootstrap), "news.windows")
    try:
        send_window(windows, 1.0)
        yield windows
    finally:
        windows.close()


def send_window(sink: KafkaWindowsSink, now: float) -> None:
    """Produce one (empty) window record and wait for its acknowledgement."""
    sink.send("Macro", {"topic": "Macro", "now": now, "windows": []})
    sink.flush()


def test_window_records_flow_again_after_a_broker_restart(
    broker: EmbeddedBroker, sink: KafkaWindowsSink
) -> None:
    restart(broker)
    retry_until_delivered(lambda: send_window(sink, 2.0), 45)
    # Acknowledged means on the topic: a flush that swallowed failed records would pass above.
    values = TopicReader(broker.bootstrap, "news.windows")
    values.until(lambda records: any(json.loads(r.value)["now"] == 2.0 for r in records), 15, "the record")
    values.close()


def test_a_failed_window_record_is_reported_by_flush(broker: EmbeddedBroker, sink: KafkaWindowsSink) -> None:
    broker.stop()
    with pytest.raises(KafkaError):
        send_window(sink, 2.0)


def test_the_kafka_alert_subscription_delivers_again_after_a_broker_restart(broker: EmbeddedBroker) -> None:
    sender = KafkaSender(broker.bootstrap)
    subscription = Subscription("bus", "kafka", topic="alerts", timeout_s=5.0)
    _, event = fire()
    try:
        sender.send(subscription, event, time.time())
        restart(broker)
        retry_until_delivered(lambda: sender.send(subscription, event, time.time()), 45)
    finally:
        sender.close()
