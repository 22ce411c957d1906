"""The stream loop against stand-in Kafka clients: records too large to produce, a broken producer,
readiness, shutdown while the broker is gone, the consumed counter and the buffer bound.

The stand-ins model what the loop relies on in kafka-python: the producer refuses a record over its
max_request_size in send(), the broker fails a future, flush() raises KafkaTimeoutError, and an
idempotent producer can enter a fatal state that fails every later record.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError

import ingest.broker_health
import ingest.loop
import ingest.producer_health
from finsent.metrics import ClassifyMetrics
from ingest import KafkaSettings, LoopSettings, StreamLoop, producer_config
from tests.integration.conftest import LoopThread
from tests.integration.conftest import neutral_results as neutral

TOPIC = "news.raw"
MiB = 1024 * 1024
PROBE_INTERVAL_S = 5.0  # ingest.broker_health's: an idle loop asks the broker this often
REPLACE_PRODUCER_AFTER = 3  # ingest.producer_health's: failed recoveries before the producer is replaced


def message(message_id: str, headline: str = "Oil climbs") -> bytes:
    return json.dumps({"id": message_id, "headline": headline}).encode()


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp: int | None = 1_700_000_000_000


class FakeConsumer:
    """Partitions of news.raw as lists; a group that assigns all of them at the first poll."""

    def __init__(self, partitions: dict[int, list[tuple[bytes | None, bytes | None]]]) -> None:
        self.logs = {
            p: [Record(TOPIC, p, o, value, key) for o, (key, value) in enumerate(items)]
            for p, items in partitions.items()
        }
        self.positions = dict.fromkeys(self.logs, 0)
        self.committed: dict[int, int] = {}
        self.paused: set[int] = set()
        self.poll_limits: list[int] = []
        self.probes = 0
        self.down = False
        self.listener: Any = None
        self.assigned = False
        self.closed_with: dict[str, Any] | None = None

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener

    def _tps(self) -> set[TopicPartition]:
        return {TopicPartition(TOPIC, p) for p in self.logs}

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Record]]:
        if not self.assigned and self.listener is not None:
            self.assigned = True
            asyncio.run(self.listener.on_partitions_assigned(self._tps()))
        assert max_records is not None and max_records > 0
        self.poll_limits.append(max_records)
        out: dict[Any, list[Record]] = {}
        left = max_records
        for p, log in self.logs.items():
            if p in self.paused or left == 0:
                continue
            batch = log[self.positions[p] : self.positions[p] + left]
            if batch:
                out[TopicPartition(TOPIC, p)] = batch
                self.positions[p] += len(batch)
                left -= len(batch)
        if not out:
            time.sleep(min(timeout_ms, 5) / 1000)
        return out

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp.partition] = offset

    def pause(self, *tps: TopicPartition) -> None:
        self.paused |= {tp.partition for tp in tps}

    def resume(self, *tps: TopicPartition) -> None:
        self.paused -= {tp.partition for tp in tps}

    def commit(self, offsets: dict[Any, Any], timeout_ms: int | None = None) -> None:
        if self.down:
            raise KafkaTimeoutError("no coordinator")
        self.committed.update({tp.partition: meta.offset for tp, meta in offsets.items()})

    async def commit_async(self, offsets: dict[Any, Any]) -> None:
        self.commit(offsets)

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.logs[tp.partition])

    def position(self, tp: TopicPartition, timeout_ms: int | None = None) -> int:
        return self.positions[tp.partition]

    def end_offsets(self, tps: list[TopicPartition], timeout_ms: int | None = None) -> dict[Any, int]:
        self.probes += 1
        if self.down:
            raise KafkaTimeoutError("Failed to get offsets by timestamps in 1000 ms")
        return {tp: len(self.logs[tp.partition]) for tp in tps}

    def close(self, autocommit: bool = True, timeout_ms: int | None = None) -> None:
        self.closed_with = {"autocommit": autocommit, "timeout_ms": timeout_ms}
        if self.assigned:
            asyncio.run(self.listener.on_partitions_revoked(self._tps()))


class FakeFuture:
    def __init__(self) -> None:
        self.is_done = False
        self.exception: BaseException | None = None

    def failed(self) -> bool:
        return self.is_done and self.exception is not None

    def fail(self, error: BaseException) -> None:
        self.is_done, self.exception = True, error


class FatalState:
    """What kafka-python's producer keeps in _transaction_manager."""

    def __init__(self) -> None:
        self.fatal = False

    def has_fatal_error(self) -> bool:
        return self.fatal


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes
    future: FakeFuture


