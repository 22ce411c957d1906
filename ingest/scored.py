"""The scored contract for `news.scored`: the input fields plus the model's answer."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest.contract import NewsItem

# Injected by the composition root: texts in, one result per text out, each with
# topic (str), topic_score (float), sentiment (str), sentiment_scores ({label: float}),
# optionally model_version (str): the version that scored it.
Classifier = Callable[[Sequence[str]], Sequence[Mapping[str, Any]]]
RESULT_FIELDS = ("topic", "topic_score", "sentiment", "sentiment_scores")


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIMESTAMP_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z, the last instant RFC 3339 (four-digit years) can write."""


def usable_timestamp_ms(timestamp_ms: int | None) -> int | None:
    """A Kafka record timestamp, or None when it is absent (-1) or outside what RFC 3339 can write.

    Kafka accepts any CreateTime, e.g. microseconds from a misconfigured producer (year 55,000).
    """
    if timestamp_ms is None or not 0 <= timestamp_ms <= MAX_TIMESTAMP_MS:
        return None
    return timestamp_ms


def rfc3339_from_ms(timestamp_ms: int) -> str:
    """An epoch-milliseconds timestamp (0 to MAX_TIMESTAMP_MS) as RFC 3339 UTC, exact to the millisecond."""
    moment = EPOCH + timedelta(milliseconds=timestamp_ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_result(result: Mapping[str, Any]) -> None:
    """Raise ValueError when a classifier result lacks a field of the scored contract."""
    missing = [name for name in RESULT_FIELDS if name not in result]
    if missing:
        raise ValueError(f"classifier result lacks {', '.join(missing)}")


def scored_record(
    item: NewsItem,
    result: Mapping[str, Any],
    *,
    model_version: str,
    kafka_timestamp_ms: int | None,
    scored_at: str,
) -> dict[str, Any]:
    """The scored message: input fields (published_at filled from Kafka time, else null) plus the model output."""
    record = dict(item.fields)
    if record.get("published_at") is None:
        timestamp_ms = usable_timestamp_ms(kafka_timestamp_ms)
        record["published_at"] = None if timestamp_ms is None else rfc3339_from_ms(timestamp_ms)
    record["topic"] = str(result["topic"])
    record["topic_score"] = round(float(result["topic_score"]), 6)
    record["sentiment"] = str(result["sentiment"])
    record["sentiment_scores"] = {
        str(name): round(float(value), 6) for name, value in dict(result["sentiment_scores"]).items()
    }
    # The version that scored this record (hot swap) when the classifier reports it, else the loop's setting.
    record["model_version"] = str(result.get("model_version") or model_version)
    record["scored_at"] = scored_at
    return record
