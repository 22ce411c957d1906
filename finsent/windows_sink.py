"""Window snapshot records for news.windows and the sink that produces them (the monitor stage's output)."""

from __future__ import annotations

import json
import math
from typing import Any, Protocol

from kafka import KafkaProducer

from ingest import KafkaSettings, producer_config
from monitor import WindowSnapshot


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
    """Produces window records (JSON, keyed by topic label); the producer is created on first use."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self._producer: Any = None

    def send(self, key: str, value: dict[str, Any]) -> None:
        """Queue one record."""
        if self._producer is None:
            self._producer = KafkaProducer(**producer_config(self.kafka))
        payload = json.dumps(value, allow_nan=False).encode("utf-8")
        self._producer.send(self.topic, key=key.encode("utf-8"), value=payload)

    def flush(self) -> None:
        """Wait for the acknowledgements."""
        if self._producer is not None:
            self._producer.flush(timeout=30)

    def close(self) -> None:
        """Close the producer."""
        if self._producer is not None:
            self._producer.close(timeout=10)
            self._producer = None
