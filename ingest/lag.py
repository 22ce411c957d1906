"""Consumer lag as Kafka counts it: log end (high watermark) minus the committed offset."""

from __future__ import annotations

import logging
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError

from ingest.offsets import OffsetTracker, Partition

# The loop's logger: these lines were the loop's before it was split into modules.
log = logging.getLogger("ingest.loop")

# How long a lag report may wait for the end offsets of partitions not fetched yet (no high watermark).
END_OFFSETS_TIMEOUT_MS = 500


def measure_lag(consumer: Any, tracker: OffsetTracker, partitions: list[Partition]) -> dict[Partition, int]:
    """The lag of each partition whose position and log end are known; the others are left out."""
    positions: dict[Partition, int] = {}
    highs: dict[Partition, int] = {}
    for partition in partitions:
        tp = TopicPartition(*partition)
        try:
            # Committed, not read: a stage that re-reads the same records (a rewind loop) shows lag.
            position = tracker.replay_position(partition)
            if position is None:
                # Owned but nothing polled from it yet (a backlog drains one partition at a time):
                # the consumer's position, i.e. the committed offset. timeout_ms=0 never waits for
                # the coordinator; it answers None until the position is known.
                position = consumer.position(tp, timeout_ms=0)
            high = consumer.highwater(tp)
        except KafkaError as error:  # e.g. revoked meanwhile on the IO thread (IllegalStateError)
            log.debug("no lag for %s: %s", partition, error)
            continue
        if position is None:
            continue
        positions[partition] = position
        if high is not None:
            highs[partition] = high
    unfetched = [partition for partition in positions if partition not in highs]
    if unfetched:
        highs.update(_end_offsets(consumer, unfetched))
    return {
        partition: max(0, highs[partition] - position)
        for partition, position in positions.items()
        if partition in highs
    }


def _end_offsets(consumer: Any, partitions: list[Partition]) -> dict[Partition, int]:
    """End offsets of partitions without a fetch response yet; empty if the broker is slow to answer."""
    try:
        ends = consumer.end_offsets(
            [TopicPartition(*partition) for partition in partitions], timeout_ms=END_OFFSETS_TIMEOUT_MS
        )
    except KafkaError as error:
        log.debug("no end offsets for %s: %s", partitions, error)
        return {}
    return {Partition(tp.topic, tp.partition): int(offset) for tp, offset in ends.items()}
