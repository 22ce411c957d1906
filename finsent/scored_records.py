"""Decoding news.scored records into what the monitor stage needs from each."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ingest import loads_strict, parse_rfc3339
from ingest.contract import TEXT_FIELDS, first_visible_text


def event_time_of(record: Mapping[str, Any], kafka_timestamp_ms: int | None) -> float:
    """Seconds since the epoch: the record's published_at, else the Kafka timestamp; ValueError if none."""
    published = record.get("published_at")
    if isinstance(published, str) and published:
        moment = parse_rfc3339(published)
        if moment is None:
            raise ValueError(f"published_at {published[:64]!r} is not RFC 3339 (with a UTC offset)")
        return moment.timestamp()
    if published is not None and not isinstance(published, str):
        raise ValueError(f"published_at must be a string, got {type(published).__name__}")
    if kafka_timestamp_ms is not None and kafka_timestamp_ms >= 0:
        return kafka_timestamp_ms / 1000.0
    raise ValueError("no published_at and no Kafka timestamp")


@dataclass(frozen=True)
class ScoredFields:
    """What the monitor needs from one scored record."""

    id: str
    topic: str
    sentiment: str
    p_negative: float
    event_time: float
    headline: str


def parse_scored(value: bytes | None, kafka_timestamp_ms: int | None) -> ScoredFields:
    """Decode a news.scored value; ValueError naming the problem when it is malformed."""
    if value is None:
        raise ValueError("empty record")
    try:
        record = loads_strict(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ValueError(f"not JSON: {error}") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    message_id, topic, sentiment = record.get("id"), record.get("topic"), record.get("sentiment")
    for name, field in (("id", message_id), ("topic", topic), ("sentiment", sentiment)):
        if not isinstance(field, str) or not field:
            raise ValueError(f"{name} missing or not a string")
    scores = record.get("sentiment_scores")
    p_negative = scores.get("negative") if isinstance(scores, dict) else None
    if isinstance(p_negative, bool) or not isinstance(p_negative, int | float):
        raise ValueError("sentiment_scores.negative missing or not a number")
    # The text the classifier scored, so a blank headline shows the text.
    headline = first_visible_text(record.get(name) for name in TEXT_FIELDS) or ""
    return ScoredFields(
        id=str(message_id),
        topic=str(topic),
        sentiment=str(sentiment),
        p_negative=float(p_negative),
        event_time=event_time_of(record, kafka_timestamp_ms),
        headline=str(headline),
    )
