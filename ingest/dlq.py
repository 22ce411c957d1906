"""Dead-letter records: what was wrong, the original bytes, and where they came from."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ingest.contract import Invalid

DEFAULT_MAX_ORIGINAL_BYTES = 256 * 1024
# A dead letter too large to produce (a huge key, or a broker limit below the usual one) is sent again
# with at most this much of its key and original: under 100 KB in all, so it fits any sane limit.
COMPACT_KEY_BYTES = 1024
COMPACT_ORIGINAL_BYTES = 64 * 1024


@dataclass(frozen=True)
class Source:
    """Where a Kafka record came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None
    key: bytes | None = None


def utc_now_rfc3339() -> str:
    """The current UTC time as an RFC 3339 string with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dlq_record(
    invalid: Invalid,
    original: bytes | None,
    source: Source,
    *,
    max_original_bytes: int = DEFAULT_MAX_ORIGINAL_BYTES,
    max_key_bytes: int | None = None,
    now: str | None = None,
) -> dict[str, Any]:
    """The JSON object written to the DLQ topic for one rejected record (key untruncated by default)."""
    data = original or b""
    kept = data[:max_original_bytes]
    key = source.key if source.key is None or max_key_bytes is None else source.key[:max_key_bytes]
    return {
        "reason": invalid.reason.value,
        "detail": invalid.detail,
        "original_base64": base64.b64encode(kept).decode("ascii"),
        "original_size": len(data),
        "original_truncated": len(kept) < len(data),
        "source_topic": source.topic,
        "source_partition": source.partition,
        "source_offset": source.offset,
        "source_timestamp_ms": source.timestamp_ms,
        "source_key_base64": None if key is None else base64.b64encode(key).decode("ascii"),
        "source_key_truncated": key is not None and source.key is not None and len(key) < len(source.key),
        "failed_at": now or utc_now_rfc3339(),
    }


def encode_json(value: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON bytes for a record value."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