class FakeProducer:
    """kafka-python's producer as the loop sees it (size check in send, futures settled by flush)."""

    def __init__(self, broker_limit: int | None = None, **config: Any) -> None:
        self.max_request_size = config.get("max_request_size", MiB)
        self.broker_limit = broker_limit
        self.records: list[Sent] = []
        self.mode = "ok"  # ok | down (nothing is acknowledged) | fatal | failing
        self._transaction_manager = FatalState()
        self.closed = False
        self.flushing = threading.Event()

    def send(self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None) -> FakeFuture:
        size = len(value) + len(key or b"") + sum(len(k) + len(v) for k, v in headers or [])
        if size > self.max_request_size:
            raise MessageSizeTooLargeError(f"The message is {size} bytes when serialized")
        future = FakeFuture()
        self.records.append(Sent(topic, key, value, future))
        return future

    def flush(self, timeout: float | None = None) -> None:
        pending = [sent for sent in self.records if not sent.future.is_done]
        if self.mode == "down" and pending:
            self.flushing.set()
            time.sleep(timeout or 0)
            raise KafkaTimeoutError("Timeout waiting for future")
        for sent in pending:
            if self.mode == "fatal":
                self._transaction_manager.fatal = True
                sent.future.fail(KafkaError("Unexpected error in InitProducerIdResponse"))
            elif self.mode == "failing":
                sent.future.fail(KafkaTimeoutError("Expiring 1 record(s)"))
            elif self.broker_limit is not None and len(sent.value) > self.broker_limit:
                sent.future.fail(MessageSizeTooLargeError())
            else:
                sent.future.is_done = True

    def close(self, timeout: float | None = None) -> None:
        self.flush(0)  # as kafka-python does: raises while records are unacknowledged
        self.closed = True

    def acknowledged(self, topic: str) -> list[Sent]:
        return [s for s in self.records if s.topic == topic and s.future.is_done and not s.future.failed()]

    def values(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(s.value) for s in self.acknowledged(topic)]


@dataclass
class Clients:
    """What a loop under test was given: its consumer and every producer it created."""

    consumer: FakeConsumer
    producers: list[FakeProducer] = field(default_factory=list)
    make_producer: Callable[..., FakeProducer] = FakeProducer


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Clients]]:
    """Factory: route the loop's KafkaConsumer/KafkaProducer to stand-ins."""

    def install(consumer: FakeConsumer, make_producer: Callable[..., FakeProducer] = FakeProducer) -> Clients:
        made = Clients(consumer, make_producer=make_producer)

        def new_producer(**config: Any) -> FakeProducer:
            producer = made.make_producer(**config)
            made.producers.append(producer)
            return producer

        monkeypatch.setattr(ingest.loop, "KafkaConsumer", lambda **config: consumer)
        monkeypatch.setattr(ingest.loop, "KafkaProducer", new_producer)
        return made

    yield install


def fast(**changes: Any) -> LoopSettings:
    """Loop settings with short waits and backoffs."""
    return LoopSettings(**{"max_wait_ms": 5, "backoff_initial_s": 0.01, "backoff_max_s": 0.05, **changes})


class Running(LoopThread):
    """A loop in a thread, with a wait for a condition on it."""

    def until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"timed out waiting for {what}; loop stats {self.loop.stats}")
            time.sleep(0.01)


def committed_to_end(consumer: FakeConsumer) -> Callable[[], bool]:
    return lambda: all(consumer.committed.get(p) == len(log) for p, log in consumer.logs.items())


# ------------------------------------------------------------------ records too large to produce


@pytest.mark.parametrize(
    "timestamp", [253_402_300_800_000, 1_700_000_000_000_000], ids=["year-10000", "microseconds"]
)
def test_a_kafka_timestamp_past_year_9999_is_scored_without_it_and_the_stream_goes_on(
    clients: Callable[..., Clients], timestamp: int
) -> None:
    """Kafka accepts any CreateTime; writing it as published_at raised and stopped the loop on every restart."""
    consumer = FakeConsumer({0: [(None, message("future")), (None, message("after"))]})
    consumer.logs[0][0].timestamp = timestamp
    made = clients(consumer)
    running = Running(StreamLoop(fast(), KafkaSettings("x:1"), neutral))
    running.until(committed_to_end(made.consumer), 5, "both records committed")
    running.stop()
    (producer,) = made.producers
    scored = producer.values("news.scored")
    assert [(v["id"], v["published_at"]) for v in scored] == [
        ("future", None),
        ("after", "2023-11-14T22:13:20.000Z"),
    ]
    assert producer.values("news.dlq") == []


