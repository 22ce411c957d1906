"""Webhook delivery: Alertmanager webhook (version 4) JSON, signed with HMAC-SHA256."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any

from alerts.delivery import DeliveryError, post_json, unsendable_is_permanent
from alerts.engine import AlertEvent
from alerts.subscriptions import Subscription

SIGNATURE_HEADER = "X-Finsent-Signature"
TIMESTAMP_HEADER = "X-Finsent-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
ZERO_TIME = "0001-01-01T00:00:00Z"
"""Alertmanager's endsAt for an alert that has not ended."""


def rfc3339(epoch: float) -> str:
    """UTC RFC 3339 timestamp with milliseconds, e.g. ``2026-11-23T16:00:00.000Z``."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _secret_bytes(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def sign(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """Signature header value: ``sha256=`` + hex HMAC-SHA256(secret, timestamp + "." + body)."""
    message = timestamp.encode("ascii") + b"." + body
    return "sha256=" + hmac.new(_secret_bytes(secret), message, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str | bytes,
    timestamp: str,
    body: bytes,
    header: str,
    *,
    tolerance_s: float | None = None,
    now: float | None = None,
) -> bool:
    """True when ``header`` signs ``timestamp`` and ``body`` (and, with ``tolerance_s``, the timestamp is recent)."""
    try:
        expected = sign(secret, timestamp, body)
    except UnicodeEncodeError:
        return False
    if not hmac.compare_digest(expected.encode("ascii"), header.strip().encode("utf-8", "replace")):
        return False
    if tolerance_s is not None:
        try:
            sent = float(timestamp)
        except ValueError:
            return False
        return abs((time.time() if now is None else now) - sent) <= tolerance_s
    return True


def webhook_alert(event: AlertEvent) -> dict[str, Any]:
    """One entry of the webhook ``alerts`` list, with finsent's evidence under the extra key ``evidence``."""
    return {
        "status": event.status,
        "labels": dict(event.labels),
        "annotations": dict(event.annotations),
        "startsAt": rfc3339(event.starts_at),
        "endsAt": ZERO_TIME if event.ends_at is None else rfc3339(event.ends_at),
        "generatorURL": "",
        "fingerprint": event.fingerprint,
        "evidence": event.evidence.to_dict(),
    }


def webhook_payload(event: AlertEvent, receiver: str) -> dict[str, Any]:
    """The Alertmanager webhook (version 4) body for one event, grouped by alertname and topic."""
    group_labels = {"alertname": event.rule, "news_topic": event.topic}
    group_key = "{}:{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in group_labels.items()) + "}"
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": event.status,
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": dict(event.labels),
        "commonAnnotations": dict(event.annotations),
        "externalURL": "",
        "alerts": [webhook_alert(event)],
    }


class WebhookSender:
    """POSTs signed webhook payloads with the stdlib HTTP client."""

    def send(self, subscription: Subscription, event: AlertEvent, now: float) -> None:
        """Deliver one event; a fresh timestamp and signature on every attempt."""
        if subscription.url is None or subscription.secret is None:
            raise DeliveryError(f"subscription {subscription.name!r} has no url or secret", permanent=True)
        # A surrogate in the secret or a time past year 9999 would fail the same way on every retry.
        with unsendable_is_permanent(f"subscription {subscription.name!r}: cannot send"):
            body = json.dumps(webhook_payload(event, subscription.name), separators=(",", ":")).encode(
                "utf-8"
            )
            timestamp = str(int(now))
            headers = {
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(subscription.secret, timestamp, body),
                IDEMPOTENCY_HEADER: event.notification_key,
            }
        post_json(subscription.url, body, headers, subscription.timeout_s)

    def close(self) -> None:
        """Nothing to release: every request opens its own connection."""
