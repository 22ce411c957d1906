"""Alertmanager delivery: push to its v2 API so its routing, grouping, silences and inhibition apply."""

from __future__ import annotations

import json
from typing import Any

from alerts.delivery import DeliveryError, post_json, unsendable_is_permanent
from alerts.engine import AlertEvent
from alerts.subscriptions import Subscription
from alerts.webhook import IDEMPOTENCY_HEADER, rfc3339

TTL_REPEATS = 3
"""A firing alert expires in Alertmanager after this many missed repeat intervals unless re-pushed."""


def alert_ttl(subscription: Subscription, event: AlertEvent) -> float:
    """Seconds a pushed firing alert stays active: the subscription's ``ttl`` or 3x the rule's repeat interval."""
    return subscription.ttl_s if subscription.ttl_s is not None else TTL_REPEATS * event.repeat_interval


def alertmanager_alert(subscription: Subscription, event: AlertEvent, now: float) -> dict[str, Any]:
    """One postable alert for ``POST /api/v2/alerts``.

    A firing alert gets ``endsAt = now + ttl`` (wall clock): the engine re-pushes it every repeat interval,
    and if finsent dies Alertmanager resolves it by itself once the TTL passes. A resolved alert's
    ``endsAt`` is its resolve time, but never later than ``now``: Alertmanager treats an alert whose
    endsAt lies in the future as still firing, and the monitor's event-time clock can run ahead of
    the wall clock.
    """
    # Both times are clamped to the wall clock: Alertmanager rejects endsAt before startsAt.
    starts_at = min(event.starts_at, now)
    if event.ends_at is None:
        ends_at = now + alert_ttl(subscription, event)
    else:
        ends_at = max(min(event.ends_at, now), starts_at)
    return {
        "labels": dict(event.labels),
        "annotations": dict(event.annotations),
        "startsAt": rfc3339(starts_at),
        "endsAt": rfc3339(ends_at),
        "generatorURL": "",
    }


class AlertmanagerSender:
    """POSTs alerts to ``{url}/api/v2/alerts``."""

    def send(self, subscription: Subscription, event: AlertEvent, now: float) -> None:
        """Push one alert; 400 (a payload Alertmanager rejects) is permanent, 5xx and network errors retry."""
        if subscription.url is None:
            raise DeliveryError(f"subscription {subscription.name!r} has no url", permanent=True)
        # A ttl that takes endsAt past year 9999 would fail the same way on every retry.
        with unsendable_is_permanent(f"subscription {subscription.name!r}: cannot send"):
            body = json.dumps([alertmanager_alert(subscription, event, now)]).encode("utf-8")
            headers = {IDEMPOTENCY_HEADER: event.notification_key}
        post_json(f"{subscription.url}/api/v2/alerts", body, headers, subscription.timeout_s)

    def close(self) -> None:
        """Nothing to release: every request opens its own connection."""
