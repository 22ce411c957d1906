"""Shared skeleton of the monitor and alerts stages: one consumer-group member with manual commits."""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from finsent.stage_health import StageHealth
from ingest import KafkaSettings, consumer_config
from ingest.broker_health import BrokerHealth
from ingest.loop import Backoff
from ingest.offsets import Partition
from ingest.stalled_join import rejoin_if_stalled

log = logging.getLogger("finsent.stages")

HEALTH_REPORT_INTERVAL_S = 1.0


class ConsumerStage(ABC):
    """Reads one topic in a consumer group; subclasses handle records, tick, and say when to commit.

    Offsets are committed only through :meth:`commit_handled`, which subclasses call once whatever the
    handled records changed is durable (a checkpoint, a database transaction): at-least-once.
    """

    name = "stage"

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        *,
        max_poll_records: int = 500,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.max_poll_records = max_poll_records
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards positions: rebalance callbacks run on the IO thread
        self._consumer: Any = None
        self._positions: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        # Partitions owned as the rebalance callbacks tell it. Not consumer.assignment(): under the eager
        # protocol kafka-python keeps revoked partitions there until the new assignment arrives.
        self._owned: set[TopicPartition] = set()
        self._backoff = Backoff(0.5, 15.0)
        self._last_poll_ok = False
        self.failed = False
        # kafka-python's poll() does not raise while the broker is gone: readiness needs round trips.
        self._broker = BrokerHealth(time.monotonic)
        self._health = None if registry is None else StageHealth.of(registry, self.name)
        if self._health is not None:
            # Read at each scrape: a stage that lost its broker shows 0 without waiting for a poll.
            self._health.ready.labels(stage=self.name).set_function(lambda: 1.0 if self.ready else 0.0)
        self._last_health_report = -float("inf")

    # ------------------------------------------------------------- subclass hooks

    @abstractmethod
    def handle(self, record: Any) -> None:
        """Apply one consumed record (must not raise for bad input: count and log it)."""

    @abstractmethod
    def tick(self) -> None:
        """Periodic work between polls (evaluation, checkpoints)."""

    @abstractmethod
    def finish(self) -> None:
        """Stopping: make everything handled durable and commit it."""

    def on_error(self, kind: str) -> None:
        """Count a recoverable failure of the given kind (connect, broker, commit, produce).

        Subclasses count it in their own family too, and call this.
        """
        if self._health is not None:
            self._health.stream_errors.labels(stage=self.name, kind=kind).inc()

    # ------------------------------------------------------------------ control

    def request_stop(self) -> None:
        """Finish, persist, commit and return from run() (safe from a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once a stop was requested."""
        return self._stop.is_set()

    @property
    def ready(self) -> bool:
        """Connected, with partitions assigned, and a broker round trip worked in the last 15 s."""
        consumer = self._consumer
        if consumer is None or not self._last_poll_ok or not self._broker.ok:
            return False
        try:
            return bool(consumer.assignment())
        except Exception:  # a closing client; readiness is best effort
            return False

    def run(self) -> None:
        """Connect (retrying with backoff) and serve until stopped, then finish and close."""
        try:
            while not self._stop.is_set():
                if self._consumer is None and not self._connect():
                    continue
                try:
                    self._serve()
                except (KafkaError, OSError) as error:
                    self.on_error("broker")
                    self._last_poll_ok = False
                    delay = self._backoff.next_delay()
                    log.warning("%s stage: broker error %s; retrying in %.1fs", self.name, error, delay)
                    self._stop.wait(delay)
            if self._consumer is not None:
                self.finish()
        except Exception:
            self.failed = True
            raise
        finally:
            self._close()

    # ----------------------------------------------------------------- plumbing

    def _connect(self) -> bool:
        try:
            consumer = KafkaConsumer(**consumer_config(self.kafka, self.max_poll_records))
            consumer.subscribe([self.topic], listener=_Listener(self))
            self._consumer = consumer
        except (KafkaError, OSError) as error:
            self.on_error("connect")
            delay = self._backoff.next_delay()
            log.warning(
                "%s stage: cannot connect to %s (%s); retrying in %.1fs",
                self.name,
                self.kafka.bootstrap_servers,
                error,
                delay,
            )
            self._stop.wait(delay)
            return False
        log.info("%s stage: reading %s as group %s", self.name, self.topic, self.kafka.group_id)
        return True

    def _serve(self) -> None:
        while not self._stop.is_set():
            batches = self._consumer.poll(timeout_ms=200, max_records=self.max_poll_records)
            self._last_poll_ok = True
            if rejoin_if_stalled(self._consumer):
                log.warning(
                    "%s stage: the group join finished without an assignment; joining again", self.name
                )
            self._backoff.reset()
            if batches:  # records came back: the broker answered
                self._broker.answered()
            elif self._broker.probe_due(time.monotonic()):
                self._probe_broker()
            for batch in batches.values():
                for record in batch:
                    self.handle(record)
                    with self._lock:
                        self._positions[TopicPartition(record.topic, record.partition)] = record.offset + 1
            # Not under the lock: tick may commit, and a commit may wait on the IO thread's listener.
            self.tick()
            self._report_health()

    def _probe_broker(self) -> None:
        """Nothing came back lately: ask the broker for end offsets, so readiness reflects whether it answers."""
        with self._lock:
            owned = sorted(Partition(tp.topic, tp.partition) for tp in self._owned)
        if self._broker.probe(self._consumer, owned or [Partition(self.topic, 0)]):
            self._broker.answered()
        else:
            self._broker.unanswered()
            self.on_error("broker")

    def _report_health(self) -> None:
        """Every second: the lag of each owned partition behind the records handled."""
        now = time.monotonic()
        if self._health is None or now - self._last_health_report < HEALTH_REPORT_INTERVAL_S:
            return
        self._last_health_report = now
        with self._lock:
            handled = {tp: self._positions.get(tp) for tp in self._owned}
        for tp, position in handled.items():
            try:
                # Nothing handled yet from this partition: where the group's commit put the consumer.
                position = self._consumer.position(tp, timeout_ms=0) if position is None else position
                high = self._consumer.highwater(tp)  # known after the first fetch response
            except KafkaError as error:  # e.g. revoked meanwhile on the IO thread
                log.debug("%s stage: no lag for %s: %s", self.name, tp, error)
                continue
            if position is not None and high is not None:
                self._health.lag_messages.labels(topic=tp.topic, partition=str(tp.partition)).set(
                    max(0, high - position)
                )

    def handled_positions(self) -> dict[TopicPartition, int]:
        """Next offset per owned partition after the records handled so far."""
        with self._lock:
            return dict(self._positions)

    def commit_handled(self, positions: dict[TopicPartition, int]) -> None:
        """Commit positions taken by :meth:`handled_positions` (once what they cover is durable)."""
        consumer = self._consumer
        if consumer is None:
            return
        with self._lock:
            owned = set(self._positions)
            todo = {
                tp: OffsetAndMetadata(pos, "", -1)
                for tp, pos in positions.items()
                if tp in owned and self._committed.get(tp) != pos
            }
        if not todo:
            return
        try:
            consumer.commit(todo)
        except (KafkaError, OSError, AssertionError) as error:
            # What they cover is durable; a lost commit only means a replay (deduplicated) later.
            self.on_error("commit")
            log.warning(
                "%s stage: commit failed (%s); a later commit or a replay covers it", self.name, error
            )
            return
        self._broker.answered()
        with self._lock:
            self._committed.update({tp: meta.offset for tp, meta in todo.items()})

    def revoked(self, partitions: set[TopicPartition]) -> None:
        """Partitions moved away: forget their positions (the next owner replays from the last commit)."""
        with self._lock:
            self._owned -= partitions
            for tp in partitions:
                self._positions.pop(tp, None)
                self._committed.pop(tp, None)
        if self._health is not None:
            for tp in partitions:
                self._health.forget_lag(tp.topic, tp.partition)

    def assigned(self, partitions: set[TopicPartition]) -> None:
        """Partitions handed to this member by the rebalance that just completed."""
        self._broker.answered()  # the group join completed
        with self._lock:
            self._owned |= partitions

    def owned_partitions(self) -> set[TopicPartition]:
        """Partitions assigned and not revoked since: empty while a rebalance is under way."""
        with self._lock:
            return set(self._owned)

    def _close(self) -> None:
        self._last_poll_ok = False
        with self._lock:
            self._owned.clear()
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception as error:  # closing is best effort
                log.warning("%s stage: consumer close: %s", self.name, error)
            self._consumer = None


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Drops positions of partitions that move; nothing blocking runs on the client's IO thread."""

    def __init__(self, stage: ConsumerStage) -> None:
        self.stage = stage

    def on_partitions_revoked(self, revoked: set[Any]) -> None:
        """Forget the revoked partitions' positions."""
        self.stage.revoked(set(revoked))

    def on_partitions_assigned(self, assigned: set[Any]) -> None:
        """Record the new partitions; positions come from the group's committed offsets."""
        self.stage.assigned(set(assigned))
        log.info("%s stage: partitions assigned: %s", self.stage.name, sorted(map(str, assigned)))
