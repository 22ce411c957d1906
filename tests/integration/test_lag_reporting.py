"""finsent_consumer_lag_messages on a real broker: a backlog shows in full, and a partition that moves
to another group member stops being exported by the member that lost it.

The stream loops run in this process with a slow stand-in classifier (not the model), so a backlog
lasts long enough to watch; the broker, the consumer group, its rebalances and offsets are real.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from kafka import KafkaProducer

from finsent.broker import EmbeddedBroker
from finsent.metrics import ClassifyMetrics
from ingest import KafkaSettings, LoopSettings, StreamLoop

pytestmark = pytest.mark.integration

TOPIC = "news.raw"
PARTITIONS = 3
PER_PARTITION = 1000
BATCH_SECONDS = 0.25  # 64 texts per 0.25 s: ~256 msg/s, so 3,000 messages take ~12 s


def slow_classifier(texts: Sequence[str]) -> list[dict[str, Any]]:
    """Neutral for every text, at a fixed cost per batch."""
    time.sleep(BATCH_SECONDS)
    scores = {"negative": 0.1, "neutral": 0.8, "positive": 0.1}
    return [
        {"topic": "Markets", "topic_score": 0.9, "sentiment": "neutral", "sentiment_scores": scores}
        for _ in texts
    ]


class Member:
    """One StreamLoop (a consumer-group member) in a thread, with its own metrics registry."""

    def __init__(self, bootstrap: str, group: str) -> None:
        kafka = KafkaSettings(
            bootstrap_servers=bootstrap,
            group_id=group,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            max_poll_interval_ms=20000,
        )
        self.metrics = ClassifyMetrics()
        self.loop = StreamLoop(LoopSettings(), kafka, slow_classifier, observer=self.metrics)
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()

    def lags(self) -> dict[int, float]:
        """Partition -> exported lag, for the partitions this member exports a series for."""
        lags = {}
        for family in self.metrics.registry.collect():
            if family.name == "finsent_consumer_lag_messages":
                for sample in family.samples:
                    if sample.labels["topic"] == TOPIC:
                        lags[int(sample.labels["partition"])] = sample.value
        return lags

    def owned(self) -> set[int]:
        """Partitions of news.raw this member owns now."""
        return {partition.partition for partition in set(self.loop._assignment)}

    def stop(self) -> None:
        """Finish, commit, leave the group."""
        self.loop.request_stop()
        self.thread.join(60)


@pytest.fixture
def members(broker: EmbeddedBroker) -> Iterator[Callable[[str], Member]]:
    """Factory: group members on the broker; every one is stopped at teardown."""
    started: list[Member] = []

    def start(group: str) -> Member:
        member = Member(broker.bootstrap, group)
        started.append(member)
        return member

    yield start
    for member in started:
        member.stop()


def fill_backlog(bootstrap: str) -> int:
    """PER_PARTITION valid messages in every partition of news.raw; the total."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for partition in range(PARTITIONS):
        for index in range(PER_PARTITION):
            value = json.dumps({"id": f"lag-{partition}-{index}", "headline": f"Headline {index}"})
            producer.send(TOPIC, value=value.encode(), partition=partition)
    producer.flush(60)
    producer.close()
    return PARTITIONS * PER_PARTITION


def test_a_fresh_group_on_a_backlog_reports_the_lag_of_every_partition(
    broker: EmbeddedBroker, members: Callable[[str], Member]
) -> None:
    """The consumer drains one partition at a time; the others' lag must show from the start."""
    backlog = fill_backlog(broker.bootstrap)
    member = members("lag-backlog")
    deadline = time.monotonic() + 30
    seen: list[dict[int, float]] = []
    while time.monotonic() < deadline:
        lags = member.lags()
        seen.append(lags)
        # Every partition reported, and together most of the backlog (~12 s to drain it all).
        if len(lags) == PARTITIONS and sum(lags.values()) >= 0.75 * backlog:
            return
        time.sleep(0.2)
    pytest.fail(f"the lag of a {backlog}-message backlog never showed in full; last reports: {seen[-5:]}")


def test_a_member_stops_exporting_the_lag_of_partitions_it_lost(
    broker: EmbeddedBroker, members: Callable[[str], Member]
) -> None:
    """After a rebalance each partition's lag comes from its owner only (no stale copy on the old one)."""
    fill_backlog(broker.bootstrap)
    first = members("lag-rebalance")
    deadline = time.monotonic() + 30
    while len(first.lags()) < PARTITIONS or len(first.owned()) < PARTITIONS:
        assert time.monotonic() < deadline, f"first member never reported every partition: {first.lags()}"
        time.sleep(0.2)

    second = members("lag-rebalance")
    deadline = time.monotonic() + 60
    while True:
        owned_first, owned_second = first.owned(), second.owned()
        settled = owned_first and owned_second and owned_first | owned_second == set(range(PARTITIONS))
        if settled and set(first.lags()) == owned_first and set(second.lags()) <= owned_second:
            break
        if time.monotonic() > deadline:
            pytest.fail(
                f"first owns {sorted(owned_first)}, exports {first.lags()}; "
                f"second owns {sorted(owned_second)}, exports {second.lags()}"
            )
        time.sleep(0.2)
    # And it stays that way while the backlog drains (no report brings a lost partition back).
    for _ in range(10):
        time.sleep(0.3)
        assert set(first.lags()) <= first.owned(), (first.lags(), first.owned())
