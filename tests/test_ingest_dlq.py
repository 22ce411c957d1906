"""Dead-letter records carry the reason, the exact original bytes and where they came from."""

from __future__ import annotations

import base64
import json

from ingest import Invalid, InvalidReason, Source, decode, dlq_record


def test_dlq_record_has_reason_detail_original_bytes_and_source() -> None:
    original = b'{"id": "x", "headline": "caf\xe9"}'
    invalid = decode(original)
    assert isinstance(invalid, Invalid)
    record = dlq_record(invalid, original, Source("news.raw", 2, 41, 1_700_000_000_000, b"k"), now="T")
    assert record["reason"] == "not_utf8"
    assert "byte" in record["detail"]
    assert base64.b64decode(record["original_base64"]) == original
    assert record["original_size"] == len(original)
    assert record["original_truncated"] is False
    assert (record["source_topic"], record["source_partition"], record["source_offset"]) == (
        "news.raw",
        2,
        41,
    )
    assert record["source_timestamp_ms"] == 1_700_000_000_000
    assert base64.b64decode(record["source_key_base64"]) == b"k"
    assert record["failed_at"] == "T"
    json.dumps(record)  # serialisable as-is


def test_oversized_originals_are_truncated_and_say_so() -> None:
    original = b"x" * 1000
    record = dlq_record(
        Invalid(InvalidReason.OVERSIZED, "big"), original, Source("t", 0, 0), max_original_bytes=100
    )
    assert base64.b64decode(record["original_base64"]) == original[:100]
    assert record["original_size"] == 1000
    assert record["original_truncated"] is True


def test_null_value_and_key_are_recorded_as_empty_and_null() -> None:
    record = dlq_record(Invalid(InvalidReason.EMPTY, "empty"), None, Source("t", 0, 5))
    assert record["original_base64"] == ""
    assert record["source_key_base64"] is None
    assert record["failed_at"].endswith("Z")


def test_a_compact_dead_letter_truncates_the_key_and_says_so() -> None:
    source = Source("news.raw", 0, 7, None, b"k" * 5000)
    full = dlq_record(Invalid(InvalidReason.OVERSIZED, "big"), b"v", source)
    assert base64.b64decode(full["source_key_base64"]) == b"k" * 5000
    assert full["source_key_truncated"] is False
    compact = dlq_record(Invalid(InvalidReason.OVERSIZED, "big"), b"v", source, max_key_bytes=1024)
    assert base64.b64decode(compact["source_key_base64"]) == b"k" * 1024
    assert compact["source_key_truncated"] is True
    unkeyed = dlq_record(Invalid(InvalidReason.EMPTY, "empty"), None, Source("t", 0, 5), max_key_bytes=1)
    assert unkeyed["source_key_base64"] is None and unkeyed["source_key_truncated"] is False
