"""The consume -> validate -> micro-batch -> classify -> produce -> commit loop (at-least-once)."""

from __future__ import annotations

import concurrent.futures
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kafka import (
    AsyncConsumerRebalanceListener,
    KafkaConsumer,
    KafkaProducer,
    OffsetAndMetadata,
    TopicPartition,
)
from kafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from ingest.batcher import MicroBatcher
from ingest.contract import DEFAULT_MAX_MESSAGE_BYTES, Invalid, InvalidReason, NewsItem, decode
from ingest.dlq import (
    COMPACT_KEY_BYTES,
    COMPACT_ORIGINAL_BYTES,
    Source,
    dlq_record,
    encode_json,
    utc_now_rfc3339,
)
from ingest.kafka_config import KafkaSettings, consumer_config, output_request_limit, producer_config
from ingest.observer import NullObserver, Observer
from ingest.offsets import OffsetTracker, Partition
from ingest.scored import Classifier, check_result, scored_record

log = logging.getLogger("ingest.loop")

# How long a lag report may wait for the end offsets of partitions not fetched yet (no high watermark).
END_OFFSETS_TIMEOUT_MS = 500
# Readiness needs a broker round trip (an acknowledged record, a commit, a group join or a probe)
# that worked, within READY_WINDOW_S. An idle loop probes (an end-offsets request) every PROBE_INTERVAL_S.
PROBE_INTERVAL_S = 5.0
PROBE_TIMEOUT_MS = 1000
READY_WINDOW_S = 15.0
# A flush waits in slices this long, so a stop request is noticed while the broker does not answer.
FLUSH_SLICE_S = 0.25
# Consecutive failed recoveries after which the producer is replaced even without a known fatal error.
REPLACE_PRODUCER_AFTER = 3
# A commit waits at most this long (a lost commit only means a replay), so a stop is not held up by it.
COMMIT_TIMEOUT_MS = 10_000
# Closing: leaving the group, and stopping a producer's I/O thread, wait at most this long.
CONSUMER_CLOSE_TIMEOUT_MS = 5_000
PRODUCER_CLOSE_JOIN_S = 2.0
# What the broker or the producer answers for a record over its size limit.
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


@dataclass(frozen=True)
class LoopSettings:
    """Topics, batching and limits of one stream loop."""

    input_topic: str = "news.raw"
    output_topic: str = "news.scored"
    dlq_topic: str = "news.dlq"
    max_batch: int = 64
    max_wait_ms: int = 50
    max_buffer: int = 256
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    model_version: str = "unknown"
    flush_timeout_s: float = 60.0
    # Once a stop is requested, how long acknowledgements and the final commit may still take.
    shutdown_timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 15.0


class DeliveryFailed(Exception):
    """The broker did not acknowledge every produced record; the uncommitted range is replayed."""


@dataclass
class Pending:
    """A valid record waiting to be classified, with what a dead letter for it must carry."""

    partition: Partition
    offset: int
    timestamp_ms: int | None
    item: NewsItem
    raw: bytes
    key: bytes | None = None

    def source(self) -> Source:
        """Where the record came from, for its dead letter."""
        return Source(
            self.partition.topic, self.partition.partition, self.offset, self.timestamp_ms, self.key
        )


@dataclass
class _Sent:
    """A produced record whose acknowledgement is outstanding."""

    kind: str
    label: str = ""
    sentiment: str = ""
    source_timestamp_ms: int | None = None
    # Produces a smaller stand-in when the record is refused for its size (None: there is none).
    instead: Callable[[str], None] | None = None
    future: Any = None


@dataclass
class _InFlight:
    batch: list[Pending]
    future: concurrent.futures.Future[tuple[list[Mapping[str, Any] | Invalid], float]]


@dataclass
class Backoff:
    """Exponential backoff with jitter, reset after a success."""

    initial: float
    maximum: float
    current: float = field(default=0.0)

    def next_delay(self) -> float:
        """The next delay to wait, doubling up to the maximum."""
        self.current = self.initial if self.current == 0.0 else min(self.maximum, self.current * 2)
        return self.current * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        """Start again from the initial delay."""
        self.current = 0.0