def test_a_scored_record_that_cannot_be_built_is_dead_lettered_and_the_stream_goes_on(
    clients: Callable[..., Clients],
) -> None:
    def odd_for_one(texts: Sequence[str]) -> list[dict[str, Any]]:
        results = neutral(texts)
        for text, result in zip(texts, results, strict=True):
            if text == "odd":
                result["topic_score"] = "high"  # present, so the classifier check passes, but no number
        return results

    made = clients(FakeConsumer({0: [(None, message("a", "odd")), (None, message("b"))]}))
    running = Running(StreamLoop(fast(), KafkaSettings("x:1"), odd_for_one))
    running.until(committed_to_end(made.consumer), 5, "both records committed")
    running.stop()
    (producer,) = made.producers
    assert [v["id"] for v in producer.values("news.scored")] == ["b"]
    (letter,) = producer.values("news.dlq")
    assert letter["reason"] == "classify_failed" and "cannot build the scored record" in letter["detail"]


def test_a_payload_the_settings_accept_is_scored_even_past_the_client_default_request_size(
    clients: Callable[..., Clients],
) -> None:
    """--max-message-bytes 2 MiB and a ~1.1 MB valid message: its scored record is over 1 MiB."""
    big = message("big", "Oil " * 280_000)
    made = clients(FakeConsumer({0: [(None, big), (None, message("after"))]}))
    running = Running(StreamLoop(fast(max_message_bytes=2 * MiB), KafkaSettings("x:1"), neutral))
    running.until(committed_to_end(made.consumer), 5, "both records committed")
    running.stop()
    (producer,) = made.producers
    assert [value["id"] for value in producer.values("news.scored")] == ["big", "after"]
    assert running.loop.stats["rewinds"] == 0
    assert len(producer.records) == 2  # nothing produced twice


def test_the_producer_limit_covers_the_largest_accepted_payload_and_the_default_dead_letters() -> None:
    from ingest.kafka_config import output_request_limit

    assert output_request_limit(64 * 1024) == MiB
    assert output_request_limit(16 * MiB) >= 16 * MiB + 64 * 1024
    config = producer_config(KafkaSettings("x:1"), max_request_size=output_request_limit(2 * MiB))
    assert config["max_request_size"] > 2 * MiB
    assert "max_request_size" not in producer_config(KafkaSettings("x:1"))  # other stages: the default


def test_a_scored_record_the_producer_refuses_for_size_is_dead_lettered_as_oversized(
    clients: Callable[..., Clients],
) -> None:
    """JSON numbers grow when written back (9e15 -> 9000000000000000.0): the scored record can exceed
    any limit derived from the input's size. It goes to the DLQ; the partition moves on."""
    numbers = json.dumps({"id": "nums", "headline": "Figures", "n": [9e15] * 1}).encode()
    numbers = numbers.replace(b"9000000000000000.0", b",".join([b"9e15"] * 200_000))
    assert len(numbers) < 1 * MiB
    made = clients(FakeConsumer({0: [(b"k", numbers), (None, message("after"))]}))
    running = Running(StreamLoop(fast(max_message_bytes=1 * MiB), KafkaSettings("x:1"), neutral))
    running.until(committed_to_end(made.consumer), 5, "both records committed")
    running.stop()
    (producer,) = made.producers
    assert [value["id"] for value in producer.values("news.scored")] == ["after"]
    (letter,) = producer.values("news.dlq")
    assert letter["reason"] == "oversized" and "too large" in letter["detail"]
    assert letter["original_size"] == len(numbers) and letter["original_truncated"] is True
    assert (letter["source_partition"], letter["source_offset"]) == (0, 0)
    assert running.loop.stats["rewinds"] == 0


def test_a_scored_record_the_broker_refuses_for_size_is_dead_lettered_as_oversized(
    clients: Callable[..., Clients],
) -> None:
    """The topic's own limit (max.message.bytes) can be lower than the producer's: the future fails."""
    big = message("big", "Oil " * 280_000)
    made = clients(
        FakeConsumer({0: [(None, big), (None, message("after"))]}),
        make_producer=lambda **config: FakeProducer(broker_limit=MiB, **config),
    )
    running = Running(StreamLoop(fast(max_message_bytes=2 * MiB), KafkaSettings("x:1"), neutral))
    running.until(committed_to_end(made.consumer), 5, "both records committed")
    running.stop()
    (producer,) = made.producers
    assert [value["id"] for value in producer.values("news.scored")] == ["after"]
    (letter,) = producer.values("news.dlq")
    assert letter["reason"] == "oversized" and letter["original_truncated"] is True
    assert running.loop.stats["rewinds"] == 0


