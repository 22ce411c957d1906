"""The stream loop's producer on a real broker: records too large for it, and a broker restart.

A stand-in classifier (not the model) scores every text; the broker, the producer's size checks, the
idempotent producer's state and the consumer group are real.
"""

from __future__ import annotations

import base64
import gc
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka import KafkaProducer

from finsent.broker import EmbeddedBroker
from ingest import KafkaSettings, LoopSettings, StreamLoop, producer_config
from tests.integration.conftest import LoopThread, TopicReader, fast_group, neutral_results

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


@pytest.fixture
def start_loop(broker: EmbeddedBroker) -> Iterator[Callable[..., LoopThread]]:
    """Factory: a StreamLoop on the broker's news.* topics; all stopped at teardown."""
    started: list[LoopThread] = []

    def start(group: str, settings: LoopSettings) -> LoopThread:
        kafka = fast_group(broker.bootstrap, group)
        running = LoopThread(StreamLoop(settings, kafka, neutral_results))
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def send(bootstrap: str, messages: list[tuple[bytes | None, bytes]], partition: int = 0) -> None:
    """Produce (key, value) pairs to one news.raw partition, records up to 4 MiB; wait for the acks."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * MiB)
    for key, value in messages:
        producer.send("news.raw", key=key, value=value, partition=partition)
    producer.flush(30)
    producer.close()


def valid(message_id: str, headline: str = "Oil climbs") -> bytes:
    """A contract-valid message."""
    return json.dumps({"id": message_id, "headline": headline}).encode()


def test_records_too_large_to_produce_go_to_the_dlq_and_the_partition_moves_on(
    broker: EmbeddedBroker, start_loop: Callable[..., LoopThread]
) -> None:
    """A 1.1 MB valid message with --max-message-bytes 2 MiB (its scored record is over the client's
    default 1 MiB), then a record whose dead letter would be 2.9 MB, over the 2 MiB + headroom the
    producer then allows (its 1.1 MB key is in it twice, raw and base64)."""
    big_key = b"k" * 1_100_000
    send(
        broker.bootstrap,
        [(None, valid("big", "Oil " * 280_000)), (big_key, b"v" * 300_000), (None, valid("after"))],
    )
    running = start_loop("producer-oversized", LoopSettings(max_message_bytes=2 * MiB, max_wait_ms=50))
    scored = TopicReader(broker.bootstrap, "news.scored")
    dlq = TopicReader(broker.bootstrap, "news.dlq")
    scored.until(lambda records: len(records) >= 2, timeout=45, what="both valid messages scored")
    dlq.until(lambda records: len(records) >= 1, timeout=15, what="the dead letter")
    time.sleep(1)  # anything produced twice would show by now
    running.stop()

    assert [value["id"] for value in scored.values()] == ["big", "after"]
    assert len(scored.poll()[0].value) > MiB
    (letter,) = dlq.values()
    assert letter["reason"] == "not_json" and letter["source_offset"] == 1
    assert letter["source_key_truncated"] is True and letter["original_truncated"] is True
    assert base64.b64decode(letter["source_key_base64"]) == big_key[:1024] == dlq.records[0].key
    assert running.loop.stats["rewinds"] == 0
    scored.close()
    dlq.close()


def close_quickly_and_quietly(producer: KafkaProducer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Close a producer whose records the broker never acknowledges: no wait, no traceback at exit."""
    from ingest.producer_health import close_producer

    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    futures = [producer.send("news.scored", b"never acknowledged") for _ in range(3)]
    started = time.monotonic()
    close_producer(producer)
    assert time.monotonic() - started < 5
    assert all(future.is_done and future.failed() for future in futures)
    del producer
    gc.collect()  # kafka-python's __del__ would close again, and raise, had close_producer not finished
    assert not unraisable, unraisable


def test_after_a_broker_restart_a_fresh_producer_resumes_scoring(
    broker: EmbeddedBroker, start_loop: Callable[..., LoopThread], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restarted broker (tansu, memory storage) answers the old idempotent producer's InitProducerId
    with a fatal error; without a new producer nothing would be scored again. While the broker is
    down, a producer holding unacknowledged records is also closed the way the loop closes its own.
    The restarted broker's news.raw has other partitions, so the loop's consumer, the group's leader,
    rejoins by itself: the rejoin kafka-python could leave unapplied (test_stalled_join.py)."""
    running = start_loop("producer-restart", LoopSettings(max_wait_ms=50))
    send(broker.bootstrap, [(None, valid(f"a-{index}")) for index in range(20)])
    scored = TopicReader(broker.bootstrap, "news.scored")
    scored.until(lambda records: len(records) >= 20, timeout=45, what="the first messages scored")
    scored.close()
    standalone = KafkaProducer(**producer_config(KafkaSettings(broker.bootstrap)))
    standalone.send("news.scored", b"acknowledged").get(10)

    broker.stop()
    close_quickly_and_quietly(standalone, monkeypatch)
    broker.start()
    # Another partition: the restarted broker's log of partition 0 starts again at offset 0, and a
    # consumer that kept its fetch position (20) would wait there for records 0-19 it never reads.
    # A Kafka cluster does not lose its log; this test is about the producer.
    send(broker.bootstrap, [(None, valid(f"b-{index}")) for index in range(20)], partition=1)
    after = TopicReader(broker.bootstrap, "news.scored")
    wanted = {f"b-{index}" for index in range(20)}
    after.until(
        lambda records: wanted <= {json.loads(r.value)["id"] for r in records},
        timeout=45,
        what="every message sent after the restart scored",
    )
    after.close()
    running.stop()
