"""The consume -> validate -> micro-batch -> classify -> produce -> commit loop (at-least-once).

StreamLoop drives one consumer-group member. What it delegates lives beside it: ingest.classify (the
batch in the worker thread), ingest.sender (producing and awaiting acknowledgements), ingest.lag,
ingest.broker_health (readiness), ingest.producer_health (replacing a broken producer),
ingest.stopping and ingest.backoff.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from kafka import (
    AsyncConsumerRebalanceListener,
    KafkaConsumer,
    KafkaProducer,
    OffsetAndMetadata,
    TopicPartition,
)
from kafka.errors import KafkaError

from ingest.backoff import Backoff
from ingest.batcher import MicroBatcher
from ingest.broker_health import BrokerHealth
from ingest.classify import InFlight, Pending, classify_safely, start_classifying
from ingest.contract import Invalid, decode
from ingest.dlq import Source, utc_now_rfc3339
from ingest.kafka_config import KafkaSettings, consumer_config, output_request_limit, producer_config
from ingest.lag import measure_lag
from ingest.loop_settings import LoopSettings
from ingest.observer import NullObserver, Observer
from ingest.offsets import OffsetTracker, Partition
from ingest.producer_health import close_producer, replacement_reason
from ingest.scored import Classifier, usable_timestamp_ms
from ingest.sender import DeliveryFailed, Sender
from ingest.stalled_join import rejoin_if_stalled
from ingest.stopping import StopRequest

# Backoff, LoopSettings and classify_safely lived here before the split; other modules import them from here.
__all__ = ["Backoff", "LoopSettings", "StreamLoop", "classify_safely"]

log = logging.getLogger("ingest.loop")

# A commit waits at most this long (a lost commit only means a replay), so a stop is not held up by it.
COMMIT_TIMEOUT_MS = 10_000
# Closing: leaving the group waits at most this long.
CONSUMER_CLOSE_TIMEOUT_MS = 5_000


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
        self.stats = {"consumed": 0, "scored": 0, "invalid": 0, "commits": 0, "rewinds": 0}
        self._clock = clock
        self._stop = StopRequest(settings.shutdown_timeout_s, clock)
        self._batcher: MicroBatcher[Pending] = MicroBatcher(settings.max_batch, settings.max_wait_ms, clock)
        self._tracker = OffsetTracker()
        self._inflight: InFlight | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="classify")
        self._consumer: Any = None
        self._sender = Sender(settings, self.observer, self.stats, self._stop, clock, self._publish_state)
        self._assignment: set[Partition] = set()
        # Where each revoked partition must resume if the next assignment hands it back: kafka-python
        # keeps the fetch position of a partition a rebalance leaves with this member, which lies past
        # the buffered records revoke() drops.
        self._resume_at: dict[Partition, int] = {}
        # Guards the assignment against the rebalance callbacks (kafka-python's IO thread), so a lag
        # report never re-creates the series of a partition that was just revoked.
        self._assignment_lock = threading.Lock()
        self._paused = False
        self._joined = False
        self._broker = BrokerHealth(clock)
        # Set when run() dies of an unexpected error, or a stop cannot finish its last batch: closing
        # the consumer then commits nothing, so the records of a half-produced batch are replayed
        # rather than skipped.
        self._commit_nothing_on_close = False
        self._backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s)
        self._failed_recoveries = 0
        self._last_lag_report = float("-inf")
        self._last_idle_checkpoint = float("-inf")

    # ----------------------------------------------------------------- control

    def request_stop(self) -> None:
        """Ask the loop to finish the in-flight batch, commit and return (safe from a signal handler)."""
        self._stop.request()

    @property
    def ready(self) -> bool:
        """In the group, and the last broker round trip worked and is recent."""
        return self._joined and self._broker.ok

    def run(self) -> None:
        """Connect (retrying with backoff), serve until stopped, then shut down cleanly."""
        try:
            while not self._stop.requested:
                if (self._consumer is None or self._sender.producer is None) and not self._connect():
                    continue
                try:
                    self._serve()
                except (KafkaError, DeliveryFailed, OSError) as error:
                    self._recover(error)
            self._finish()
        except BaseException:
            self._commit_nothing_on_close = True
            raise
        finally:
            self._close()

    # ------------------------------------------------------------- connection

    def _connect(self) -> bool:
        """Create whichever client is missing; on failure back off and return False."""
        try:
            if self._sender.producer is None:
                limit = output_request_limit(self.settings.max_message_bytes)
                self._sender.producer = KafkaProducer(**producer_config(self.kafka, max_request_size=limit))
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
        self._sender.forget_outstanding()
        self.stats["rewinds"] += 1
        self._failed_recoveries += 1
        self._drop_stuck_producer()
        self._rewind()
        self._stop.wait(delay)

    def _drop_stuck_producer(self) -> None:
        """Close the producer if it is in a fatal state or keeps failing; run() connects a new one."""
        producer = self._sender.producer
        if producer is None:
            return
        why = replacement_reason(producer, self._failed_recoveries)
        if why is None:
            return
        log.warning("replacing the producer: %s", why)
        close_producer(producer)
        self._sender.producer = None
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
        if self._sender.producer is not None:
            # Everything worth waiting for was flushed already; what is left is never committed.
            close_producer(self._sender.producer)
            self._sender.producer = None
        self._joined = False
        self._publish_state()

    # ------------------------------------------------------------------ serve

    def _serve(self) -> None:
        while not self._stop.requested:
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
        if not self._joined and rejoin_if_stalled(self._consumer):
            log.warning("the group join finished without an assignment (a kafka-python stall); joining again")
        now = self._clock()
        if self._inflight is None and not self._batcher and now - self._last_idle_checkpoint > 0.2:
            self._last_idle_checkpoint = now
            self._checkpoint()
        if now - self._last_lag_report > 1.0:
            self._last_lag_report = now
            self._report_lag()
        if self._broker.probe_due(now):
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
        timestamp = usable_timestamp_ms(record.timestamp)
        result = decode(record.value, self.settings.max_message_bytes)
        if isinstance(result, Invalid):
            source = Source(record.topic, record.partition, record.offset, timestamp, record.key)
            self._sender.send_dead_letter(result, record.value, source)
        else:
            self._batcher.add(Pending(partition, record.offset, timestamp, result, record.value, record.key))
        self.stats["consumed"] += 1
        self.observer.consumed(1)

    def _start_batch(self) -> None:
        self._inflight = start_classifying(self._executor, self.classify, self._batcher.take())

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
                self._sender.send_dead_letter(result, pending.raw, pending.source())
            else:
                self._sender.send_scored(pending, result, scored_at)
        if start_next and not self._stop.requested and self._batcher.ready():
            self._start_batch()
        if checkpoint:
            self._checkpoint()

    def _drop_inflight(self) -> None:
        if self._inflight is not None:
            concurrent.futures.wait([self._inflight.future])
            self._inflight = None

    # ----------------------------------------------------------------- commit

    def _flush(self) -> None:
        """Block until every produced record is acknowledged; raise DeliveryFailed otherwise."""
        while self._sender.outstanding:  # again when a record refused for its size was replaced by a stand-in
            self._sender.await_acks()
            self._answered()
            self._failed_recoveries = 0

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
        if not self._stop.requested:
            return COMMIT_TIMEOUT_MS
        return max(1000, min(COMMIT_TIMEOUT_MS, int((self._stop.deadline - self._clock()) * 1000)))

    # ------------------------------------------------------------ backpressure

    def _apply_backpressure(self) -> None:
        full = len(self._batcher) >= self.settings.max_buffer
        partitions = [TopicPartition(*tp) for tp in list(self._assignment)]  # a copy: see _assignment_lock
        if full and not self._paused and partitions:
            self._consumer.pause(*partitions)
            self._paused = True
        elif not full and self._paused:
            self._consumer.resume(*partitions)
            self._paused = False
        self._publish_state()

    # ---------------------------------------------------------- lag, readiness

    def _report_lag(self) -> None:
        """Report every owned partition's lag: log end (high watermark) minus the committed offset."""
        with self._assignment_lock:
            owned = sorted(self._assignment)
        lags = measure_lag(self._consumer, self._tracker, owned)
        with self._assignment_lock:
            for partition, lag in lags.items():
                if partition in self._assignment:  # not revoked while it was measured
                    self.observer.lag(partition.topic, partition.partition, lag)

    def _probe_broker(self) -> None:
        """Nothing talked to the broker lately: ask it for end offsets, so readiness reflects it."""
        with self._assignment_lock:
            owned = sorted(self._assignment) or [Partition(self.settings.input_topic, 0)]
        if self._broker.probe(self._consumer, owned):
            self._answered()
        else:
            self._unanswered()

    def _answered(self) -> None:
        """A broker round trip worked."""
        self._broker.answered()
        self._backoff.reset()
        self._publish_state()

    def _unanswered(self) -> None:
        """A broker round trip failed: not ready until one works again."""
        self._broker.unanswered()
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
        # Where a partition handed back by this same rebalance resumes. Not after a lost membership:
        # kafka-python then drops every partition's state, so the next owner (maybe this member)
        # starts from the group's committed offsets, and a broker that lost its log (memory storage)
        # has no records at the old positions.
        resume: dict[Partition, int] = {}
        try:
            if lost or self._commit_nothing_on_close:
                self._drop_inflight()
                self._sender.forget_outstanding()
            else:
                # Runs on the consumer's IO thread: no blocking consumer calls here, only the producer.
                self._complete_inflight(start_next=False, checkpoint=False)
                positions = self._tracker.safe_positions(self._pending_offsets())
                self._flush()
                finished = {tp: pos for tp, pos in positions.items() if tp in partitions}
                todo = self._tracker.uncommitted(finished)
                offsets = {TopicPartition(*tp): OffsetAndMetadata(pos, "", -1) for tp, pos in todo.items()}
                resume = finished  # up to the first buffered record, which is dropped below
        except (KafkaError, DeliveryFailed) as error:
            log.warning(
                "could not finish the in-flight batch before revocation (it will be replayed): %s", error
            )
            self._sender.forget_outstanding()
            # Nothing was finished: replay from the last commit (or the first record polled).
            resume = {tp: pos for tp in partitions if (pos := self._tracker.replay_position(tp)) is not None}
        if lost:
            self._resume_at.clear()  # an earlier revocation's positions are void as well
        self._resume_at.update(resume)
        self._batcher.discard(lambda pending: pending.partition in partitions)
        self._tracker.forget(partitions)
        with self._assignment_lock:
            self._assignment -= partitions
            # The new owner reports these; a stale copy here would win Prometheus' max per partition.
            for partition in partitions:
                self.observer.forget_lag(partition.topic, partition.partition)
        self._paused = False
        self._joined = False  # until the next assignment arrives
        self._publish_state()
        return offsets

    def assign(self, partitions: set[Partition]) -> None:
        """Start owning partitions: from the group's committed offsets, or where a revocation left off.

        A partition the rebalance leaves with this member keeps kafka-python's fetch position, past the
        records revoke() dropped from the buffer; it is sought back to the first record not finished.
        """
        log.info("partitions assigned: %s", sorted(partitions))
        resume, self._resume_at = self._resume_at, {}
        for partition in sorted(partitions & resume.keys()):
            try:
                self._consumer.seek(TopicPartition(*partition), resume[partition])
            except (KafkaError, AssertionError, ValueError) as seek_error:
                log.warning("seek %s to %d failed: %s", partition, resume[partition], seek_error)
        self._tracker.forget(partitions)
        with self._assignment_lock:
            self._assignment |= partitions
        self._paused = False
        self._joined = True
        self._answered()  # the group's join and sync round trips just worked

    # --------------------------------------------------------------- shutdown

    def _finish(self) -> None:
        """Stopping: finish the in-flight batch, commit, leave the buffer for the next owner."""
        if self._consumer is None or self._sender.producer is None:
            return
        try:
            self._complete_inflight(start_next=False)
            self._checkpoint()
        except (KafkaError, DeliveryFailed) as error:
            log.warning("shutdown: could not finish the in-flight batch (%s); it will be replayed", error)
            self._commit_nothing_on_close = True
        # Buffered records stay "pending", so any later commit (on revocation at close) stops before them.
        log.info(
            "stopped: consumed %(consumed)d, scored %(scored)d, invalid %(invalid)d, commits %(commits)d",
            self.stats,
        )


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