def test_a_dead_letter_too_large_to_produce_is_sent_again_with_its_key_truncated(
    clients: Callable[..., Clients],
) -> None:
    """Default settings; a 400 KB key and a 300 KB value: the dead letter (key twice, 256 KiB original)
    is ~1.28 MB, over the producer's 1 MiB."""
    key, value = b"k" * 400_000, b"v" * 300_000
    made = clients(FakeConsumer({0: [(key, value), (None, message("after"))]}))
    running = Running(StreamLoop(fast(), KafkaSettings("x:1"), neutral))
    running.until(committed_to_end(made.consumer), 5, "both records committed")
    running.stop()
    (producer,) = made.producers
    assert [value["id"] for value in producer.values("news.scored")] == ["after"]
    (sent,) = producer.acknowledged("news.dlq")
    letter = json.loads(sent.value)
    assert letter["reason"] == "oversized" and letter["original_size"] == 300_000
    assert letter["source_key_truncated"] is True and letter["original_truncated"] is True
    assert base64.b64decode(letter["source_key_base64"]) == key[:1024] == sent.key
    assert len(sent.value) < 100_000
    assert running.loop.stats["rewinds"] == 0


# ----------------------------------------------------------------------------- broken producer


def test_a_producer_in_a_fatal_state_is_replaced_and_the_stream_resumes(
    clients: Callable[..., Clients],
) -> None:
    """After a broker restart kafka-python's idempotent producer can fail every record for good."""

    def first_broken(**config: Any) -> FakeProducer:
        producer = FakeProducer(**config)
        producer.mode = "fatal" if not made.producers else "ok"
        return producer

    made = clients(FakeConsumer({0: [(None, message(f"m-{i}")) for i in range(10)]}), first_broken)
    running = Running(StreamLoop(fast(), KafkaSettings("x:1"), neutral))
    running.until(committed_to_end(made.consumer), 5, "every record committed")
    running.stop()
    assert len(made.producers) == 2 and made.producers[0].closed
    assert sorted(v["id"] for v in made.producers[1].values("news.scored")) == [f"m-{i}" for i in range(10)]


def test_a_producer_that_keeps_failing_is_replaced_even_without_a_known_fatal_error(
    clients: Callable[..., Clients],
) -> None:
    def first_failing(**config: Any) -> FakeProducer:
        producer = FakeProducer(**config)
        producer.mode = "failing" if not made.producers else "ok"
        return producer

    made = clients(FakeConsumer({0: [(None, message(f"m-{i}")) for i in range(10)]}), first_failing)
    running = Running(StreamLoop(fast(), KafkaSettings("x:1"), neutral))
    running.until(committed_to_end(made.consumer), 5, "every record committed")
    running.stop()
    assert len(made.producers) == 2
    assert running.loop.stats["rewinds"] == REPLACE_PRODUCER_AFTER


# ------------------------------------------------------------------------------------ readiness


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_readiness_follows_the_broker_while_the_stream_is_idle(clients: Callable[..., Clients]) -> None:
    """No records to produce or commit: readiness still needs the broker to answer, and asks it rarely."""
    clock = FakeClock()
    made = clients(FakeConsumer({0: [], 1: []}))
    metrics = ClassifyMetrics()
    loop = StreamLoop(LoopSettings(), KafkaSettings("x:1"), neutral, observer=metrics, clock=clock)
    loop._consumer, loop._sender.producer = made.consumer, FakeProducer()
    loop._consumer.subscribe([TOPIC], ingest.loop._Rebalance(loop))

    def idle(seconds: float) -> None:
        for _ in range(int(seconds / 0.2)):
            clock.now += 0.2
            loop._step()

    idle(10)
    assert loop.ready and metrics.registry.get_sample_value("finsent_ready", {"stage": "classify"}) == 1.0
    made.consumer.down = True
    idle(PROBE_INTERVAL_S + 1)
    assert not loop.ready and metrics.registry.get_sample_value("finsent_ready", {"stage": "classify"}) == 0.0
    made.consumer.down = False
    idle(PROBE_INTERVAL_S + 1)
    assert loop.ready
    made.consumer.probes = 0
    idle(60)  # cheap: one round trip per probe interval, not one per step
    assert made.consumer.probes <= 60 / PROBE_INTERVAL_S + 1


def test_the_constants_these_tests_assume_are_the_loops() -> None:
    assert ingest.broker_health.PROBE_INTERVAL_S == PROBE_INTERVAL_S
    assert ingest.producer_health.REPLACE_PRODUCER_AFTER == REPLACE_PRODUCER_AFTER


