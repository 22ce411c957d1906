"""A rebalance must not lose the records the stream loop had buffered but not yet scored.

kafka-python keeps the fetch position of a partition that a rebalance leaves with the same member.
The loop drops its buffered records of every revoked partition, so without seeking back, the
records it had read but not scored were skipped for good and a later commit moved past them.
"""

from __future__ import annotations

import json
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer

from finsent.broker import EmbeddedBroker
from ingest import LoopSettings, StreamLoop
from tests.integration.conftest import (
    LoopThread,
    TopicReader,
    fast_group,
    neutral_results,
    scored_ids,
    wait_for,
)

pytestmark = pytest.mark.integration

GROUP = "rebalance"
MESSAGES = 30  # ten per partition of news.raw


def test_buffered_records_of_a_partition_kept_through_a_rebalance_are_scored(broker: EmbeddedBroker) -> None:
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    ids = [f"b-{index}" for index in range(MESSAGES)]
    for index, message_id in enumerate(ids):
        body = {"id": message_id, "headline": f"Company{index} shares fall after weak guidance"}
        producer.send("news.raw", json.dumps(body).encode(), partition=index % 3)
    producer.flush(30)
    producer.close()

    # A long batch wait: every record sits in the loop's buffer when the rebalances come.
    settings = LoopSettings(max_batch=1000, max_wait_ms=15_000)
    running = LoopThread(StreamLoop(settings, fast_group(broker.bootstrap, GROUP), neutral_results))
    try:
        wait_for(
            lambda: running.loop.stats["consumed"] == MESSAGES, 60, lambda: "all records read into the buffer"
        )
        assert running.loop.stats["scored"] == 0

        # A second member joins (the loop keeps one or two of the three partitions), then leaves.
        other = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False, **other_group())
        other.subscribe(["news.raw"])
        deadline = time.monotonic() + 60
        while not other.assignment():
            other.poll(timeout_ms=200)
            assert time.monotonic() < deadline, "the second member never got a partition"
        taken = {tp.partition for tp in other.assignment()}
        assert 0 < len(taken) < 3
        other.close(autocommit=False)

        scored = TopicReader(broker.bootstrap, "news.scored")
        scored.until(lambda records: set(scored_ids(records)) >= set(ids), 90, "every id scored")
        scored.close()
    finally:
        running.stop()
    assert running.error is None


def other_group() -> dict[str, object]:
    """The second member's group settings: same group, the same short timings as the loop's."""
    kafka = fast_group("unused", GROUP)
    return {
        "group_id": kafka.group_id,
        "session_timeout_ms": kafka.session_timeout_ms,
        "heartbeat_interval_ms": kafka.heartbeat_interval_ms,
        "max_poll_interval_ms": kafka.max_poll_interval_ms,
    }
