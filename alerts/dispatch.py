"""The Dispatcher: records notifications durably in the outbox and delivers them, one thread per subscription."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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
UNCONFIGURED_KIND = "unconfigured"
"""The ``kind`` reported for rows of a subscription no longer in the configuration."""


class DeliveryObserver(Protocol):
    """Told about every delivery attempt's outcome and the outbox size (e.g. :class:`alerts.AlertMetrics`)."""

    def notification(self, subscription: str, kind: str, outcome: str) -> None:
        """One attempt ended: ``outcome`` is ``delivered``, ``retry`` or ``failed``."""

    def outbox_pending(self, count: int) -> None:
        """Rows waiting for delivery now."""


@dataclass
class _Lane:
    """One subscription's delivery: its own thread, so a slow receiver delays only its own notifications."""

    subscription: Subscription
    wake: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Held for a pass, so the background thread and :meth:`Dispatcher.deliver_due` never send a row twice."""
    thread: threading.Thread | None = None


class Dispatcher:
    """Fans alert events out to matching subscriptions through a persistent SQLite outbox.

    Delivery is at least once per (subscription, notification key): a row is marked delivered only after
    the receiver acknowledged it, so a crash between the two sends it again, with the same
    ``Idempotency-Key`` for the receiver to drop. Rows of one alert on one subscription go out in order.
    Each subscription is delivered by its own thread: a receiver that hangs until its timeout holds up
    only its own rows.
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
        self._lanes = {s.name: _Lane(s) for s in subscriptions}
        if len(self._lanes) != len(subscriptions):
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
        self._prune_lock = threading.Lock()
        self._unconfigured_lock = threading.Lock()
        self._stopping = threading.Event()

    @property
    def outbox(self) -> Outbox:
        """The underlying outbox (inspection and tests)."""
        return self._outbox

    def record(self, events: Sequence[AlertEvent], engine_state: Mapping[str, Any]) -> None:
        """Queue each event for every matching subscription and save ``engine_state``, in one durable transaction.

        A notification key already queued for a subscription is ignored, so re-emitting events after a
        crash (the engine state was older than the outbox) does not notify twice.
        """
        rows = [
            (lane.subscription.name, event)
            for event in events
            for lane in self._lanes.values()
            if lane.subscription.matches(event)
        ]
        self._outbox.record(rows, engine_state, self._clock())
        for name in {name for name, _ in rows}:
            self._lanes[name].wake.set()
        self._report_pending()

    def load_engine_state(self) -> dict[str, Any] | None:
        """The engine state that :meth:`record` saved last (None on a fresh outbox)."""
        return self._outbox.engine_state()

    def pending(self) -> int:
        """Notifications not yet delivered or given up on."""
        return self._outbox.pending_count()

    def _report_pending(self) -> None:
        if self._observer is not None:
            self._observer.outbox_pending(self.pending())

    def _observe(self, subscription: Subscription, outcome: str) -> None:
        if self._observer is not None:
            self._observer.notification(subscription.name, subscription.kind, outcome)

    def deliver_due(self) -> int:
        """One synchronous pass over every subscription's due rows; how many were delivered."""
        self._fail_unconfigured()
        delivered = sum(self._deliver_lane(lane) for lane in self._lanes.values())
        self._report_pending()
        return delivered

    def _fail_unconfigured(self) -> None:
        """Give up on the rows of subscriptions removed from the configuration: nothing can deliver them."""
        with self._unconfigured_lock:  # start() and deliver_due() may both run it
            now = self._clock()
            for name in self._outbox.pending_subscriptions() - self._lanes.keys():
                while rows := self._outbox.due(name, float("inf")):
                    for row in rows:
                        why = "subscription no longer configured"
                        self._give_up(row, UNCONFIGURED_KIND, row.attempts, why, why, now)

    def _deliver_lane(self, lane: _Lane) -> int:
        with lane.lock:
            delivered = self._deliver_pass(lane.subscription)
        self._prune_now_and_then()
        return delivered

    def _deliver_pass(self, subscription: Subscription) -> int:
        now = self._clock()
        delivered = 0
        # After a retryable failure the receiver is probably down: the subscription's other due rows wait
        # for the same retry time instead of each burning a timeout in this pass.
        down_until: float | None = None
        # Every row handled ends delivered, failed or scheduled after `now` (even if the wall clock stepped
        # back meanwhile), so this loop ends; it goes on past the first batch because finishing a row makes
        # the next row of the same alert due.
        while not self._stopping.is_set() and (rows := self._outbox.due(subscription.name, now)):
            for row in rows:
                if self._stopping.is_set():  # stop() waits only for the attempt in flight
                    break
                if row.event is None:
                    self._give_up(row, subscription.kind, row.attempts, "undecodable", row.error, now)
                elif now - row.created_at >= subscription.max_age_s:
                    # Not worth a timeout: it is given up whether or not the receiver answers.
                    self._give_up(
                        row, subscription.kind, row.attempts, "too old", "not delivered in max_age", now
                    )
                elif down_until is not None:
                    self._outbox.postpone(row.id, down_until)
                else:
                    outcome, down_until = self._attempt(subscription, row, row.event, now)
                    if outcome == "delivered":
                        delivered += 1
        return delivered

    def _give_up(self, row: OutboxRow, kind: str, attempts: int, why: str, error: str, now: float) -> None:
        """Mark a row failed, log it at ERROR and count it (``kind``: its subscription's)."""
        log.error(
            "alert notification %s to subscription %r given up after %d attempt(s) (%s): %s",
            row.notification_key,
            row.subscription,
            attempts,
            why,
            error,
        )
        self._outbox.failed(row.id, attempts, error, now)
        if self._observer is not None:
            self._observer.notification(row.subscription, kind, "failed")

    def _prune_now_and_then(self) -> None:
        with self._prune_lock:
            now = self._clock()
            if now - self._last_prune >= PRUNE_EVERY_S:
                self._last_prune = now
                self._outbox.prune(now - self._retention_s)

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
            if permanent:
                self._give_up(row, subscription.kind, attempts, "permanent failure", error, now)
                return "failed", None  # the receiver answered: its other rows may go through
            if exhausted or too_old:
                why = "attempts exhausted" if exhausted else "too old"
                self._give_up(row, subscription.kind, attempts, why, error, now)
                # The receiver is probably down: its other due rows wait, as after a retry.
                return "failed", now + jittered(subscription.backoff_initial_s, self._rng)
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
        """Start one background delivery thread per subscription (idempotent)."""
        self._stopping.clear()
        self._fail_unconfigured()
        for lane in self._lanes.values():
            if lane.thread is None or not lane.thread.is_alive():
                lane.thread = threading.Thread(
                    target=self._run,
                    args=(lane,),
                    name=f"finsent-alert-delivery-{lane.subscription.name}",
                    daemon=True,
                )
                lane.thread.start()

    def _run(self, lane: _Lane) -> None:
        name = lane.subscription.name
        while not self._stopping.is_set():
            try:
                self._deliver_lane(lane)
                self._report_pending()
                next_due = self._outbox.next_due(name)
            except Exception:
                log.exception("alert delivery pass for subscription %r failed", name)
                next_due = None
            wait = self._poll_interval_s
            if next_due is not None:
                wait = min(wait, max(next_due - self._clock(), 0.01))
            lane.wake.wait(wait)
            lane.wake.clear()

    def stop(self, timeout: float = 10) -> None:
        """Stop the delivery threads (waiting up to ``timeout`` in all for attempts in flight) and close senders."""
        self._stopping.set()
        for lane in self._lanes.values():
            lane.wake.set()
        deadline = time.monotonic() + timeout
        for lane in self._lanes.values():
            if lane.thread is None:
                continue
            lane.thread.join(max(deadline - time.monotonic(), 0.0))
            if lane.thread.is_alive():
                # Kept: start() must not run a second thread for this subscription beside it.
                log.warning(
                    "alert delivery to subscription %r still busy after %.1fs",
                    lane.subscription.name,
                    timeout,
                )
            else:
                lane.thread = None
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
