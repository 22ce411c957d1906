"""Window snapshot records for news.windows and the sink that produces them (the monitor stage's output)."""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Protocol

from kafka import KafkaProducer
from kafka.errors import KafkaError

from ingest import KafkaSettings, producer_config
from ingest.producer_health import close_producer, producer_is_broken
from monitor import WindowSnapshot

log = logging.getLogger("finsent.stages")


def windows_records(snapshots: list[WindowSnapshot], now: float) -> list[tuple[str, dict[str, Any]]]:
    """One (key, value) per topic for news.windows: {"topic", "now", "windows": [snapshot dicts]}."""
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for snap in snapshots:
        by_topic.setdefault(snap.topic, []).append(_finite(snap.to_dict()))
    return [(topic, {"topic": topic, "now": now, "windows": windows}) for topic, windows in by_topic.items()]


def _finite(data: dict[str, Any]) -> dict[str, Any]:
    # JSON has no NaN/infinity; a non-finite statistic is reported as absent.
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}


class WindowsSink(Protocol):
    """Where window snapshot records go (news.windows in production)."""

    def send(self, key: str, value: dict[str, Any]) -> None:
        """Queue one record."""

    def flush(self) -> None:
        """Wait until every queued record is acknowledged; raise on failure."""

    def close(self) -> None:
        """Release the connection."""


class KafkaWindowsSink:
    """Produces window records (JSON, keyed by topic label); the producer is created on first use.

    A producer kafka-python has put in a fatal state (a restarted broker can answer the idempotent
    producer's InitProducerId with an error it never recovers from) is replaced by a new one.
    """

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self._producer: Any = None
        self._pending: list[Any] = []  # futures of the records queued since the last flush

    def send(self, key: str, value: dict[str, Any]) -> None:
        """Queue one record."""
        if self._producer is not None and producer_is_broken(self._producer):
            log.warning("replacing the window records' producer: it is in a fatal state")
            self._drop_producer()
        if self._producer is None:
            self._producer = KafkaProducer(**producer_config(self.kafka))
        payload = json.dumps(value, allow_nan=False).encode("utf-8")
        self._pending.append(self._producer.send(self.topic, key=key.encode("utf-8"), value=payload))

    def flush(self) -> None:
        """Wait for the acknowledgements; KafkaError if any record was not acknowledged."""
        pending, self._pending = self._pending, []
        if self._producer is None:
            return
        # kafka-python's flush() returns normally when batches failed; only the futures tell.
        self._producer.flush(timeout=30)
        failed = [future for future in pending if future.failed()]
        if failed:
            raise KafkaError(
                f"{len(failed)} of {len(pending)} window records were not acknowledged: {failed[0].exception!r}"
            )

    def close(self) -> None:
        """Close the producer at once (the monitor flushes what matters first)."""
        if self._producer is not None:
            self._drop_producer()

    def _drop_producer(self) -> None:
        close_producer(self._producer)
        self._producer = None
        self._pending = []
