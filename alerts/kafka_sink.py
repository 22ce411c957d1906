"""Kafka delivery: the event JSON on an alerts topic, keyed by fingerprint so one alert's history stays ordered."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from alerts.delivery import DeliveryError
from alerts.engine import AlertEvent
from alerts.subscriptions import Subscription
from alerts.webhook import IDEMPOTENCY_HEADER


def kafka_record(event: AlertEvent) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """Key, value and headers of the record for ``event``."""
    value = json.dumps(event.to_dict(), separators=(",", ":")).encode("utf-8")
    headers = [(IDEMPOTENCY_HEADER, event.notification_key.encode("utf-8"))]
    return event.fingerprint.encode("ascii"), value, headers


class KafkaSender:
    """Produces with ``acks=all`` and waits for the broker's acknowledgement before counting it delivered."""

    def __init__(self, bootstrap: str, config: Mapping[str, Any] | None = None) -> None:
        self._bootstrap = bootstrap
        self._config = dict(config or {})
        self._producer: Any = None
        self._lock = threading.Lock()

    def _get_producer(self, timeout: float) -> Any:
        with self._lock:
            if self._producer is None:
                # Created on first use so a broker that is down at start-up is a retry, not a crash.
                settings: dict[str, Any] = {
                    "acks": "all",
                    "max_block_ms": int(timeout * 1000),
                    **self._config,
                }
                self._producer = KafkaProducer(bootstrap_servers=self._bootstrap, **settings)
            return self._producer

    def send(self, subscription: Subscription, event: AlertEvent, now: float) -> None:
        """Produce one record and wait up to the subscription's timeout for the acknowledgement."""
        key, value, headers = kafka_record(event)
        try:
            producer = self._get_producer(subscription.timeout_s)
            future = producer.send(subscription.topic, key=key, value=value, headers=headers)
            future.get(timeout=subscription.timeout_s)
        except KafkaError as exc:
            raise DeliveryError(f"Kafka produce to {subscription.topic!r} failed: {exc!r}") from exc

    def close(self) -> None:
        """Flush and close the producer."""
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None
