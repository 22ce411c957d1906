"""The monitor stage: news.scored -> Monitor (windows, baselines) -> Prometheus gauges + news.windows.

State is checkpointed atomically to ``<state_dir>/monitor.json`` every ``checkpoint_interval`` and on
shutdown, and restored on start; offsets of news.scored are committed only after the checkpoint that
covers them is saved, so a crash replays (and the monitor's id dedupe absorbs) rather than loses.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2
from prometheus_client import CollectorRegistry, Counter, Gauge

from finsent.config import ServiceConfig
from finsent.consumer_stage import ConsumerStage
from finsent.scored_records import parse_scored
from finsent.windows_sink import KafkaWindowsSink, WindowsSink, windows_records
from ingest.observer import STREAM_ERROR_KINDS
from monitor import (
    Monitor,
    MonitorConfig,
    WindowSnapshot,
    load_checkpoint,
    remove_stale_temp_files,
    save_checkpoint,
)
from monitor.metrics import MonitorMetrics

log = logging.getLogger("finsent.monitor_stage")

CHECKPOINT_FILE = "monitor.json"
CLOCK_KEY = "stage_clock"
# While nothing arrives only the clock moves; it is saved alone here instead of rewriting monitor.json
# (tens of MB with a full dedupe memory) every checkpoint_interval.
CLOCK_FILE = "monitor.clock.json"


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
        super().__init__(kafka, config.output_topic, registry=registry)
        self.sink: WindowsSink = sink or KafkaWindowsSink(
            replace(kafka, client_id=f"{config.client_id}-monitor"), config.windows_topic
        )
        self.config = config
        self.monitor_config: MonitorConfig = config.monitor_config()
        self.checkpoint_path: Path = config.state_dir / CHECKPOINT_FILE
        self.clock_path: Path = config.state_dir / CLOCK_FILE
        self._wall = wall
        self._monotonic = monotonic
        self.clock = MonitorClock(monotonic)
        self.monitor = self._restore()
        self.metrics = MonitorMetrics(registry)
        self.metrics.declare_topics(self.monitor.topics())
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
        for kind in STREAM_ERROR_KINDS:  # at 0 from the start, so rate() sees the first failure
            self.errors.labels(kind=kind)
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
        stale = sum(remove_stale_temp_files(path) for path in (self.checkpoint_path, self.clock_path))
        if stale:
            log.info("monitor stage: removed %d temporary file(s) of a save that was cut short", stale)
        try:
            state = load_checkpoint(self.checkpoint_path)
        except ValueError as error:
            raise RuntimeError(f"cannot restore the monitor: {error}") from None
        if state is None:
            log.info("monitor stage: no checkpoint at %s; starting empty", self.checkpoint_path)
            monitor, saved_clock = Monitor(self.monitor_config), None
        else:
            try:
                monitor = Monitor.from_state(state, self.monitor_config)
                saved_clock = _saved_clock(state.get(CLOCK_KEY))
            except ValueError as error:
                raise RuntimeError(
                    f"cannot restore the monitor: checkpoint {self.checkpoint_path}: {error}"
                ) from None
        idle_clock = self._restore_idle_clock()
        if idle_clock is not None and (saved_clock is None or idle_clock > saved_clock):
            saved_clock = idle_clock
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
        if state is None:
            return monitor
        log.info(
            "monitor stage: restored %s (topics %s, latest event time %s)",
            self.checkpoint_path,
            ", ".join(monitor.topics()) or "none",
            monitor.max_event_time,
        )
        return monitor

    def _restore_idle_clock(self) -> float | None:
        """The clock saved alone while idle, if any; a damaged file only loses idle time, so it is skipped."""
        try:
            state = load_checkpoint(self.clock_path)
            return None if state is None else _saved_clock(state.get(CLOCK_KEY))
        except ValueError as error:
            log.warning("monitor stage: ignoring %s: %s", self.clock_path, error)
            return None

    def save_clock(self) -> None:
        """Save only the monitor clock (nothing new was handled since the last checkpoint)."""
        now = self.clock.now()
        save_checkpoint(self.clock_path, {CLOCK_KEY: now})
        self._checkpointed_clock = now
        self._last_checkpoint = self._monotonic()

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
            now = self._wall()
            if not self.monitor.too_far_ahead(fields.event_time, now):
                # A record stamped 2099 does not move event time: it neither triggers an evaluation nor
                # sets where the next one is due.
                self._evaluate_if_event_time_passed(fields.event_time)
            observation = self.monitor.observe(
                fields.id,
                fields.topic,
                fields.sentiment,
                fields.p_negative,
                fields.event_time,
                fields.headline,
                now=now,
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
        if moment - self._last_checkpoint >= self.config.checkpoint_interval:
            if self._dirty:
                self.checkpoint()
            elif self.clock.now() != self._checkpointed_clock:
                # An idle stream still moves the clock: saving it keeps evaluations monotonic across a restart.
                self.save_clock()

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
        assigned = {tp.partition for tp in self.owned_partitions() if tp.topic == self.topic}
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
            self.on_error("produce")
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
            self.on_error("produce")
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
        super().on_error(kind)
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
