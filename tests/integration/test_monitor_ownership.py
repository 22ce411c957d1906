"""Two monitor instances in one group: each publishes only the topics whose news.scored partition it owns."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaProducer

from finsent.broker import EmbeddedBroker, create_topics
from model import TOPIC_LABELS
from tests.integration.conftest import ServiceProcess, wait_for
from tests.integration.test_scale_out import samples, wait_ready

pytestmark = pytest.mark.integration

SCORED, WINDOWS = "scored.own", "windows.own"
WITH_NEWS = ("Energy | Oil", "Macro", "Earnings", "Dividend", "Currencies", "IPO")


def produce_scored(bootstrap: str, count: int) -> None:
    """Scored records stamped now, keyed by topic label as the classifier keys them."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    for index in range(count):
        topic = WITH_NEWS[index % len(WITH_NEWS)]
        record = {
            "id": f"own-{index}",
            "headline": f"headline {index}",
            "topic": topic,
            "sentiment": "negative" if index % 2 else "neutral",
            "sentiment_scores": {"negative": 0.6, "neutral": 0.3, "positive": 0.1},
            "published_at": stamp,
        }
        producer.send(SCORED, key=topic.encode(), value=json.dumps(record).encode())
    producer.flush(30)
    producer.close()


def published(base: str) -> set[str]:
    """Topic labels with window gauges on one instance's /metrics."""
    return {dict(labels)["news_topic"] for labels in samples(base, "finsent_window_messages")}


def test_two_monitor_instances_split_the_topics_and_the_survivor_takes_all(
    broker: EmbeddedBroker, start_service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    create_topics(broker.bootstrap, {SCORED: 3, WINDOWS: 3})
    flags = [
        "--stage",
        "monitor",
        "--output-topic",
        SCORED,
        "--windows-topic",
        WINDOWS,
        "--eval-interval",
        "1s",
    ]
    first, second = (
        start_service(broker, *flags, group="own", state_dir=tmp_path / name) for name in ("a", "b")
    )
    bases = wait_ready([first, second])
    produce_scored(broker.bootstrap, 120)
    everything = set(TOPIC_LABELS)

    def split() -> bool:
        a, b = published(bases[0]), published(bases[1])
        return bool(a) and bool(b) and a.isdisjoint(b) and a | b == everything

    wait_for(split, 90, lambda: f"a disjoint split of the topics, got {[published(b) for b in bases]}", 0.5)
    # Each topic's news is counted by the instance that publishes it.
    for base in bases:
        counted = {  # every topic's series exists at 0; those with news were counted here
            dict(labels)["news_topic"]
            for labels, value in samples(base, "finsent_classified_messages_total").items()
            if value > 0
        }
        assert counted <= published(base), (counted, published(base))

    second.signal(signal.SIGTERM)  # leaves the group: its partitions (and topics) move to the first
    assert second.wait(60) == 0
    wait_for(
        lambda: published(bases[0]) == everything,
        60,
        lambda: f"the survivor to publish every topic, got {published(bases[0])}",
        interval=0.5,
    )
