"""The alerts stage: news.windows -> AlertEngine -> Dispatcher (SQLite outbox) -> webhook / Kafka / Alertmanager.

Each window record (one topic at one monitor tick) is evaluated; the resulting events and the engine's
state are written in one SQLite transaction, and only then are the records' offsets committed. The
engine state is restored from that database on start, so a restart neither forgets a firing alert nor
fires it again; the outbox's idempotency keys absorb notifications a replay re-emits.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from alerts import (
    AlertEngine,
    AlertEvent,
    AlertMetrics,
    Dispatcher,
    Rule,
    RulesError,
    Subscription,
    SubscriptionsError,
    load_rules,
    load_subscriptions,
)
from alerts.rules import check_windows
from finsent.config import ServiceConfig
from finsent.consumer_stage import ConsumerStage
from finsent.errors import UsageError, first_line
from ingest import common_config
from ingest.observer import STREAM_ERROR_KINDS
from monitor import OTHER_TOPIC, WindowSnapshot, window_label

# What SQLite says of a file that is not a usable database (not of a full disk or a read-only folder).
DAMAGE_WORDS = ("not a database", "malformed", "corrupt")
log = logging.getLogger("finsent.alerts_stage")

DATABASE_FILE = "alerts.sqlite"
COMMIT_INTERVAL_S = 1.0
FOREIGN_LOG_INTERVAL_S = 60.0


def load_alert_files(config: ServiceConfig) -> tuple[list[Rule], list[Subscription]]:
    """Rules and subscriptions the settings name (none: empty); UsageError with the file's message."""
    rules: list[Rule] = []
    subscriptions: list[Subscription] = []
    try:
        if config.rules is not None:
            rules = load_rules(config.rules)
            windows = [window_label(h) for h in config.monitor_config().horizons]
            check_windows(rules, windows, str(config.rules))
        if config.subscriptions is not None:
            own_topics = (config.input_topic, config.output_topic, config.dlq_topic, config.windows_topic)
            subscriptions = load_subscriptions(config.subscriptions, pipeline_topics=own_topics)
    except (RulesError, SubscriptionsError) as error:
        raise UsageError(str(error)) from None
    return rules, subscriptions


def parse_windows_record(value: bytes | None) -> tuple[float, list[WindowSnapshot]]:
    """Decode a news.windows value into (now, snapshots); ValueError when malformed."""
    if value is None:
        raise ValueError("empty record")
    try:
        data = json.loads(value)
        now = float(data["now"])
        snapshots = [WindowSnapshot.from_dict(item) for item in data["windows"]]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"malformed window record: {type(error).__name__}: {error}") from None
    return now, snapshots


