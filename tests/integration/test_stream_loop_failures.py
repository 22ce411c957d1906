"""The stream loop on a real broker when classification fails or the loop itself dies.

A stand-in classifier (not the model) makes the failures happen on cue; the broker, the consumer
group and the offsets are real.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from kafka import KafkaProducer

from finsent.broker import EmbeddedBroker
from ingest import LoopSettings, NullObserver, StreamLoop
from tests.integration.conftest import LoopThread, TopicReader, fast_group, neutral_results

pytestmark = pytest.mark.integration

POISON = "POISON"


def stand_in_classifier(texts: Sequence[str]) -> list[dict[str, Any]]:
    """Neutral for every text; raises on any text containing POISON, as a model failing on a text would."""
    if any(POISON in text for text in texts):
        raise RuntimeError("the model failed on this text")
    return neutral_results(texts)


@pytest.fixture
def start_loop(broker: EmbeddedBroker) -> Iterator[Callable[..., LoopThread]]:
    """Factory: a StreamLoop on the broker's news.* topics in group `group`; all stopped at teardown."""
    started: list[LoopThread] = []

    def start(group: str, observer: Any = None) -> LoopThread:
        kafka = fast_group(broker.bootstrap, group)
        running = LoopThread(StreamLoop(LoopSettings(max_wait_ms=200), kafka, stand_in_classifier, observer))
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def send(
    broker: EmbeddedBroker, messages: list[tuple[bytes | None, bytes]], timestamp_ms: int | None = None
) -> None:
    """Produce (key, value) pairs to news.raw partition 0 (timestamp: now if None); wait for the acks."""
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for key, value in messages:
        producer.send("news.raw", key=key, value=value, partition=0, timestamp_ms=timestamp_ms)
    producer.flush(30)
    producer.close()


def test_a_text_the_model_fails_on_is_dead_lettered_with_its_original_bytes_key_and_timestamp(
    broker: EmbeddedBroker, start_loop: Callable[..., LoopThread]
) -> None:
    # Odd spacing and an escape: the dead letter must hold these bytes, not a re-serialised object.
    poison = b'{ "id" : "p-1",   "headline": "POISON headline", "extra": "caf\\u00e9" }'
    fine = json.dumps({"id": "f-1", "headline": "Oil climbs"}).encode()
    send(broker, [(b"the-key", poison), (None, fine)], timestamp_ms=1_700_000_000_000)
    running = start_loop("failures-dlq")
    scored = TopicReader(broker.bootstrap, "news.scored")
    dlq = TopicReader(broker.bootstrap, "news.dlq")
    scored.until(lambda records: len(records) >= 1, timeout=60, what="the fine message scored")
    dlq.until(lambda records: len(records) >= 1, timeout=30, what="the poison message dead-lettered")
    running.stop()
    assert running.error is None

    assert [value["id"] for value in scored.values()] == ["f-1"]
    (letter,) = dlq.values()
    assert letter["reason"] == "classify_failed"
    assert "the model failed on this text" in letter["detail"]
    assert base64.b64decode(letter["original_base64"]) == poison
    assert letter["original_size"] == len(poison)
    assert letter["source_timestamp_ms"] == 1_700_000_000_000
    assert base64.b64decode(letter["source_key_base64"]) == b"the-key"
    assert (letter["source_topic"], letter["source_partition"]) == ("news.raw", 0)
    assert dlq.records[0].key == b"the-key"
    scored.close()
    dlq.close()


class FailsOnFirstBatch(NullObserver):
    """An observer that raises once: stands in for any unexpected bug between classifying and producing."""

    def __init__(self) -> None:
        self.failed = False

    def batch(self, size: int, inference_seconds: float) -> None:
        """Raise the first time a batch completes."""
        if not self.failed:
            self.failed = True
            raise RuntimeError("unexpected bug while completing a batch")


def test_a_loop_that_dies_mid_batch_commits_nothing_so_the_next_member_scores_every_message(
    broker: EmbeddedBroker, start_loop: Callable[..., LoopThread]
) -> None:
    ids = [f"c-{index}" for index in range(20)]
    send(broker, [(None, json.dumps({"id": i, "headline": f"Headline {i}"}).encode()) for i in ids])

    crashed = start_loop("failures-crash", FailsOnFirstBatch())
    crashed.thread.join(60)
    assert isinstance(crashed.error, RuntimeError), crashed.error

    start_loop("failures-crash")  # same group: starts from what the dead member committed
    scored = TopicReader(broker.bootstrap, "news.scored")
    deadline = time.monotonic() + 90
    while {value["id"] for value in scored.values()} != set(ids):
        scored.poll()
        if time.monotonic() > deadline:
            missing = set(ids) - {value["id"] for value in scored.values()}
            pytest.fail(f"never scored after the crash: {sorted(missing)}")
    scored.close()