# ------------------------------------------------------------------------------------- shutdown


def test_a_stop_while_the_broker_is_gone_cuts_the_flush_short_and_commits_nothing_unacknowledged(
    clients: Callable[..., Clients],
) -> None:
    made = clients(FakeConsumer({0: [(None, message(f"m-{i}")) for i in range(200)]}))
    settings = fast(max_batch=16, shutdown_timeout_s=1.0)
    running = Running(StreamLoop(settings, KafkaSettings("x:1"), neutral))
    running.until(lambda: made.consumer.committed.get(0, 0) >= 16, 5, "a first commit")
    (producer,) = made.producers
    producer.mode = "down"
    running.until(producer.flushing.is_set, 5, "a flush the broker does not answer")
    committed = made.consumer.committed[0]
    seconds = running.stop(timeout=30)
    assert not running.thread.is_alive() and running.error is None
    assert seconds < 4, f"stopping took {seconds:.1f}s"  # flush_timeout_s is 60
    assert made.consumer.committed[0] == committed  # nothing past the acknowledged records
    assert made.consumer.closed_with is not None and made.consumer.closed_with["autocommit"] is False
    assert 0 < made.consumer.closed_with["timeout_ms"] <= 10_000  # leaving the group is bounded too


def test_a_last_batch_the_broker_fails_during_a_stop_is_not_committed(
    clients: Callable[..., Clients],
) -> None:
    made = clients(FakeConsumer({0: [(None, message(f"m-{i}")) for i in range(40)]}))
    in_model = threading.Event()
    release = threading.Event()
    batches = 0

    def second_batch_waits(texts: Sequence[str]) -> list[dict[str, Any]]:
        nonlocal batches
        batches += 1
        if batches == 2:
            in_model.set()
            release.wait(10)
        return neutral(texts)

    running = Running(StreamLoop(fast(max_batch=8), KafkaSettings("x:1"), second_batch_waits))
    running.until(
        lambda: in_model.is_set() and made.consumer.committed.get(0) == 8, 5, "a batch in the model"
    )
    (producer,) = made.producers
    producer.mode = "failing"  # the broker now expires every record it is sent
    running.loop.request_stop()
    release.set()
    running.stop(timeout=10)
    acknowledged = [int(value["id"][2:]) for value in producer.values("news.scored")]
    assert max(acknowledged) == 7
    # Offsets 8.. were never acknowledged: the next owner must read them again.
    assert made.consumer.committed[0] == 8


# ----------------------------------------------------------------------- consumed counter, buffer


class FailsOnSecondSend(FakeProducer):
    def send(self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None) -> FakeFuture:
        if len(self.records) == 1:
            raise KafkaTimeoutError("Failed to update metadata after 30.0 secs.")
        return super().send(topic, value, key, headers)


def test_records_count_as_consumed_one_by_one_as_they_are_accepted(clients: Callable[..., Clients]) -> None:
    """Three invalid records in one poll; producing the second one's dead letter fails."""
    made = clients(FakeConsumer({0: [(None, b"not json")] * 3}))
    metrics = ClassifyMetrics()
    loop = StreamLoop(LoopSettings(), KafkaSettings("x:1"), neutral, observer=metrics)
    loop._consumer, loop._sender.producer = made.consumer, FailsOnSecondSend()
    loop._consumer.subscribe([TOPIC], ingest.loop._Rebalance(loop))
    with pytest.raises(KafkaTimeoutError):
        loop._step()
    assert metrics.registry.get_sample_value("finsent_messages_consumed_total") == 1.0


def test_the_buffer_never_holds_more_than_max_buffer_valid_messages(clients: Callable[..., Clients]) -> None:
    made = clients(FakeConsumer({0: [(None, message(f"m-{i}")) for i in range(100)]}))
    gate = threading.Event()

    def slow(texts: Sequence[str]) -> list[dict[str, Any]]:
        gate.wait(5)
        return neutral(texts)

    loop = StreamLoop(LoopSettings(max_batch=8, max_buffer=10, max_wait_ms=0), KafkaSettings("x:1"), slow)
    loop._consumer, loop._sender.producer = made.consumer, FakeProducer()
    loop._consumer.subscribe([TOPIC], ingest.loop._Rebalance(loop))
    most = 0
    for _ in range(20):  # the first batch is stuck in the classifier: the buffer fills up
        loop._step()
        most = max(most, len(loop._batcher))
    gate.set()
    assert most == 10
    assert max(made.consumer.poll_limits) <= 8 and min(made.consumer.poll_limits) >= 1
    loop._drop_inflight()
    loop._executor.shutdown()
