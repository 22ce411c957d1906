"""Whether the broker answers: the round trips readiness needs, and the probe an idle loop sends."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError

from ingest.offsets import Partition

# The loop's logger: these lines were the loop's before it was split into modules.
log = logging.getLogger("ingest.loop")

# Readiness needs a broker round trip (an acknowledged record, a commit, a group join or a probe)
# that worked, within READY_WINDOW_S. An idle loop probes (an end-offsets request) every PROBE_INTERVAL_S.
PROBE_INTERVAL_S = 5.0
PROBE_TIMEOUT_MS = 1000
READY_WINDOW_S = 15.0


class BrokerHealth:
    """When a broker round trip last worked, whether the last one failed, and when to probe again."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._answering = False
        self._last_answer = float("-inf")
        self._last_probe = float("-inf")

    @property
    def ok(self) -> bool:
        """The last broker round trip worked, and it is recent."""
        return self._answering and self._clock() - self._last_answer < READY_WINDOW_S

    def answered(self) -> None:
        """A broker round trip worked."""
        self._last_answer = self._clock()
        self._answering = True

    def unanswered(self) -> None:
        """A broker round trip failed: not ok until one works again."""
        self._answering = False

    def probe_due(self, now: float) -> bool:
        """Nothing talked to the broker for PROBE_INTERVAL_S, not even a probe."""
        return now - max(self._last_answer, self._last_probe) >= PROBE_INTERVAL_S

    def probe(self, consumer: Any, partitions: list[Partition]) -> bool:
        """Ask the broker for the partitions' end offsets; whether it answered."""
        self._last_probe = self._clock()
        try:
            consumer.end_offsets([TopicPartition(*tp) for tp in partitions], timeout_ms=PROBE_TIMEOUT_MS)
        except KafkaError as error:
            if self._answering:
                log.warning("the broker did not answer (%s); not ready", error)
            return False
        return True
