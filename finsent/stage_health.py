"""Health metrics every stage reports alike: readiness, consumer lag and recoverable stream errors."""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from ingest.observer import STREAM_ERROR_KINDS


class StageHealth:
    """``finsent_ready{stage}``, ``finsent_consumer_lag_messages{topic,partition}`` and
    ``finsent_stream_errors_total{stage,kind}``: one set per registry, shared by the stages in it
    (``--stage all`` runs three in one process and one registry)."""

    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, StageHealth]] = (
        weakref.WeakKeyDictionary()
    )
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, registry: CollectorRegistry) -> None:
        self.ready = Gauge(
            "finsent_ready",
            "1 while the stage is in its consumer group and its last broker round trip worked "
            "(classify: within the last 15 seconds).",
            ["stage"],
            registry=registry,
        )
        self.lag_messages = Gauge(
            "finsent_consumer_lag_messages",
            "Log end (high watermark) minus the reading stage's position: classify's committed offset, "
            "the monitor's and alerts' next record to handle.",
            ["topic", "partition"],
            registry=registry,
        )
        self.stream_errors = Counter(
            "finsent_stream_errors",
            "Recoverable stream failures, by stage and kind.",
            ["stage", "kind"],
            registry=registry,
        )

    @classmethod
    def of(cls, registry: CollectorRegistry, stage: str) -> StageHealth:
        """The registry's set (created on first use), with ``stage``'s series declared at 0."""
        with cls._lock:
            health = cls._by_registry.get(registry)
            if health is None:
                health = cls._by_registry[registry] = cls(registry)
        health.ready.labels(stage=stage)
        # Bounded label sets exist at 0 from the start, so rate()/increase() see their first event.
        for kind in STREAM_ERROR_KINDS:
            health.stream_errors.labels(stage=stage, kind=kind)
        return health

    def forget_lag(self, topic: str, partition: int) -> None:
        """Remove one partition's lag series (it moved to another member, which reports it now)."""
        with contextlib.suppress(KeyError):  # never reported, or removed already
            self.lag_messages.remove(topic, str(partition))
