"""The service against a real broker: every valid id scored once, every malformed record in the DLQ."""

from __future__ import annotations

import base64
import json
import random
import re
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from finsent.broker import EmbeddedBroker
from tests.integration.conftest import ServiceProcess, TopicReader, produce, scored_ids, valid_message

pytestmark = pytest.mark.integration

TOTAL = 5000
MALFORMED_SHARE = 0.03


def malformed_payloads() -> list[tuple[bytes | None, str]]:
    """One payload per way the input contract can be broken, with the reason the DLQ must give."""
    headline = "Shares fall after guidance cut"
    return [
        (None, "empty_payload"),
        (b"", "empty_payload"),
        (json.dumps({"id": "big", "headline": "a" * 70_000}).encode(), "oversized"),
        (b'{"id": "bad-utf8", "headline": "caf\xe9 \xff\xfe"}', "not_utf8"),
        (b'{"id": "cut", "headline": "Shares fa', "not_json"),
        (b"this is not json", "not_json"),
        (b'["a", "list"]', "not_object"),
        (b'"a string"', "not_object"),
        (json.dumps({"headline": headline}).encode(), "missing_id"),
        (json.dumps({"id": "", "headline": headline}).encode(), "missing_id"),
        (json.dumps({"id": "no-text", "headline": "   "}).encode(), "missing_text"),
        (json.dumps({"id": "no-text-2", "body": "only a body"}).encode(), "missing_text"),
        (json.dumps({"id": 12345, "headline": headline}).encode(), "wrong_type"),
        (json.dumps({"id": "num-headline", "headline": 42}).encode(), "wrong_type"),
        (json.dumps({"id": "str-tickers", "headline": headline, "tickers": "AAPL"}).encode(), "wrong_type"),
        (
            json.dumps({"id": "when", "headline": headline, "published_at": "yesterday"}).encode(),
            "bad_timestamp",
        ),
        (
            json.dumps({"id": "iso-only", "headline": headline, "published_at": "2024-01-01T10Z"}).encode(),
            "bad_timestamp",
        ),
        (b'{"id": "nan", "headline": "Shares fall", "score": NaN}', "not_json"),
        # Valid UTF-8 JSON whose strings UTF-8 cannot encode: these used to kill the service.
        (b'{"id": "surrogate", "headline": "Shares \\ud800 fall"}', "not_utf8"),
        (b'{"id": "surrogate-extra", "headline": "Shares fall", "note": "\\udc80"}', "not_utf8"),
    ]


def metrics_text(service: ServiceProcess) -> str:
    """GET /metrics from the port the service logged."""
    match = re.search(r"metrics on http://[\d.]+:(\d+)/metrics", service.log())
    assert match, service.log()
    with urllib.request.urlopen(f"http://127.0.0.1:{match.group(1)}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_every_valid_id_scored_once_and_every_malformed_record_dead_lettered(
    broker: EmbeddedBroker,
    start_service: Callable[..., ServiceProcess],
    reader: Callable[[EmbeddedBroker, str], TopicReader],
) -> None:
    rng = random.Random(7)
    kinds = malformed_payloads()
    malformed_count = round(TOTAL * MALFORMED_SHARE)
    bad_positions = set(rng.sample(range(TOTAL), malformed_count))
    payloads: list[bytes | None] = []
    expected_reason: list[str | None] = []
    valid_ids: list[str] = []
    for index in range(TOTAL):
        if index in bad_positions:
            payload, reason = kinds[index % len(kinds)]
            payloads.append(payload)
            expected_reason.append(reason)
        else:
            message_id, payload = valid_message(index)
            valid_ids.append(message_id)
            payloads.append(payload)
            expected_reason.append(None)
    assert {reason for reason in expected_reason if reason} == {reason for _, reason in kinds}
    placed = produce(broker.bootstrap, payloads)

    service = start_service(broker)
    scored = reader(broker, "news.scored")
    dlq = reader(broker, "news.dlq")
    scored.until(lambda records: len(records) >= len(valid_ids), timeout=240, what=f"{len(valid_ids)} scored")
    dlq.until(
        lambda records: len(records) >= malformed_count, timeout=30, what=f"{malformed_count} DLQ records"
    )
    scored.poll()
    dlq.poll()
    assert service.alive(), service.log()

    counts = Counter(scored_ids(scored.records))
    assert set(counts) == set(valid_ids)
    assert max(counts.values()) == 1, "a clean run must not duplicate"

    expected_dlq = {
        placed[i]: (expected_reason[i], payloads[i]) for i in range(TOTAL) if expected_reason[i] is not None
    }
    seen_dlq: dict[tuple[int, int], dict[str, Any]] = {}
    for record in dlq.values():
        seen_dlq[(record["source_partition"], record["source_offset"])] = record
        assert record["source_topic"] == "news.raw"
    assert len(dlq.records) == malformed_count
    assert set(seen_dlq) == set(expected_dlq)
    for where, (expected, payload) in expected_dlq.items():
        record = seen_dlq[where]
        assert record["reason"] == expected, record
        original = base64.b64decode(record["original_base64"])
        assert original == (payload or b"")[: len(original)]
        assert record["original_size"] == len(payload or b"")

    sample = scored.values()[0]
    assert set(sample["sentiment_scores"]) == {"negative", "neutral", "positive"}
    assert sample["model_version"] and sample["scored_at"] and sample["published_at"]
    assert abs(sum(sample["sentiment_scores"].values()) - 1.0) < 1e-3
    assert all(record.key.decode() == json.loads(record.value)["topic"] for record in scored.records[:50])

    text = metrics_text(service)
    assert f"finsent_messages_consumed_total {float(TOTAL)}" in text
    invalid = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("finsent_messages_invalid_total")
    )
    assert invalid == malformed_count
    assert "finsent_model_info{" in text and "finsent_inference_latency_seconds_bucket" in text
