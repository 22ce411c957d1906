"""Feedback from Kafka: drain `news.labels` into the feedback store, committing only what is persisted."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from ingest import KafkaSettings, consumer_config
from ingest.stalled_join import rejoin_if_stalled
from model.feedback import FeedbackStore, ValidationReport, validate_messages

log = logging.getLogger("finsent.labels_topic")


def labels_group(group_id: str) -> str:
    """The consumer group that reads analyst labels: <group>-labels."""
    return f"{group_id}-labels"


def drain_labels(
    kafka: KafkaSettings,
    topic: str,
    store: FeedbackStore,
    *,
    max_seconds: float = 60.0,
    idle_seconds: float = 5.0,
) -> ValidationReport:
    """Read the labels topic up to its current end, validate, persist, then commit each poll's offsets.

    Bad messages are counted in the report and committed past (they would fail again); a crash
    between persisting and committing only re-adds the same ids, which the store de-duplicates.
    """
    settings = replace(kafka, group_id=labels_group(kafka.group_id), auto_offset_reset="earliest")
    consumer: Any = KafkaConsumer(**consumer_config(settings, 500))
    report = ValidationReport()
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + max_seconds
        last_data: float | None = None  # the idle clock starts once partitions are assigned
        while time.monotonic() < deadline:
            polled = consumer.poll(timeout_ms=500)
            if rejoin_if_stalled(consumer):
                log.warning(
                    "labels topic %s: the group join finished without an assignment; joining again", topic
                )
            records = [record for batch in polled.values() for record in batch]
            if last_data is None and consumer.assignment():
                last_data = time.monotonic()
            if records:
                last_data = time.monotonic()
                rows, batch_report = validate_messages(
                    (f"{r.topic}[{r.partition}]@{r.offset}", r.value) for r in records
                )
                store.add(rows)
                report.merge(batch_report)
                consumer.commit()
            elif last_data is not None and (_at_end(consumer) or time.monotonic() - last_data > idle_seconds):
                break
    finally:
        consumer.close(autocommit=False)
    log.info(
        "labels topic %s: %d valid, %d bad %s",
        topic,
        report.valid,
        sum(report.bad.values()),
        dict(report.bad),
    )
    return report


def _at_end(consumer: Any) -> bool:
    """True once partitions are assigned and every position has reached the end offset."""
    assigned: set[TopicPartition] = consumer.assignment()
    if not assigned:
        return False
    ends = consumer.end_offsets(list(assigned))
    return all(consumer.position(tp) >= ends[tp] for tp in assigned)
