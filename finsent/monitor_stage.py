"""The monitor stage: news.scored -> Monitor (windows, baselines) -> Prometheus gauges + news.windows.

State is checkpointed atomically to ``<state_dir>/monitor.json`` every ``checkpoint_interval`` and on
shutdown, and restored on start; offsets of news.scored are committed only after the checkpoint that
covers them is saved, so a crash replays (and the monitor's id dedupe absorbs) rather than loses.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2
from prometheus_client import CollectorRegistry, Counter, Gauge

from finsent.config import ServiceConfig
from finsent.consumer_stage import ConsumerStage
from ingest import KafkaSettings, loads_strict, parse_rfc3339, producer_config
from monitor import Monitor, MonitorConfig, WindowSnapshot, load_checkpoint, save_checkpoint
from monitor.metrics import MonitorMetrics

log = logging.getLogger("finsent.monitor_stage")

CHECKPOINT_FILE = "monitor.json"
CLOCK_KEY = "stage_clock"


class MonitorClock:
    """Event-time clock of the monitor: the latest event time plus the time elapsed since it advanced.

    A historical replay moves it as fast as its events; an idle stream moves it with elapsed time,
    so windows empty and alerts resolve even when nothing arrives. Elapsed time is monotonic, so a
    step of the wall clock (NTP, a resumed VM) neither jumps it ahead nor moves it back.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._anchor: float | None = None
        self._anchored_at = 0.0

    def advance(self, event_time: float | None) -> None:
        """Note the monitor's latest event time; the clock jumps forward to it when it is ahead."""
        if event_time is None:
            return
        current = self.now()
        if current is None or event_time > current:
            self._anchor = event_time
            self._anchored_at = self._monotonic()

    def now(self) -> float | None:
        """The clock's reading, None before any event time was seen."""
        if self._anchor is None:
            return None
        return self._anchor + max(0.0, self._monotonic() - self._anchored_at)


@lru_cache(maxsize=1024)
def _key_hash(key: str) -> int:
    return int(murmur2(key.encode("utf-8"))) & 0x7FFFFFFF


def key_partition(key: str, partitions: Sequence[int]) -> int:
    """The partition kafka-python's default partitioner (murmur2, as Java's) picks for ``key``."""
    ordered = sorted(partitions)
    return ordered[_key_hash(key) % len(ordered)]


def _saved_clock(value: object) -> float | None:
    """The checkpoint's monitor clock (None in a checkpoint saved before any event); ValueError if bad."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{CLOCK_KEY} must be a finite number, got {value!r}")
    return float(value)


def event_time_of(record: Mapping[str, Any], kafka_timestamp_ms: int | None) -> float:
    """Seconds since the epoch: the record's published_at, else the Kafka timestamp; ValueError if none."""
    published = record.get("published_at")
    if isinstance(published, str) and published:
        moment = parse_rfc3339(published)
        if moment is None:
            raise ValueError(f"published_at {published[:64]!r} is not RFC 3339 (with a UTC offset)")
        return moment.timestamp()
    if published is not None and not isinstance(published, str):
        raise ValueError(f"published_at must be a string, got {type(published).__name__}")
    if kafka_timestamp_ms is not None and kafka_timestamp_ms >= 0:
        return kafka_timestamp_ms / 1000.0
    raise ValueError("no published_at and no Kafka timestamp")


@dataclass(frozen=True)
class ScoredFields:
    """What the monitor needs from one scored record."""

    id: str
    topic: str
    sentiment: str
    p_negative: float
    event_time: float
    headline: str


