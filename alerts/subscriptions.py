"""Subscriptions: who gets which alerts (topic and severity filters) and how (webhook, Kafka, Alertmanager)."""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from alerts.engine import AlertEvent
from alerts.fields import (
    SEVERITIES,
    Fields,
    load_yaml_list,
    reject_duplicate_names,
    severity_rank,
    shown,
    top_level_list,
)

KINDS = ("webhook", "kafka", "alertmanager")

PIPELINE_TOPICS = ("news.raw", "news.scored", "news.dlq", "news.windows", "news.labels")
"""finsent's own topics (the defaults); a Kafka subscription may not deliver to them."""

KAFKA_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")

MAX_TIMEOUT = "5m"
MAX_AGE = "30d"
MAX_TTL = "30d"
MAX_BACKOFF = "24h"

_COMMON = {
    "name",
    "kind",
    "topics",
    "min_severity",
    "severities",
    "send_resolved",
    "timeout",
    "max_attempts",
    "max_age",
    "backoff_initial",
    "backoff_max",
}
_KIND_FIELDS = {
    "webhook": {"url", "secret", "secret_env"},
    "kafka": {"topic"},
    "alertmanager": {"url", "ttl"},
}


class SubscriptionsError(ValueError):
    """A subscriptions file or entry is invalid; the message names the file, the subscription and the field."""


@dataclass(frozen=True)
class Subscription:
    """One receiver of alert notifications, with its filters and delivery settings."""

    name: str
    kind: str
    topics: tuple[str, ...] | None = None
    """Topic labels to deliver; None delivers every topic."""
    min_severity: str | None = None
    severities: tuple[str, ...] | None = None
    """Exact severities to deliver (alternative to ``min_severity``); None with no min_severity means all."""
    send_resolved: bool = True
    url: str | None = None
    """Webhook URL, or Alertmanager base URL (e.g. ``http://127.0.0.1:9093``)."""
    secret: str | None = field(default=None, repr=False)
    """Webhook HMAC-SHA256 signing secret."""
    timeout_s: float = 5.0
    max_attempts: int = 0
    """Give up after this many attempts; 0 retries until ``max_age_s``."""
    max_age_s: float = 86400.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0
    topic: str = "alerts"
    """Kafka topic (kind ``kafka``)."""
    ttl_s: float | None = None
    """Alertmanager: how long a firing alert stays active without a re-push; None is 3x the rule's repeat interval."""

    def matches(self, event: AlertEvent) -> bool:
        """True when this subscription should be notified of ``event``."""
        if self.topics is not None and event.topic not in self.topics:
            return False
        if event.status == "resolved" and not self.send_resolved:
            return False
        if self.severities is not None:
            return event.severity in self.severities
        if self.min_severity is not None:
            return event.severity in SEVERITIES and severity_rank(event.severity) >= severity_rank(
                self.min_severity
            )
        return True


def _url_problem(url: str, base: bool) -> str | None:
    """Why ``url`` cannot be POSTed to (None when it can); ``base`` URLs get a path appended, so no query."""
    if any(not 32 < ord(char) < 127 for char in url):
        return "contains a space, a control or a non-ASCII character (percent-encode it)"
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as error:  # an unclosed IPv6 bracket
        return str(error)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if parts.scheme not in ("http", "https"):
        return "expected an http(s) URL"
    if "@" in parts.netloc:
        return "user names and passwords in the URL are not supported"
    if not parts.hostname:
        return "no host"
    if parts.netloc.endswith(":") or port == 0:
        return "the port must be a number from 1 to 65535"
    if base and ("?" in url or "#" in url):  # urlsplit reports an empty query for a bare "?"
        return "a base URL takes no query or fragment"
    return None


def _url(fields: Fields, name: str, *, base: bool = False) -> str:
    url = fields.string(name)
    problem = _url_problem(url, base)
    if problem:
        fields.fail(name, f"{problem}, got {shown(url)}")
    return url


def _kafka_topic(fields: Fields, reserved: Collection[str]) -> str:
    topic = fields.string("topic", "alerts")
    if not KAFKA_TOPIC.fullmatch(topic) or topic in (".", ".."):
        fields.fail("topic", f"{shown(topic)} is not a Kafka topic name (1-249 of A-Z a-z 0-9 . _ -)")
    if topic in reserved:
        fields.fail(
            "topic", f"{topic!r} is one of finsent's own topics; alert JSON there would feed the pipeline"
        )
    return topic


