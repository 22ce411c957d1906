"""Alerting: rules over monitor snapshots, the pending/firing/resolved lifecycle, and durable deliveries.

``AlertEngine`` is pure (the caller passes the monitor's clock); ``Dispatcher`` owns a SQLite outbox and one
delivery thread per webhook, Kafka or Alertmanager subscription. See README.md.
"""

from alerts.alertmanager import AlertmanagerSender, alert_ttl, alertmanager_alert
from alerts.delivery import DeliveryError, Sender, backoff_delay, jittered
from alerts.dispatch import DeliveryObserver, Dispatcher
from alerts.engine import ActiveAlert, AlertEngine, AlertEvent, Evidence, fingerprint
from alerts.fields import SEVERITIES, YamlError, load_yaml_text, read_yaml_file
from alerts.kafka_sink import KafkaSender, kafka_record
from alerts.metrics import AlertMetrics
from alerts.outbox import Outbox, OutboxRow
from alerts.rules import Rule, RulesError, check_windows, load_rules, parse_rules
from alerts.subscriptions import (
    PIPELINE_TOPICS,
    Subscription,
    SubscriptionsError,
    load_subscriptions,
    parse_subscriptions,
)
from alerts.webhook import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookSender,
    sign,
    verify_signature,
    webhook_payload,
)

__all__ = [
    "IDEMPOTENCY_HEADER",
    "PIPELINE_TOPICS",
    "SEVERITIES",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "ActiveAlert",
    "AlertEngine",
    "AlertEvent",
    "AlertMetrics",
    "AlertmanagerSender",
    "DeliveryError",
    "DeliveryObserver",
    "Dispatcher",
    "Evidence",
    "KafkaSender",
    "Outbox",
    "OutboxRow",
    "Rule",
    "RulesError",
    "Sender",
    "Subscription",
    "SubscriptionsError",
    "WebhookSender",
    "YamlError",
    "alert_ttl",
    "alertmanager_alert",
    "backoff_delay",
    "check_windows",
    "fingerprint",
    "jittered",
    "kafka_record",
    "load_rules",
    "load_subscriptions",
    "load_yaml_text",
    "parse_rules",
    "parse_subscriptions",
    "read_yaml_file",
    "sign",
    "verify_signature",
    "webhook_payload",
]