def parse_scored(value: bytes | None, kafka_timestamp_ms: int | None) -> ScoredFields:
    """Decode a news.scored value; ValueError naming the problem when it is malformed."""
    if value is None:
        raise ValueError("empty record")
    try:
        record = loads_strict(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ValueError(f"not JSON: {error}") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    message_id, topic, sentiment = record.get("id"), record.get("topic"), record.get("sentiment")
    for name, field in (("id", message_id), ("topic", topic), ("sentiment", sentiment)):
        if not isinstance(field, str) or not field:
            raise ValueError(f"{name} missing or not a string")
    scores = record.get("sentiment_scores")
    p_negative = scores.get("negative") if isinstance(scores, dict) else None
    if isinstance(p_negative, bool) or not isinstance(p_negative, int | float):
        raise ValueError("sentiment_scores.negative missing or not a number")
    headline = record.get("headline") or record.get("text") or ""
    return ScoredFields(
        id=str(message_id),
        topic=str(topic),
        sentiment=str(sentiment),
        p_negative=float(p_negative),
        event_time=event_time_of(record, kafka_timestamp_ms),
        headline=str(headline),
    )


def windows_records(snapshots: list[WindowSnapshot], now: float) -> list[tuple[str, dict[str, Any]]]:
    """One (key, value) per topic for news.windows: {"topic", "now", "windows": [snapshot dicts]}."""
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for snap in snapshots:
        by_topic.setdefault(snap.topic, []).append(_finite(snap.to_dict()))
    return [(topic, {"topic": topic, "now": now, "windows": windows}) for topic, windows in by_topic.items()]


def _finite(data: dict[str, Any]) -> dict[str, Any]:
    # JSON has no NaN/infinity; a non-finite statistic is reported as absent.
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}


class WindowsSink(Protocol):
    """Where window snapshot records go (news.windows in production)."""

    def send(self, key: str, value: dict[str, Any]) -> None:
        """Queue one record."""

    def flush(self) -> None:
        """Wait until every queued record is acknowledged; raise on failure."""

    def close(self) -> None:
        """Release the connection."""


