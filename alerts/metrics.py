"""Prometheus metrics for alerts: active alerts, transitions, notification outcomes, outbox size."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

from alerts.engine import ActiveAlert, AlertEvent
from alerts.rules import Rule
from alerts.subscriptions import Subscription

TRANSITION_STATUSES = ("firing", "resolved")
DELIVERY_OUTCOMES = ("delivered", "retry", "failed")


class AlertMetrics:
    """Alert metrics in a registry the caller owns; also a :class:`alerts.dispatch.DeliveryObserver`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.active = Gauge(
            "finsent_alerts_active",
            "1 per pending or firing alert",
            ["rule", "news_topic", "severity", "state"],
            registry=registry,
        )
        self.transitions_total = Counter(
            "finsent_alert_transitions_total",
            "Alerts that started firing or resolved (repeat notifications not counted)",
            ["rule", "status"],
            registry=registry,
        )
        self.notifications_total = Counter(
            "finsent_alert_notifications_total",
            "Notification delivery attempts by outcome (delivered, retry, failed)",
            ["subscription", "kind", "outcome"],
            registry=registry,
        )
        self.outbox_pending_rows = Gauge(
            "finsent_alert_outbox_pending",
            "Notifications in the outbox waiting for delivery",
            registry=registry,
        )
        self._active_series: set[tuple[str, str, str, str]] = set()

    def declare(self, rules: Iterable[Rule], subscriptions: Iterable[Subscription]) -> None:
        """Create the counters' series of these rules and subscriptions at 0, so rate() sees their first event."""
        for rule in rules:
            for status in TRANSITION_STATUSES:
                self.transitions_total.labels(rule.name, status)
        for subscription in subscriptions:
            for outcome in DELIVERY_OUTCOMES:
                self.notifications_total.labels(subscription.name, subscription.kind, outcome)

    def update(self, active_alerts: Iterable[ActiveAlert]) -> None:
        """Set the active-alert gauge to exactly ``active_alerts``, removing series of alerts no longer active."""
        current = {(a.rule, a.topic, a.severity, a.state) for a in active_alerts}
        for stale in self._active_series - current:
            self.active.remove(*stale)
        for series in current:
            self.active.labels(*series).set(1)
        self._active_series = current

    def transitions(self, events: Iterable[AlertEvent]) -> None:
        """Count firing and resolved transitions (repeats of a firing alert are not transitions)."""
        for event in events:
            if event.repeat == 0:
                self.transitions_total.labels(event.rule, event.status).inc()

    def notification(self, subscription: str, kind: str, outcome: str) -> None:
        """Count one delivery attempt's outcome."""
        self.notifications_total.labels(subscription, kind, outcome).inc()

    def outbox_pending(self, count: int) -> None:
        """Set the outbox size."""
        self.outbox_pending_rows.set(count)
