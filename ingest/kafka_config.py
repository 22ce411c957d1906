"""kafka-python client settings: connection, security pass-through, consumer and producer tuning."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach the cluster; security settings go to the client unchanged."""

    bootstrap_servers: str
    group_id: str = "finsent"
    client_id: str = "finsent"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    request_timeout_ms: int = 30_000
    auto_offset_reset: str = "earliest"
    reconnect_backoff_max_ms: int = 10_000
    # Upper bound of a fetch long-poll. Some brokers (tansu) hold a fetch for the full wait even when
    # data arrives, so this bounds the added latency; real Kafka answers as soon as data is there.
    fetch_max_wait_ms: int = 100


# kafka-python's default max_request_size, and about the default record limit of Kafka brokers and
# topics (message.max.bytes / max.message.bytes).
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
# What a scored record adds to its input payload (model fields, published_at, scored_at), with room to spare.
ENVELOPE_HEADROOM_BYTES = 64 * 1024

# Kafka's rule for topic names (kafka.common.internals.Topic): 1-249 of these characters, not "." or "..".
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def topic_name_problem(name: str) -> str | None:
    """Why Kafka would refuse this topic name, or None when it is legal."""
    if name in (".", "..") or not _TOPIC_NAME.fullmatch(name):
        return f"{name[:60]!r} is not a legal Kafka topic name (1-249 of A-Z a-z 0-9 . _ -, not '.' or '..')"
    return None


def bootstrap_server_problem(server: str) -> str | None:
    """Why one bootstrap server is not a host[:port] a Kafka client can dial, or None."""
    if not server or "://" in server or any(char.isspace() for char in server):
        return f"{server!r} is not host:port"
    host, port = server, None
    if server.startswith("["):  # [IPv6]:port
        host, bracket, rest = server[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return f"{server!r} is not [IPv6 address]:port"
        port = rest[1:] if rest else None
    elif server.count(":") == 1:
        host, port = server.split(":")
    if not host or (port is not None and not (port.isdigit() and 1 <= int(port) <= 65535)):
        return f"{server!r} is not host:port with a port in 1-65535"
    return None


def common_config(settings: KafkaSettings) -> dict[str, Any]:
    """Options shared by consumer, producer and admin clients."""
    config: dict[str, Any] = {
        "bootstrap_servers": [server.strip() for server in settings.bootstrap_servers.split(",")],
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
        "reconnect_backoff_max_ms": settings.reconnect_backoff_max_ms,
        # Short, so the connect-retry loop notices SIGTERM quickly while no broker answers.
        "bootstrap_timeout_ms": 5_000,
    }
    optional = {
        "sasl_mechanism": settings.sasl_mechanism,
        "sasl_plain_username": settings.sasl_username,
        "sasl_plain_password": settings.sasl_password,
        "ssl_cafile": settings.ssl_cafile,
        "ssl_certfile": settings.ssl_certfile,
        "ssl_keyfile": settings.ssl_keyfile,
    }
    config.update({name: value for name, value in optional.items() if value is not None})
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        config["ssl_check_hostname"] = settings.ssl_check_hostname
    return config


def consumer_config(settings: KafkaSettings, max_poll_records: int) -> dict[str, Any]:
    """Consumer options: a group member that never commits on its own."""
    return {
        **common_config(settings),
        "group_id": settings.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": settings.auto_offset_reset,
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "max_poll_interval_ms": settings.max_poll_interval_ms,
        "max_poll_records": max_poll_records,
        "fetch_max_bytes": 8 * 1024 * 1024,
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
    }


def output_request_limit(max_message_bytes: int) -> int:
    """The producer's max_request_size for a stream that accepts payloads up to max_message_bytes.

    At least kafka-python's default, so the dead letters of the default settings (at most 256 KiB of
    original, base64) always fit; above it, room for the largest accepted payload's scored record.
    """
    return max(DEFAULT_MAX_REQUEST_BYTES, max_message_bytes + ENVELOPE_HEADROOM_BYTES)


def producer_config(settings: KafkaSettings, max_request_size: int | None = None) -> dict[str, Any]:
    """Producer options: acknowledged by all in-sync replicas, idempotent, small linger for batching."""
    config: dict[str, Any] = {
        **common_config(settings),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_block_ms": settings.request_timeout_ms,
    }
    if max_request_size is not None:
        config["max_request_size"] = max_request_size
    return config
