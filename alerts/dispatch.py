"""The Dispatcher: records notifications durably in the outbox and delivers them in a background thread."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from alerts.alertmanager import AlertmanagerSender
from alerts.delivery import DeliveryError, Sender, backoff_delay, jittered
from alerts.engine import AlertEvent
from alerts.kafka_sink import KafkaSender
from alerts.outbox import Outbox, OutboxRow
from alerts.subscriptions import Subscription
from alerts.webhook import WebhookSender

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0


class DeliveryObserver(Protocol):
    """Told about every delivery attempt's outcome and the outbox size (e.g. :class:`alerts.AlertMetrics`)."""

    def notification(self, subscription: str, kind: str, outcome: str) -> None:
        """One attempt ended: ``outcome`` is ``delivered``, ``retry`` or ``failed``."""

    def outbox_pending(self, count: int) -> None:
        """Rows waiting for delivery now."""


class Dispatcher:
    """Fans alert events out to matching subscriptions through a persistent SQLite outbox.

    Delivery is at least once per (subscription, notification key): a row is marked delivered only after
    the receiver acknowledged it, so a crash between the two sends it again, with the same
    ``Idempotency-Key`` for the receiver to drop. Rows of one alert on one subscription go out in order.
    """

    def __init__(
        self,
        subscriptions: Sequence[Subscription],
        db_path: Path,
        *,
        kafka_bootstrap: str | None = None,
        kafka_config: Mapping[str, Any] | None = None,
        observer: DeliveryObserver | None = None,
        clock: Callable[[], float] = time.time,
        senders: Mapping[str, Sender] | None = None,
        retention_s: float = 7 * 86400.0,
        poll_interval_s: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self._subscriptions = {s.name: s for s in subscriptions}
        if len(self._subscriptions) != len(subscriptions):
            raise ValueError("subscription names must be unique")
        self._senders: dict[str, Sender] = {"webhook": WebhookSender(), "alertmanager": AlertmanagerSender()}
        if kafka_bootstrap is not None:
            self._senders["kafka"] = KafkaSender(kafka_bootstrap, kafka_config)
        self._senders.update(senders or {})
        for subscription in subscriptions:
            if subscription.kind not in self._senders:
                raise ValueError(
                    f"subscription {subscription.name!r}: kind {subscription.kind!r} needs "
                    + ("kafka_bootstrap" if subscription.kind == "kafka" else "a sender")
                )
        self._outbox = Outbox(db_path)
        self._observer = observer
        self._clock = clock
        self._retention_s = retention_s
        self._poll_interval_s = poll_interval_s
        self._rng = rng or random.Random()
        self._last_prune = -float("inf")
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._deliver_lock = threading.Lock()

    @property
    def outbox(self) -> Outbox:
        """The underlying outbox (inspection and tests)."""
        return self._outbox

    def record(self, events: Sequence[AlertEvent], engine_state: Mapping[str, Any]) -> None:
        """Queue each event for every matching subscription and save ``engine_state``, in one durable transaction.

        A notification key already queued for a subscription is ignored, so re-emitting events after a
        crash (the engine state was older than the outbox) does not notify twice.
        """
        rows = [(s.name, event) for event in events for s in self._subscriptions.values() if s.matches(event)]
        self._outbox.record(rows, engine_state, self._clock())
        if rows:
            self._wake.set()
        self._report_pending()

    def load_engine_state(self) -> dict[str, Any] | None:
        """The engine state that :meth:`record` saved last (None on a fresh outbox)."""
        return self._outbox.engine_state()

    def pending(self) -> int:
        """Notifications not yet delivered or given up on."""
        return self._outbox.counts()["pending"]

    def _report_pending(self) -> None:
        if self._observer is not None:
            self._observer.outbox_pending(self.pending())

    def _observe(self, subscription: Subscription, outcome: str) -> None:
        if self._observer is not None:
            self._observer.notification(subscription.name, subscription.kind, outcome)

    def deliver_due(self) -> int:
        """One synchronous pass over the rows that are due; how many were delivered."""
        with self._deliver_lock:
            delivered = self._deliver_pass()
        self._report_pending()
        return delivered

    def _deliver_pass(self) -> int:
        now = self._clock()
        delivered = 0
        # A subscription that just failed with a retryable error is probably down: its other due rows
        # wait for the same retry time instead of each burning a timeout in this pass.
        down: dict[str, float] = {}
        # Every row handled ends delivered, failed or scheduled after `now` (even if the wall clock stepped
        # back meanwhile), so this loop ends; it goes on past the first batch because finishing a row makes
        # the next row of the same alert due.
        while rows := self._outbox.due(now):
            delivered += self._deliver_rows(rows, now, down)
        if now - self._last_prune >= PRUNE_EVERY_S:
            self._last_prune = now
            self._outbox.prune(now - self._retention_s)
        return delivered

    def _deliver_rows(self, rows: list[OutboxRow], now: float, down: dict[str, float]) -> int:
        delivered = 0
        for row in rows:
            subscription = self._subscriptions.get(row.subscription)
            if subscription is None or row.event is None:
                why = "subscription no longer configured" if subscription is None else row.error
                log.error(
                    "alert notification %s for subscription %r given up: %s",
                    row.notification_key,
                    row.subscription,
                    why,
                )
                self._outbox.failed(row.id, row.attempts, why, now)
                if subscription is not None:
                    self._observe(subscription, "failed")
                continue
            if subscription.name in down:
                self._outbox.postpone(row.id, down[subscription.name])
                continue
            outcome, retry_at = self._attempt(subscription, row, row.event, now)
            if outcome == "delivered":
                delivered += 1
            elif retry_at is not None:
                down[subscription.name] = retry_at
        return delivered

    def _attempt(
        self, subscription: Subscription, row: OutboxRow, event: AlertEvent, pass_now: float
    ) -> tuple[str, float | None]:
        """Try one row: (outcome, time of the next attempt when it will be retried)."""
        attempts = row.attempts + 1
        try:
            self._senders[subscription.kind].send(subscription, event, self._clock())
        except Exception as exc:  # any failure of a sender is a failed attempt, never a dead delivery thread
            # Never at or before the pass's own `now`: a wall clock stepped back during the attempt would
            # make the row due again in this very pass, and the pass would never end.
            now = max(self._clock(), pass_now)
            permanent = isinstance(exc, DeliveryError) and exc.permanent
            if not isinstance(exc, DeliveryError):
                log.exception("unexpected error delivering to subscription %r", subscription.name)
            error = str(exc) or type(exc).__name__
            exhausted = subscription.max_attempts > 0 and attempts >= subscription.max_attempts
            too_old = now - row.created_at >= subscription.max_age_s
            if permanent or exhausted or too_old:
                why = "permanent failure" if permanent else "attempts exhausted" if exhausted else "too old"
                log.error(
                    "alert notification %s to subscription %r given up after %d attempt(s) (%s): %s",
                    row.notification_key,
                    subscription.name,
                    attempts,
                    why,
                    error,
                )
                self._outbox.failed(row.id, attempts, error, now)
                self._observe(subscription, "failed")
                return "failed", None
            delay = jittered(
                backoff_delay(attempts, subscription.backoff_initial_s, subscription.backoff_max_s), self._rng
            )
            asked = exc.retry_after if isinstance(exc, DeliveryError) else None
            if asked is not None:
                # The receiver said when to come back (429/503 Retry-After); never sooner, and never
                # later than backoff_max, so a bogus header cannot park the row for days.
                delay = max(delay, min(asked, subscription.backoff_max_s))
            log.warning(
                "alert notification %s to subscription %r failed (attempt %d), retrying in %.1fs: %s",
                row.notification_key,
                subscription.name,
                attempts,
                delay,
                error,
            )
            self._outbox.retry(row.id, attempts, now + delay, error)
            self._observe(subscription, "retry")
            return "retry", now + delay
        self._outbox.delivered(row.id, attempts, self._clock())
        self._observe(subscription, "delivered")
        return "delivered", None

    def start(self) -> None:
        """Start the background delivery thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="finsent-alert-delivery", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.deliver_due()
                next_due = self._outbox.next_due()
            except Exception:
                log.exception("alert delivery pass failed")
                next_due = None
            wait = self._poll_interval_s
            if next_due is not None:
                wait = min(wait, max(next_due - self._clock(), 0.01))
            self._wake.wait(wait)
            self._wake.clear()

    def stop(self, timeout: float = 10) -> None:
        """Stop the delivery thread (waiting up to ``timeout`` for an attempt in flight) and close senders."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("alert delivery thread still busy after %.1fs", timeout)
            self._thread = None
        for sender in self._senders.values():
            sender.close()

    def close(self) -> None:
        """Stop delivering and close the outbox file."""
        self.stop()
        self._outbox.close()

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