def classify_safely(classify: Classifier, texts: list[str]) -> list[Mapping[str, Any] | Invalid]:
    """Classify a batch; if the batch fails, retry one by one so one poison text cannot stop the stream."""
    try:
        results = list(classify(texts))
        if len(results) != len(texts):
            raise ValueError(f"classifier returned {len(results)} results for {len(texts)} texts")
        for result in results:
            check_result(result)
        return list(results)
    except Exception:
        log.exception("batch of %d failed to classify; retrying one by one", len(texts))
    answers: list[Mapping[str, Any] | Invalid] = []
    for text in texts:
        try:
            (result,) = classify([text])
            check_result(result)
            answers.append(result)
        except Exception as error:
            answers.append(Invalid(InvalidReason.CLASSIFY_FAILED, f"{type(error).__name__}: {error}"[:300]))
    return answers


class StreamLoop:
    """One consumer-group member: reads the input topic, writes scored and DLQ topics, commits after acks."""

    def __init__(
        self,
        settings: LoopSettings,
        kafka: KafkaSettings,
        classify: Classifier,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.kafka = kafka
        self.classify = classify
        self.observer: Observer = observer or NullObserver()
        self._clock = clock
        self._stop = threading.Event()
        self._stop_deadline = float("inf")
        self._batcher: MicroBatcher[Pending] = MicroBatcher(settings.max_batch, settings.max_wait_ms, clock)
        self._tracker = OffsetTracker()
        self._sent: list[_Sent] = []
        self._inflight: _InFlight | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="classify")
        self._consumer: Any = None
        self._producer: Any = None
        self._assignment: set[Partition] = set()
        # Guards the assignment against the rebalance callbacks (kafka-python's IO thread), so a lag
        # report never re-creates the series of a partition that was just revoked.
        self._lag_lock = threading.Lock()
        self._paused = False
        self._joined = False
        self._broker_ok = False
        self._last_answer = float("-inf")
        self._last_probe = float("-inf")
        # Set when run() dies of an unexpected error: closing the consumer then commits nothing, so
        # the records of a half-produced batch are replayed rather than skipped.
        self._crashed = False
        self._backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s)
        self._failed_recoveries = 0
        self._last_lag_report = float("-inf")
        self._last_idle_checkpoint = float("-inf")
        self.stats = {"consumed": 0, "scored": 0, "invalid": 0, "commits": 0, "rewinds": 0}

    # ----------------------------------------------------------------- control

    def request_stop(self) -> None:
        """Ask the loop to finish the in-flight batch, commit and return (safe from a signal handler)."""
        if not self._stop.is_set():
            self._stop_deadline = self._clock() + self.settings.shutdown_timeout_s
        self._stop.set()

    @property
    def ready(self) -> bool:
        """In the group, and the last broker round trip worked and is recent."""
        return self._joined and self._broker_ok and self._clock() - self._last_answer < READY_WINDOW_S

    def run(self) -> None:
        """Connect (retrying with backoff), serve until stopped, then shut down cleanly."""
        try:
            while not self._stop.is_set():
                if (self._consumer is None or self._producer is None) and not self._connect():
                    continue
                try:
                    self._serve()
                except (KafkaError, DeliveryFailed, OSError) as error:
                    self._recover(error)
            self._finish()
        except BaseException:
            self._crashed = True
            raise
        finally:
            self._close()

    # ------------------------------------------------------------- connection

    def _connect(self) -> bool:
        """Create whichever client is missing; on failure back off and return False."""
        try:
            if self._producer is None:
                limit = output_request_limit(self.settings.max_message_bytes)
                self._producer = KafkaProducer(**producer_config(self.kafka, max_request_size=limit))
                log.info("producer connected to %s", self.kafka.bootstrap_servers)
            if self._consumer is None:
                consumer = KafkaConsumer(**consumer_config(self.kafka, self.settings.max_batch))
                consumer.subscribe([self.settings.input_topic], listener=_Rebalance(self))
                self._consumer = consumer
                log.info(
                    "connected to %s; subscribed to %s",
                    self.kafka.bootstrap_servers,
                    self.settings.input_topic,
                )
        except (KafkaError, OSError) as error:
            self.observer.error("connect")
            delay = self._backoff.next_delay()
            log.warning(
                "cannot connect to %s (%s); retrying in %.1fs", self.kafka.bootstrap_servers, error, delay
            )
            self._stop.wait(delay)
            return False
        return True

    def _recover(self, error: BaseException) -> None:
        """After a failed produce/flush: drop unacknowledged work, rewind to the last commit, back off."""
        self.observer.error("produce" if isinstance(error, DeliveryFailed) else "broker")
        self._unanswered()
        delay = self._backoff.next_delay()
        log.warning("stream error: %s; rewinding to last commit, retrying in %.1fs", error, delay)
        self._drop_inflight()
        self._batcher.discard(lambda _: True)
        self._sent.clear()
        self.stats["rewinds"] += 1
        self._failed_recoveries += 1
        self._drop_stuck_producer()
        self._rewind()
        self._stop.wait(delay)

    def _drop_stuck_producer(self) -> None:
        """Close the producer if it is in a fatal state or keeps failing; run() connects a new one."""
        # A broker restart can leave kafka-python's idempotent producer failing every record for good
        # (a fatal InitProducerId error); a new producer starts clean.
        if self._producer is None:
            return
        if producer_is_broken(self._producer):
            why = "it is in a fatal state"
        elif self._failed_recoveries >= REPLACE_PRODUCER_AFTER:
            why = f"{self._failed_recoveries} failed recoveries in a row"
        else:
            return
        log.warning("replacing the producer: %s", why)
        close_producer(self._producer)
        self._producer = None
        self._failed_recoveries = 0

    def _rewind(self) -> None:
        """Seek every owned partition back to its last commit, so what was not acknowledged is replayed."""
        for partition in list(self._assignment):
            position = self._tracker.rewind(partition)
            if position is not None:
                try:
                    self._consumer.seek(TopicPartition(*partition), position)
                except (KafkaError, AssertionError, ValueError) as seek_error:
                    log.warning("seek %s to %d failed: %s", partition, position, seek_error)

    def _close(self) -> None:
        """Release the classify worker and both clients; the consumer's close commits nothing itself."""
        self._executor.shutdown(wait=True)
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False, timeout_ms=CONSUMER_CLOSE_TIMEOUT_MS)
            except Exception as error:  # closing is best effort
                log.warning("consumer close: %s", error)
            self._consumer = None
        if self._producer is not None:
            # Everything worth waiting for was flushed already; what is left is never committed.
            close_producer(self._producer)
            self._producer = None
        self._joined = False
        self._publish_state()

    # ------------------------------------------------------------------ serve

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._step()

    def _step(self) -> None:
        inflight = self._inflight
        if inflight is not None and inflight.future.done():
            self._complete_inflight()
        if self._inflight is None and self._batcher.ready():
            self._start_batch()
        self._apply_backpressure()
        if self._inflight is not None and self._paused:
            concurrent.futures.wait([self._inflight.future], timeout=0.05)
            timeout_ms = 0
        elif self._inflight is not None:
            timeout_ms = 5
        else:
            wait = self._batcher.seconds_until_ready()
            timeout_ms = 100 if wait is None else int(min(wait, 0.1) * 1000)
        records = self._consumer.poll(timeout_ms=timeout_ms, max_records=self._poll_limit())
        for batch in records.values():
            for record in batch:
                self._accept(record)
        now = self._clock()
        if self._inflight is None and not self._batcher and now - self._last_idle_checkpoint > 0.2:
            self._last_idle_checkpoint = now
            self._checkpoint()
        if now - self._last_lag_report > 1.0:
            self._last_lag_report = now
            self._report_lag()
        if now - max(self._last_answer, self._last_probe) >= PROBE_INTERVAL_S:
            self._probe_broker()

    def _poll_limit(self) -> int:
        """How many records the next poll may return: no more than the buffer has room for."""
        # Never 0 (kafka-python refuses it): a full buffer has its partitions paused, so nothing comes.
        room = self.settings.max_buffer - len(self._batcher)
        return max(1, min(self.settings.max_batch, room))

    def _accept(self, record: Any) -> None:
        """Buffer one polled record for classification, or dead-letter it; then count it as consumed."""
        partition = Partition(record.topic, record.partition)
        self._tracker.polled(partition, record.offset)
        timestamp = record.timestamp if record.timestamp is not None and record.timestamp >= 0 else None
        result = decode(record.value, self.settings.max_message_bytes)
        if isinstance(result, Invalid):
            source = Source(record.topic, record.partition, record.offset, timestamp, record.key)
            self._send_dlq(result, record.value, source)
        else:
            self._batcher.add(Pending(partition, record.offset, timestamp, result, record.value, record.key))
        self.stats["consumed"] += 1
        self.observer.consumed(1)

    def _start_batch(self) -> None:
        batch = self._batcher.take()
        texts = [pending.item.text for pending in batch]

        def work() -> tuple[list[Mapping[str, Any] | Invalid], float]:
            started = time.perf_counter()
            results = classify_safely(self.classify, texts)
            return results, time.perf_counter() - started

        self._inflight = _InFlight(batch, self._executor.submit(work))

    def _complete_inflight(self, start_next: bool = True, checkpoint: bool = True) -> None:
        """Produce the in-flight batch's results, start the next batch, then flush and (maybe) commit."""
        inflight = self._inflight
        if inflight is None:
            return
        results, seconds = inflight.future.result()
        self._inflight = None
        self.observer.batch(len(inflight.batch), seconds)
        scored_at = utc_now_rfc3339()
        for pending, result in zip(inflight.batch, results, strict=True):
            if isinstance(result, Invalid):
                self._send_dlq(result, pending.raw, pending.source())
            else:
                self._send_scored(pending, result, scored_at)
        if start_next and not self._stop.is_set() and self._batcher.ready():
            self._start_batch()
        if checkpoint:
            self._checkpoint()

    def _drop_inflight(self) -> None:
        if self._inflight is not None:
            concurrent.futures.wait([self._inflight.future])
            self._inflight = None

    # ---------------------------------------------------------------- produce

    def _send_scored(self, pending: Pending, result: Mapping[str, Any], scored_at: str) -> None:
        record = scored_record(
            pending.item,
            result,
            model_version=self.settings.model_version,
            kafka_timestamp_ms=pending.timestamp_ms,
            scored_at=scored_at,
        )
        label = record["topic"]

        def dead_letter(why: str) -> None:
            source = pending.source()
            log.warning(
                "scored record of %s:%d@%d is too large to produce (%s); dead-lettering it as oversized",
                source.topic,
                source.partition,
                source.offset,
                why,
            )
            detail = f"the scored record is too large to produce: {why}"[:300]
            self._send_dlq(Invalid(InvalidReason.OVERSIZED, detail), pending.raw, source)

        entry = _Sent("scored", label, record["sentiment"], pending.timestamp_ms, instead=dead_letter)
        self._produce(entry, self.settings.output_topic, label.encode("utf-8"), encode_json(record))

    def _send_dlq(
        self, invalid: Invalid, original: bytes | None, source: Source, *, compact: bool = False
    ) -> None:
        """Dead-letter one record; if that is too large, again without most of its key and original."""
        key = source.key
        if compact:
            key = None if key is None else key[:COMPACT_KEY_BYTES]
            letter = dlq_record(
                invalid,
                original,
                source,
                max_original_bytes=COMPACT_ORIGINAL_BYTES,
                max_key_bytes=COMPACT_KEY_BYTES,
            )
        else:
            letter = dlq_record(invalid, original, source)

        def smaller(why: str) -> None:
            log.warning(
                "dead letter for %s:%d@%d is too large (%s); dropping most of its key and original",
                source.topic,
                source.partition,
                source.offset,
                why,
            )
            self._send_dlq(invalid, original, source, compact=True)

        entry = _Sent("dlq", invalid.reason.value, instead=None if compact else smaller)
        headers = [("finsent-reason", invalid.reason.value.encode("ascii"))]
        self._produce(entry, self.settings.dlq_topic, key, encode_json(letter), headers)

    def _produce(
        self,
        entry: _Sent,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Send one record; one the producer refuses for its size is replaced by its stand-in at once."""
        try:
            entry.future = self._producer.send(topic, key=key, value=value, headers=headers)
        except TOO_LARGE as error:
            if entry.instead is None:
                raise
            entry.instead(str(error))
            return
        self._sent.append(entry)

    def _flush(self) -> None:
        """Block until every produced record is acknowledged; raise DeliveryFailed otherwise."""
        while self._sent:  # again when a record refused for its size was replaced by a stand-in
            self._await_acks()
            sent, self._sent = self._sent, []
            failures = sum(not self._settle(entry) for entry in sent)
            if failures:
                raise DeliveryFailed(f"{failures} of {len(sent)} records were not acknowledged")
            self._answered()
            self._failed_recoveries = 0

    def _await_acks(self) -> None:
        """Flush the producer in short slices until done, past flush_timeout_s, or cut short by a stop."""
        deadline = self._clock() + self.settings.flush_timeout_s
        while True:
            if self._stop.is_set():
                deadline = min(deadline, self._stop_deadline)
            try:
                self._producer.flush(timeout=max(0.0, min(FLUSH_SLICE_S, deadline - self._clock())))
                return
            except KafkaTimeoutError as error:
                if self._clock() >= deadline:
                    raise DeliveryFailed(f"flush: {error}") from error
                self._publish_state()  # readiness expires while no acknowledgement comes
            except KafkaError as error:
                raise DeliveryFailed(f"flush: {error}") from error

    def _settle(self, entry: _Sent) -> bool:
        """Count one acknowledged record, or replace one refused for its size; False if it failed."""
        future = entry.future
        if future.is_done and isinstance(future.exception, TOO_LARGE) and entry.instead is not None:
            entry.instead(str(future.exception))  # the broker's limit: its stand-in goes out next round
            return True
        if not future.is_done or future.failed():
            return False
        if entry.kind == "scored":
            self.stats["scored"] += 1
            latency = None
            if entry.source_timestamp_ms is not None:
                latency = max(0.0, (time.time() * 1000.0 - entry.source_timestamp_ms) / 1000.0)
            self.observer.scored(entry.label, entry.sentiment, latency)
        else:
            self.stats["invalid"] += 1
            self.observer.invalid(entry.label)
        return True

    # ----------------------------------------------------------------- commit

    def _pending_offsets(self) -> Iterable[tuple[Partition, int]]:
        if self._inflight is not None:
            yield from ((pending.partition, pending.offset) for pending in self._inflight.batch)
        yield from ((pending.partition, pending.offset) for pending in self._batcher.items())

    def _checkpoint(self) -> None:
        """Flush the producer, then commit everything before the first record not yet done."""
        positions = self._tracker.safe_positions(self._pending_offsets())
        self._flush()
        todo = self._tracker.uncommitted({tp: pos for tp, pos in positions.items() if tp in self._assignment})
        if not todo:
            return
        offsets = {TopicPartition(*tp): OffsetAndMetadata(pos, "", -1) for tp, pos in todo.items()}
        try:
            self._consumer.commit(offsets, timeout_ms=self._commit_timeout_ms())
        except KafkaError as error:
            # The records are produced; a lost commit only means a replay (duplicates) later.
            self.observer.error("commit")
            log.warning("commit failed (%s); the next commit or a replay covers it", error)
            return
        self._tracker.committed(todo)
        self.stats["commits"] += 1
        self.observer.committed(len(todo))
        self._answered()

    def _commit_timeout_ms(self) -> int:
        """COMMIT_TIMEOUT_MS, or less once stopping: what is left of the shutdown budget (at least 1 s)."""
        if not self._stop.is_set():
            return COMMIT_TIMEOUT_MS
        return max(1000, min(COMMIT_TIMEOUT_MS, int((self._stop_deadline - self._clock()) * 1000)))

    # ------------------------------------------------------------ backpressure

    def _apply_backpressure(self) -> None:
        full = len(self._batcher) >= self.settings.max_buffer
        partitions = [TopicPartition(*tp) for tp in list(self._assignment)]  # a copy: see _lag_lock
        if full and not self._paused and partitions:
            self._consumer.pause(*partitions)
            self._paused = True
        elif not full and self._paused:
            self._consumer.resume(*partitions)
            self._paused = False
        self._publish_state()

    def _report_lag(self) -> None:
        """Report every owned partition's lag: log end (high watermark) minus the committed offset."""
        with self._lag_lock:
            owned = sorted(self._assignment)
        positions: dict[Partition, int] = {}
        highs: dict[Partition, int] = {}
        for partition in owned:
            tp = TopicPartition(*partition)
            try:
                # Committed, not read: a stage that re-reads the same records (a rewind loop) shows lag.
                position = self._tracker.replay_position(partition)
                if position is None:
                    # Owned but nothing polled from it yet (a backlog drains one partition at a time):
                    # the consumer's position, i.e. the committed offset. timeout_ms=0 never waits for
                    # the coordinator; it answers None until the position is known.
                    position = self._consumer.position(tp, timeout_ms=0)
                high = self._consumer.highwater(tp)
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
            highs.update(self._end_offsets(unfetched))
        with self._lag_lock:
            for partition, position in positions.items():
                if partition in self._assignment and partition in highs:
                    lag = max(0, highs[partition] - position)
                    self.observer.lag(partition.topic, partition.partition, lag)

    def _end_offsets(self, partitions: list[Partition]) -> dict[Partition, int]:
        """End offsets of partitions without a fetch response yet; empty if the broker is slow to answer."""
        try:
            ends = self._consumer.end_offsets(
                [TopicPartition(*partition) for partition in partitions], timeout_ms=END_OFFSETS_TIMEOUT_MS
            )
        except KafkaError as error:
            log.debug("no end offsets for %s: %s", partitions, error)
            return {}
        return {Partition(tp.topic, tp.partition): int(offset) for tp, offset in ends.items()}

    # --------------------------------------------------------------- readiness

    def _probe_broker(self) -> None:
        """Nothing talked to the broker lately: ask it for end offsets, so readiness reflects it."""
        self._last_probe = self._clock()
        with self._lag_lock:
            owned = sorted(self._assignment) or [Partition(self.settings.input_topic, 0)]
        try:
            self._consumer.end_offsets([TopicPartition(*tp) for tp in owned], timeout_ms=PROBE_TIMEOUT_MS)
        except KafkaError as error:
            if self._broker_ok:
                log.warning("the broker did not answer (%s); not ready", error)
            self._unanswered()
            return
        self._answered()

    def _answered(self) -> None:
        """A broker round trip worked."""
        self._last_answer = self._clock()
        self._broker_ok = True
        self._backoff.reset()
        self._publish_state()

    def _unanswered(self) -> None:
        """A broker round trip failed: not ready until one works again."""
        self._broker_ok = False
        self._publish_state()

    def _publish_state(self) -> None:
        self.observer.state(self.ready, self._paused, len(self._batcher))

    # --------------------------------------------------------------- rebalance

    def revoke(self, partitions: set[Partition], lost: bool) -> dict[Any, Any]:
        """Finish in-flight work and drop buffered records of partitions being taken away.

        Returns the offsets to commit for them (none when membership was lost or the loop crashed).
        """
        log.info("partitions %s: %s", "lost" if lost else "revoked", sorted(partitions))
        offsets: dict[Any, Any] = {}
        try:
            if lost or self._crashed:
                self._drop_inflight()
                self._sent.clear()
            else:
                # Runs on the consumer's IO thread: no blocking consumer calls here, only the producer.
                self._complete_inflight(start_next=False, checkpoint=False)
                positions = self._tracker.safe_positions(self._pending_offsets())
                self._flush()
                todo = self._tracker.uncommitted(
                    {tp: pos for tp, pos in positions.items() if tp in partitions}
                )
                offsets = {TopicPartition(*tp): OffsetAndMetadata(pos, "", -1) for tp, pos in todo.items()}
        except (KafkaError, DeliveryFailed) as error:
            log.warning(
                "could not finish the in-flight batch before revocation (it will be replayed): %s", error
            )
            self._sent.clear()
        self._batcher.discard(lambda pending: pending.partition in partitions)
        self._tracker.forget(partitions)
        with self._lag_lock:
            self._assignment -= partitions
            # The new owner reports these; a stale copy here would win Prometheus' max per partition.
            for partition in partitions:
                self.observer.forget_lag(partition.topic, partition.partition)
        self._paused = False
        self._joined = False  # until the next assignment arrives
        self._publish_state()
        return offsets

    def assign(self, partitions: set[Partition]) -> None:
        """Start owning partitions (positions come from the group's committed offsets)."""
        log.info("partitions assigned: %s", sorted(partitions))
        self._tracker.forget(partitions)
        with self._lag_lock:
            self._assignment |= partitions
        self._paused = False
        self._joined = True
        self._answered()  # the group's join and sync round trips just worked

    # --------------------------------------------------------------- shutdown

    def _finish(self) -> None:
        """Stopping: finish the in-flight batch, commit, leave the buffer for the next owner."""
        if self._consumer is None or self._producer is None:
            return
        try:
            self._complete_inflight(start_next=False)
            self._checkpoint()
        except (KafkaError, DeliveryFailed) as error:
            log.warning("shutdown: could not finish the in-flight batch (%s); it will be replayed", error)
        # Buffered records stay "pending", so any later commit (on revocation at close) stops before them.
        log.info(
            "stopped: consumed %(consumed)d, scored %(scored)d, invalid %(invalid)d, commits %(commits)d",
            self.stats,
        )


def producer_is_broken(producer: Any) -> bool:
    """Whether kafka-python put the producer in a fatal state, in which it fails every record for good."""
    # No public API says so; this is the state kafka-python's own sender checks (absent: not broken).
    manager = getattr(producer, "_transaction_manager", None)
    has_fatal_error = getattr(manager, "has_fatal_error", None)
    return bool(has_fatal_error is not None and has_fatal_error())


def close_producer(producer: Any) -> None:
    """Close a producer at once; records it still holds unacknowledged are failed, not waited for."""
    try:
        producer.close(timeout=0)
        return
    except KafkaError:
        pass  # kafka-python's close() flushes first, and raises while records are unacknowledged
    # Stop its I/O thread, which fails those records (they are uncommitted, so they are replayed). Left
    # open, the producer's __del__ would retry the close at exit and print a traceback.
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        sender.force_close()
        sender.join(PRODUCER_CLOSE_JOIN_S)
    try:
        producer.close(timeout=0)
    except KafkaError as error:
        log.warning("producer close: %s", error)


class _Rebalance(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """Commits finished work when partitions are revoked; kafka-python awaits these on its IO thread."""

    def __init__(self, loop: StreamLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        """Finish the in-flight batch and commit before the partitions move."""
        partitions = {Partition(tp.topic, tp.partition) for tp in revoked}
        offsets = self.loop.revoke(partitions, lost=False)
        if offsets and self.loop._consumer is not None:
            try:
                await self.loop._consumer.commit_async(offsets)
                self.loop.observer.committed(len(offsets))
            except Exception as error:
                log.warning("commit on revocation failed: %s", error)

    async def on_partitions_lost(self, lost: set[Any]) -> None:
        """Evicted from the group: the new owner replays; drop local state."""
        self.loop.revoke({Partition(tp.topic, tp.partition) for tp in lost}, lost=True)

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        """Record the new assignment."""
        self.loop.assign({Partition(tp.topic, tp.partition) for tp in assigned})