def _webhook_secret(fields: Fields) -> str:
    """The signing secret, given in the file or named by an environment variable."""
    if fields.has("secret") == fields.has("secret_env"):
        fields.fail("secret", "a webhook needs exactly one of secret or secret_env")
    if fields.has("secret"):
        secret = fields.string("secret")
    else:
        variable = fields.string("secret_env")
        secret = os.environ.get(variable) or ""
        if not secret:
            fields.fail("secret_env", f"environment variable {variable} is not set (or empty)")
    try:
        secret.encode("utf-8")  # it signs every delivery
    except UnicodeEncodeError:
        fields.fail("secret", "holds a lone UTF-16 surrogate, which cannot be encoded to sign with")
    return secret


def _parse_subscription(item: object, index: int, source: str, reserved: Collection[str]) -> Subscription:
    if not isinstance(item, Mapping):
        raise SubscriptionsError(f"{source}: subscription #{index + 1}: expected a mapping, got {item!r}")
    name = item.get("name")
    label = (
        f"subscription {name!r}" if isinstance(name, str) and name.strip() else f"subscription #{index + 1}"
    )
    fields = Fields(item, f"{source}: {label}", SubscriptionsError)
    kind = fields.string("kind", choices=KINDS)
    fields.reject_unknown(_COMMON | _KIND_FIELDS[kind])
    name = fields.string("name")
    if fields.has("min_severity") and fields.has("severities"):
        fields.fail("severities", "give min_severity or severities, not both")
    severities = fields.string_list("severities")
    for severity in severities or ():
        if severity not in SEVERITIES:
            fields.fail("severities", f"{severity!r} is not one of {', '.join(SEVERITIES)}")
    backoff_initial = fields.duration("backoff_initial", 1.0, positive=True, at_most=MAX_BACKOFF)
    backoff_max = fields.duration("backoff_max", 300.0, positive=True, at_most=MAX_BACKOFF)
    if backoff_max < backoff_initial:
        fields.fail("backoff_max", f"must be at least backoff_initial ({backoff_initial:g}s)")
    url: str | None = None
    secret: str | None = None
    ttl: float | None = None
    if kind == "webhook":
        url = _url(fields, "url")
        secret = _webhook_secret(fields)
    elif kind == "alertmanager":
        url = _url(fields, "url", base=True).rstrip("/")
        if url.endswith(("/api/v2/alerts", "/api/v1/alerts", "/api/v2", "/api/v1")):
            fields.fail(
                "url",
                f"give Alertmanager's base URL ({url.rsplit('/api/', 1)[0]}); finsent adds /api/v2/alerts",
            )
        ttl = fields.duration("ttl", 0.0, positive=True, at_most=MAX_TTL) if fields.has("ttl") else None
    return Subscription(
        name=name,
        kind=kind,
        topics=fields.topic_list("topics"),
        min_severity=fields.string("min_severity", choices=SEVERITIES)
        if fields.has("min_severity")
        else None,
        severities=severities,
        send_resolved=fields.boolean("send_resolved", True),
        url=url,
        secret=secret,
        timeout_s=fields.duration("timeout", 5.0, positive=True, at_most=MAX_TIMEOUT),
        max_attempts=fields.integer("max_attempts", 0),
        max_age_s=fields.duration("max_age", 86400.0, positive=True, at_most=MAX_AGE),
        backoff_initial_s=backoff_initial,
        backoff_max_s=backoff_max,
        topic=_kafka_topic(fields, reserved) if kind == "kafka" else "alerts",
        ttl_s=ttl,
    )


def parse_subscriptions(
    data: object, source: str = "subscriptions", *, pipeline_topics: Iterable[str] = ()
) -> list[Subscription]:
    """Validate a parsed document (``{"subscriptions": [...]}``); errors name source, subscription and field.

    Kafka subscriptions may not name :data:`PIPELINE_TOPICS` or any of ``pipeline_topics`` (the service's
    configured topic names, when they differ from the defaults).
    """
    items = top_level_list(data, "subscriptions", source, SubscriptionsError)
    reserved = {*PIPELINE_TOPICS, *pipeline_topics}
    subscriptions = [_parse_subscription(item, index, source, reserved) for index, item in enumerate(items)]
    reject_duplicate_names((s.name for s in subscriptions), source, "subscription", SubscriptionsError)
    return subscriptions


def load_subscriptions(path: Path, *, pipeline_topics: Iterable[str] = ()) -> list[Subscription]:
    """Read and validate a YAML file with a top-level ``subscriptions:`` list (secrets from env at load time)."""
    items, source = load_yaml_list(Path(path), "subscriptions", SubscriptionsError)
    return parse_subscriptions({"subscriptions": items}, source, pipeline_topics=pipeline_topics)
