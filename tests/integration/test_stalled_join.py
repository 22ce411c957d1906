"""A group leader that rejoins because its topic's partitions changed must get its assignment back.

kafka-python 3.0.12 can finish such a rejoin without applying it (ingest/stalled_join.py): the member
then holds no partitions and reads nothing, for good. It happens when a poll times out between the
leader computing the assignment and the SyncGroup answer; the tests widen that window to half a
second, so every rejoin hits it, and recreate the topic on a real broker to trigger the rejoin.
This is what made the broker-restart test in test_stream_producer.py fail now and then.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import kafka
import pytest
from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from finsent.broker import EmbeddedBroker
from finsent.consumer_stage import ConsumerStage
from ingest import LoopSettings, StreamLoop, consumer_config
from ingest.stalled_join import rejoin_if_stalled
from tests.integration.conftest import (
    LoopThread,
    TopicReader,
    fast_group,
    neutral_results,
    scored_ids,
    wait_for,
)

pytestmark = pytest.mark.integration

# Long enough for any poll of the loop or the stages (5-500 ms) to time out inside the window.
WINDOW_S = 0.6
# Without the fix nothing is assigned again; with it the rejoin takes a few seconds on tansu.
STALL_S = 12


def widen_the_race(consumer: Any) -> None:
    """Make the leader pause after computing an assignment, before it sends SyncGroup."""
    coordinator = consumer._coordinator
    compute = coordinator._perform_assignment

    def compute_then_pause(*args: Any, **kwargs: Any) -> Any:
        assignment = compute(*args, **kwargs)
        time.sleep(WINDOW_S)
        return assignment

    coordinator._perform_assignment = compute_then_pause


def recreate(consumer: Any, topic: str, partitions: int) -> None:
    """Delete a topic and create it with another partition count; the group's leader must rejoin.

    The consumer is asked to refresh its metadata at once, as it would after metadata_max_age_ms.
    """
    bootstrap = consumer.config["bootstrap_servers"]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics([topic])
        with contextlib.suppress(TopicAlreadyExistsError):  # a client's metadata request was first
            admin.create_topics([NewTopic(topic, partitions, 1)])
        (described,) = admin.describe_topics([topic])
        assert len(described["partitions"]) == partitions, f"{topic} came back as {described}"
    finally:
        admin.close()
    consumer._cluster.request_update()


class Assignments(ConsumerRebalanceListener):  # type: ignore[misc]
    """Records the partitions the group last handed this member (None while revoked)."""

    def __init__(self) -> None:
        self.current: set[int] | None = None

    def on_partitions_revoked(self, revoked: Any) -> None:
        """Revoked: nothing owned until the next assignment."""
        self.current = None

    def on_partitions_assigned(self, assigned: Any) -> None:
        """The group's answer."""
        self.current = {tp.partition for tp in assigned}


def poll_until(consumer: Any, done: Callable[[], bool], seconds: float, unstick: bool) -> bool:
    """Poll with a short timeout, as the loop does, until done() or seconds pass; whether done."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        consumer.poll(timeout_ms=100)
        if unstick:
            rejoin_if_stalled(consumer)
        if done():
            return True
    return False


def test_a_stalled_leader_rejoin_is_restarted_and_gets_partitions_again(broker: EmbeddedBroker) -> None:
    """First the stall, on the installed kafka-python as it is; then rejoin_if_stalled ends it."""
    settings = fast_group(broker.bootstrap, "stalled-plain")
    consumer = KafkaConsumer(**consumer_config(settings, 100))
    assignments = Assignments()
    consumer.subscribe(["news.dlq"], listener=assignments)
    try:
        assert poll_until(consumer, lambda: assignments.current == {0}, 30, unstick=False)
        widen_the_race(consumer)
        recreate(consumer, "news.dlq", 2)
        assert poll_until(consumer, lambda: assignments.current is None, 10, unstick=False), "no rejoin"

        if poll_until(consumer, lambda: assignments.current is not None, STALL_S, unstick=False):
            pytest.skip(
                f"kafka-python {kafka.__version__} no longer stalls here: ingest/stalled_join.py can go"
            )
        assert poll_until(consumer, lambda: assignments.current is not None, 20, unstick=True)
    finally:
        consumer.close(autocommit=False, timeout_ms=2000)


def test_the_stream_loop_keeps_scoring_after_its_input_topic_changes(broker: EmbeddedBroker) -> None:
    running = LoopThread(
        StreamLoop(
            LoopSettings(max_wait_ms=50), fast_group(broker.bootstrap, "stalled-loop"), neutral_results
        )
    )
    try:
        wait_for(lambda: running.loop.ready, 60, lambda: "the loop to join its group")
        widen_the_race(running.loop._consumer)
        recreate(running.loop._consumer, "news.raw", 4)

        ids = [f"after-{index}" for index in range(10)]
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        for message_id in ids:
            body = json.dumps({"id": message_id, "headline": "Oil climbs"}).encode()
            producer.send("news.raw", body, partition=0)
        producer.flush(30)
        producer.close()

        scored = TopicReader(broker.bootstrap, "news.scored")
        scored.until(lambda records: set(ids) <= set(scored_ids(records)), 45, "every message scored")
        scored.close()
    finally:
        running.stop()
    assert running.error is None


class Collector(ConsumerStage):
    """The smallest ConsumerStage: keeps the values it reads, commits after each poll."""

    name = "collector"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.values: list[bytes] = []

    def handle(self, record: Any) -> None:
        """Keep the value."""
        self.values.append(record.value)

    def tick(self) -> None:
        """Everything handled is 'durable' at once."""
        self.commit_handled(self.handled_positions())

    def finish(self) -> None:
        """Commit what was handled."""
        self.tick()

    def on_error(self, kind: str) -> None:
        """Nothing to count."""


def test_a_consumer_stage_keeps_reading_after_its_topic_changes(broker: EmbeddedBroker) -> None:
    stage = Collector(fast_group(broker.bootstrap, "stalled-stage"), "news.windows")
    thread = threading.Thread(target=stage.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: stage.ready, 60, lambda: "the stage to join its group")
        widen_the_race(stage._consumer)
        recreate(stage._consumer, "news.windows", 4)

        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        for index in range(5):
            producer.send("news.windows", f"after-{index}".encode(), partition=0)
        producer.flush(30)
        producer.close()
        wait_for(lambda: len(stage.values) >= 5, 45, lambda: f"5 records read, got {stage.values}")
    finally:
        stage.request_stop()
        thread.join(30)
    assert not stage.failed