class AlertsStage(ConsumerStage):
    """Consumer group ``<group_id>-alerts`` on the windows topic; delivers in the background."""

    name = "alerts"

    def __init__(
        self,
        config: ServiceConfig,
        registry: CollectorRegistry,
        rules: Sequence[Rule],
        subscriptions: Sequence[Subscription],
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        kafka = replace(config.kafka_settings(), group_id=f"{config.group_id}-alerts")
        super().__init__(kafka, config.windows_topic, registry=registry)
        self.config = config
        self.database: Path = config.state_dir / DATABASE_FILE
        self.database.parent.mkdir(parents=True, exist_ok=True)
        self.metrics = AlertMetrics(registry)
        self.metrics.declare(rules, subscriptions)
        try:
            self.dispatcher = Dispatcher(
                list(subscriptions),
                self.database,
                kafka_bootstrap=config.bootstrap_servers,
                kafka_config={
                    key: value
                    for key, value in common_config(
                        replace(kafka, client_id=f"{config.client_id}-alerts")
                    ).items()
                    if key != "bootstrap_servers"
                },
                observer=self.metrics,
            )
        except sqlite3.DatabaseError as error:
            raise self._damaged(error) from None
        try:
            self.engine = AlertEngine(rules, state=self.dispatcher.load_engine_state())
        except (sqlite3.DatabaseError, ValueError) as error:
            self.dispatcher.close()
            raise self._damaged(error) from None
        self.malformed = Counter(
            "finsent_alerts_malformed_records",
            "Window records the alerts stage could not use (logged, skipped)",
            registry=registry,
        )
        self.stage_errors = Counter(
            "finsent_alerts_stage_errors",
            "Recoverable alerts stage failures, by kind",
            ["kind"],
            registry=registry,
        )
        for kind in STREAM_ERROR_KINDS:  # at 0 from the start, so rate() sees the first failure
            self.stage_errors.labels(kind=kind)
        # The monitor publishes the model's labels and "other" only; anything else on the windows topic
        # is another producer's, and evaluating it would grow alert state and series without bound.
        self.known_topics = frozenset(config.monitor_config().topics or ()) | {OTHER_TOPIC}
        self.foreign = Counter(
            "finsent_alerts_foreign_topic_records",
            "Window records for a topic the monitor never publishes (another producer's; skipped)",
            registry=registry,
        )
        self._foreign_logged_at = -math.inf
        self._monotonic = monotonic
        self._last_commit = monotonic()
        self._recorded_state: dict[str, Any] = self.engine.to_state()
        self.metrics.update(self.engine.active())
        active = self.engine.active()
        log.info(
            "alerts stage: %d rules, %d subscriptions; restored %d active alerts from %s",
            len(self.engine.rules),
            len(subscriptions),
            len(active),
            self.database,
        )

    def _damaged(self, error: Exception) -> RuntimeError:
        # As the monitor's unusable checkpoint: the stage runner makes it one line naming state_dir, exit 2.
        problem = f"cannot restore the alerts stage: {self.database}: {first_line(error)}"
        if not isinstance(error, ValueError) and not any(word in str(error) for word in DAMAGE_WORDS):
            return RuntimeError(problem)  # e.g. a full disk or a read-only folder: the file is fine
        return RuntimeError(
            f"{problem}; if the file is damaged, move it aside (with any -wal and -shm files next to it) "
            "to start with an empty outbox"
        )

    def handle(self, record: Any) -> None:
        """Evaluate one topic's windows; store events and engine state in one transaction."""
        try:
            now, snapshots = parse_windows_record(record.value)
        except ValueError as error:
            self.malformed.inc()
            log.warning(
                "alerts stage: skipping %s[%d]@%d: %s", record.topic, record.partition, record.offset, error
            )
            return
        known = [snapshot for snapshot in snapshots if snapshot.topic in self.known_topics]
        if len(known) < len(snapshots):
            self._skip_foreign(record, snapshots)
            if not known:
                return
        events = self.engine.evaluate(known, now=now)
        state = self.engine.to_state()
        # The per-topic "evaluated up to" marks move with every record; saving them alone would cost an
        # fsync per record for nothing: a record replayed against unchanged alert states changes nothing.
        if events or state["alerts"] != self._recorded_state["alerts"]:
            self.dispatcher.record(events, state)
            self._recorded_state = state
        if events:
            self.metrics.transitions(events)
            for event in events:
                self._log_event(event)
        self.metrics.update(self.engine.active())

    def _skip_foreign(self, record: Any, snapshots: Sequence[WindowSnapshot]) -> None:
        self.foreign.inc()
        moment = self._monotonic()
        if moment - self._foreign_logged_at >= FOREIGN_LOG_INTERVAL_S:  # one line a minute, not per record
            self._foreign_logged_at = moment
            topic = next(s.topic for s in snapshots if s.topic not in self.known_topics)
            log.warning(
                "alerts stage: skipping windows of topic %r at %s[%d]@%d: not a topic the monitor publishes "
                "(another producer on %s?); counted in finsent_alerts_foreign_topic_records_total",
                topic[:80],
                record.topic,
                record.partition,
                record.offset,
                record.topic,
            )

    @staticmethod
    def _log_event(event: AlertEvent) -> None:
        log.info(
            "alert %s: %s on %s (%s) %s",
            event.status,
            event.rule,
            event.topic,
            event.severity,
            event.annotations.get("summary", ""),
        )

    def tick(self) -> None:
        """Commit what was handled (its alert events and state changes are durable once handle() returns)."""
        moment = self._monotonic()
        if moment - self._last_commit >= COMMIT_INTERVAL_S:
            self._last_commit = moment
            self.commit_handled(self.handled_positions())

    def finish(self) -> None:
        """Stopping: commit what was recorded."""
        self.commit_handled(self.handled_positions())

    def on_error(self, kind: str) -> None:
        """Count a recoverable failure."""
        super().on_error(kind)
        self.stage_errors.labels(kind=kind).inc()

    def run(self) -> None:
        """Deliver in the background while consuming; stop the dispatcher afterwards."""
        self.dispatcher.start()
        try:
            super().run()
        finally:
            self.dispatcher.stop()