class KafkaWindowsSink:
    """Produces window records (JSON, keyed by topic label); the producer is created on first use."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self._producer: Any = None

    def send(self, key: str, value: dict[str, Any]) -> None:
        """Queue one record."""
        if self._producer is None:
            self._producer = KafkaProducer(**producer_config(self.kafka))
        payload = json.dumps(value, allow_nan=False).encode("utf-8")
        self._producer.send(self.topic, key=key.encode("utf-8"), value=payload)

    def flush(self) -> None:
        """Wait for the acknowledgements."""
        if self._producer is not None:
            self._producer.flush(timeout=30)

    def close(self) -> None:
        """Close the producer."""
        if self._producer is not None:
            self._producer.close(timeout=10)
            self._producer = None


class MonitorStage(ConsumerStage):
    """Consumer group ``<group_id>-monitor`` on the scored topic; snapshots every ``eval_interval``."""

    name = "monitor"

    def __init__(
        self,
        config: ServiceConfig,
        registry: CollectorRegistry,
        *,
        sink: WindowsSink | None = None,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        kafka = replace(config.kafka_settings(), group_id=f"{config.group_id}-monitor")
        super().__init__(kafka, config.output_topic)
        self.sink: WindowsSink = sink or KafkaWindowsSink(
            replace(kafka, client_id=f"{config.client_id}-monitor"), config.windows_topic
        )
        self.config = config
        self.monitor_config: MonitorConfig = config.monitor_config()
        self.checkpoint_path: Path = config.state_dir / CHECKPOINT_FILE
        self._wall = wall
        self._monotonic = monotonic
        self.clock = MonitorClock(monotonic)
        self.monitor = self._restore()
        self.metrics = MonitorMetrics(registry)
        self.malformed = Counter(
            "finsent_monitor_malformed_records",
            "Scored records the monitor could not use (logged, skipped)",
            registry=registry,
        )
        self.checkpoints = Counter(
            "finsent_monitor_checkpoints", "Monitor state checkpoints saved", registry=registry
        )
        self.windows_produced = Counter(
            "finsent_monitor_window_records",
            "Per-topic window snapshot records produced for the alerts stage",
            registry=registry,
        )
        self.errors = Counter(
            "finsent_monitor_errors",
            "Recoverable monitor stage failures, by kind",
            ["kind"],
            registry=registry,
        )
        self.clock_gauge = Gauge(
            "finsent_monitor_clock_timestamp_seconds",
            "Event-time clock the monitor evaluates windows at",
            registry=registry,
        )
        self._unflushed = 0
        self._last_eval = -math.inf  # monotonic time of the last evaluation
        self._last_eval_clock: float | None = None  # monitor clock of the last evaluation
        # Windows are whole buckets, so evaluating more often than a bucket in event time changes nothing.
        self._eval_step = max(config.eval_interval, float(self.monitor_config.bucket_seconds))
        self._last_checkpoint = monotonic()
        self._checkpointed_clock = self.clock.now()
        self._dirty = False
        self._published: set[str] = set()  # topics of the last evaluation, to drop their gauges later
        self._partitions: list[int] = []  # news.scored's partitions, from the consumer's metadata

    # ------------------------------------------------------------------- state

    def _restore(self) -> Monitor:
        """The monitor and clock saved in the checkpoint; RuntimeError naming the file if it is unusable."""
        try:
            state = load_checkpoint(self.checkpoint_path)
        except ValueError as error:
            raise RuntimeError(f"cannot restore the monitor: {error}") from None
        if state is None:
            log.info("monitor stage: no checkpoint at %s; starting empty", self.checkpoint_path)
            return Monitor(self.monitor_config)
        try:
            monitor = Monitor.from_state(state, self.monitor_config)
            saved_clock = _saved_clock(state.get(CLOCK_KEY))
        except ValueError as error:
            raise RuntimeError(
                f"cannot restore the monitor: checkpoint {self.checkpoint_path}: {error}"
            ) from None
        self.clock.advance(monitor.max_event_time)
        if saved_clock is not None:
            # The saved clock only carries idle time across the restart. One saved while the wall clock
            # was stepped ahead would keep every window ahead of the news for good (the clock never goes
            # back), so it is restored to the wall clock at most; events ahead of it still count above.
            wall = self._wall()
            if saved_clock > wall:
                log.warning(
                    "monitor stage: checkpoint clock %.0f is ahead of the wall clock %.0f; not restored beyond it",
                    saved_clock,
                    wall,
                )
            self.clock.advance(min(saved_clock, wall))
        log.info(
            "monitor stage: restored %s (topics %s, latest event time %s)",
            self.checkpoint_path,
            ", ".join(monitor.topics()) or "none",
            monitor.max_event_time,
        )
        return monitor

    def checkpoint(self) -> None:
        """Save the monitor state atomically, then commit the offsets it covers."""
        self._flush()
        positions = self.handled_positions()
        state = self.monitor.to_state()
        state[CLOCK_KEY] = self._checkpointed_clock = self.clock.now()
        save_checkpoint(self.checkpoint_path, state)
        self.checkpoints.inc()
        self._dirty = False
        self._last_checkpoint = self._monotonic()
        self.commit_handled(positions)

    # ----------------------------------------------------------------- records

    def handle(self, record: Any) -> None:
        """Observe one scored record; a malformed one is logged and counted, never fatal."""
        timestamp = record.timestamp if record.timestamp is not None and record.timestamp >= 0 else None
        try:
            fields = parse_scored(record.value, timestamp)
            self._evaluate_if_event_time_passed(fields.event_time)
            observation = self.monitor.observe(
                fields.id,
                fields.topic,
                fields.sentiment,
                fields.p_negative,
                fields.event_time,
                fields.headline,
                now=self._wall(),
            )
        except (ValueError, TypeError, OverflowError) as error:
            self.malformed.inc()
            log.warning(
                "monitor stage: skipping malformed record %s[%d]@%d: %s",
                record.topic,
                record.partition,
                record.offset,
                error,
            )
            return
        self.metrics.record(observation, fields.sentiment)
        self.clock.advance(self.monitor.max_event_time)
        self._dirty = True

    def _evaluate_if_event_time_passed(self, event_time: float) -> None:
        """Evaluate before a record that moves event time a step past the last evaluation.

        A backlog or a historical replay runs through event time much faster than the wall clock, so
        wall-clock ticks alone would sample its windows too coarsely for ``for`` durations to mean
        anything; this keeps a replay's evaluations as dense as the live run's.
        """
        if self._last_eval_clock is None:
            self._last_eval_clock = event_time
        elif event_time >= self._last_eval_clock + self._eval_step:
            self.evaluate()

    def tick(self) -> None:
        """Evaluate every eval_interval of wall time; flush; checkpoint every checkpoint_interval."""
        moment = self._monotonic()
        if moment - self._last_eval >= self.config.eval_interval:
            self.evaluate()
        self._flush()
        if moment - self._last_checkpoint >= self.config.checkpoint_interval and (
            self._dirty or self.clock.now() != self._checkpointed_clock
        ):
            # An idle stream still moves the clock: saving it keeps evaluations monotonic across a restart.
            self.checkpoint()

    def owned_topics(self) -> set[str]:
        """Topic labels this instance publishes: those whose news.scored partition is assigned to it.

        news.scored is keyed by topic label, so one partition holds all of a topic's records and only
        its owner may publish the topic; another instance's windows for it are empty. Without a
        consumer (not connected) there is no one to share with: every topic.
        """
        topics = self.monitor.topics()
        consumer = self._consumer
        if consumer is None:
            return set(topics)
        assigned = {tp.partition for tp in consumer.assignment() if tp.topic == self.topic}
        if not assigned:
            return set()
        try:
            self._partitions = sorted(consumer.partitions_for_topic(self.topic)) or self._partitions
        except (KafkaError, OSError) as error:
            log.warning("monitor stage: no partition metadata for %s (%s); using the last", self.topic, error)
        if not self._partitions:
            return set()
        return {topic for topic in topics if key_partition(topic, self._partitions) in assigned}

    def evaluate(self) -> list[WindowSnapshot]:
        """Snapshot every owned topic at the monitor clock, set the gauges, queue news.windows records."""
        self._last_eval = self._monotonic()
        now = self.clock.now()
        if now is None:
            return []
        self._last_eval_clock = now
        owned = self.owned_topics()
        if owned != self._published:
            # A rebalance moved partitions: stale series would show next to the new owner's.
            self.metrics.forget(self._published - owned)
            log.info(
                "monitor stage: publishing %d topics (added: %s; dropped: %s)",
                len(owned),
                ", ".join(sorted(owned - self._published)) or "none",
                ", ".join(sorted(self._published - owned)) or "none",
            )
            self._published = owned
        snapshots = self.monitor.snapshot(now, owned)
        self.metrics.publish(snapshots, self.monitor.counters, self.monitor.watermark)
        self.clock_gauge.set(now)
        self._send(windows_records(snapshots, now))
        return snapshots

    def _send(self, records: list[tuple[str, dict[str, Any]]]) -> None:
        if not records:
            return
        try:
            for key, value in records:
                self.sink.send(key, value)
        except (KafkaError, OSError, ValueError) as error:
            # Derived data: the next evaluation recomputes it, so a failed send is only a gap.
            self.errors.labels(kind="produce").inc()
            log.warning("monitor stage: producing window snapshots failed: %s", error)
            return
        self._unflushed += len(records)

    def _flush(self) -> None:
        """Wait for the queued window records' acknowledgements."""
        if not self._unflushed:
            return
        count, self._unflushed = self._unflushed, 0
        try:
            self.sink.flush()
        except (KafkaError, OSError) as error:
            self.errors.labels(kind="produce").inc()
            log.warning("monitor stage: flushing window snapshots failed: %s", error)
            return
        self.windows_produced.inc(count)

    def finish(self) -> None:
        """Stopping: one last evaluation and checkpoint (then the commit it covers)."""
        self.evaluate()
        self.checkpoint()
        log.info("monitor stage: stopped; %s", self.monitor.counters)

    def on_error(self, kind: str) -> None:
        """Count a recoverable failure."""
        self.errors.labels(kind=kind).inc()

    def run(self) -> None:
        """Serve until stopped; close the producer afterwards."""
        try:
            super().run()
        finally:
            try:
                self.sink.close()
            except Exception as error:  # best effort
                log.warning("monitor stage: producer close: %s", error)
