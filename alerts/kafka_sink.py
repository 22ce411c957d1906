"""Kafka delivery: the event JSON on an alerts topic, keyed by fingerprint so one alert's history stays ordered."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from alerts.delivery import DeliveryError
from alerts.engine import AlertEvent
from alerts.subscriptions import Subscription
from alerts.webhook import IDEMPOTENCY_HEADER
from ingest.producer_health import close_producer, producer_is_broken


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
        self._producers: dict[float, Any] = {}
        """One producer per subscription timeout, since its timeouts are fixed when it is created."""
        self._lock = threading.Lock()

    def _get_producer(self, timeout: float) -> Any:
        with self._lock:
            if timeout not in self._producers:
                # Created on first use so a broker that is down at start-up is a retry, not a crash. The
                # attempt's timeout overrides the client settings: kafka-python would otherwise spend 30 s
                # bootstrapping (or the stage's 5 s) and block in send() for a minute.
                timeout_ms = max(1, round(timeout * 1000))
                settings: dict[str, Any] = {
                    "acks": "all",
                    **self._config,
                    "bootstrap_timeout_ms": timeout_ms,
                    "max_block_ms": timeout_ms,
                    "request_timeout_ms": timeout_ms,
                    # A record not acknowledged in time is dropped by the producer and retried by the outbox.
                    "delivery_timeout_ms": timeout_ms,
                }
                self._producers[timeout] = KafkaProducer(bootstrap_servers=self._bootstrap, **settings)
            return self._producers[timeout]

    def send(self, subscription: Subscription, event: AlertEvent, now: float) -> None:
        """Produce one record and wait up to the subscription's timeout for the acknowledgement."""
        key, value, headers = kafka_record(event)
        deadline = time.monotonic() + subscription.timeout_s
        producer = None
        try:
            producer = self._get_producer(subscription.timeout_s)
            future = producer.send(subscription.topic, key=key, value=value, headers=headers)
            future.get(timeout=max(deadline - time.monotonic(), 0.001))
        except KafkaError as exc:
            if producer is not None and producer_is_broken(producer):
                # A restarted broker can leave the idempotent producer failing every record for good.
                self._drop_producer(subscription.timeout_s, producer)
            raise DeliveryError(f"Kafka produce to {subscription.topic!r} failed: {exc!r}") from exc

    def _drop_producer(self, timeout: float, producer: Any) -> None:
        """Close a producer kafka-python gave up on; the next attempt creates a new one."""
        with self._lock:
            if self._producers.get(timeout) is producer:
                del self._producers[timeout]
        close_producer(producer)

    def close(self) -> None:
        """Flush and close the producers."""
        with self._lock:
            for producer in self._producers.values():
                close_producer(producer)  # each send waited for its acknowledgement: nothing is queued
            self._producers.clear()
