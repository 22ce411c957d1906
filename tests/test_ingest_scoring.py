"""The scored contract and the poison-message fallback of the classification step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest import Invalid, InvalidReason, NewsItem, parse_rfc3339, scored_record
from ingest.loop import classify_safely
from ingest.scored import MAX_TIMESTAMP_MS, rfc3339_from_ms


def result(topic: str = "Earnings") -> dict[str, Any]:
    return {
        "topic": topic,
        "topic_score": 0.9,
        "sentiment": "negative",
        "sentiment_scores": {"negative": 0.7, "neutral": 0.2, "positive": 0.1},
    }


def test_scored_record_keeps_input_fields_and_adds_the_model_output() -> None:
    item = NewsItem("a", "Shares fall", {"id": "a", "headline": "Shares fall", "tickers": ["X"], "extra": 1})
    record = scored_record(item, result(), model_version="v1", kafka_timestamp_ms=0, scored_at="now")
    assert record["id"] == "a" and record["headline"] == "Shares fall" and record["tickers"] == ["X"]
    assert record["extra"] == 1
    assert record["published_at"] == "1970-01-01T00:00:00.000Z"  # from the Kafka timestamp
    assert record["topic"] == "Earnings" and record["sentiment"] == "negative"
    assert record["sentiment_scores"] == {"negative": 0.7, "neutral": 0.2, "positive": 0.1}
    assert record["model_version"] == "v1" and record["scored_at"] == "now"


@pytest.mark.parametrize(
    "timestamp_ms",
    [None, -1, MAX_TIMESTAMP_MS + 1, 1_700_000_000_000_000],  # the last: microseconds, year 55,840
    ids=["none", "absent", "year-10000", "microseconds"],
)
def test_a_kafka_timestamp_rfc3339_cannot_write_leaves_published_at_null(timestamp_ms: int | None) -> None:
    item = NewsItem("a", "Shares fall", {"id": "a", "headline": "Shares fall"})
    record = scored_record(item, result(), model_version="v1", kafka_timestamp_ms=timestamp_ms, scored_at="t")
    assert "published_at" in record and record["published_at"] is None


def test_the_last_writable_millisecond_is_written_exactly() -> None:
    assert rfc3339_from_ms(MAX_TIMESTAMP_MS) == "9999-12-31T23:59:59.999Z"  # a float division gave .998


@given(st.integers(min_value=0, max_value=MAX_TIMESTAMP_MS))
def test_a_kafka_timestamp_round_trips_through_rfc3339(timestamp_ms: int) -> None:
    parsed = parse_rfc3339(rfc3339_from_ms(timestamp_ms))
    assert parsed is not None
    assert (parsed - datetime(1970, 1, 1, tzinfo=UTC)) // _MS == timestamp_ms


_MS = datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)


def test_a_given_published_at_is_kept_and_input_cannot_spoof_model_fields() -> None:
    fields = {
        "id": "a",
        "headline": "h",
        "published_at": "2024-01-01T00:00:00Z",
        "topic": "fake",
        "model_version": "x",
    }
    record = scored_record(
        NewsItem("a", "h", fields), result(), model_version="v1", kafka_timestamp_ms=5, scored_at="t"
    )
    assert record["published_at"] == "2024-01-01T00:00:00Z"
    assert record["topic"] == "Earnings" and record["model_version"] == "v1"


def test_one_poison_text_fails_alone_and_the_rest_of_the_batch_is_scored() -> None:
    def classify(texts: Sequence[str]) -> list[Mapping[str, Any]]:
        if "poison" in texts:
            raise RuntimeError("tokenizer exploded")
        return [result() for _ in texts]

    answers = classify_safely(classify, ["ok 1", "poison", "ok 2"])
    assert [isinstance(answer, Invalid) for answer in answers] == [False, True, False]
    failed = answers[1]
    assert isinstance(failed, Invalid) and failed.reason == InvalidReason.CLASSIFY_FAILED
    assert "tokenizer exploded" in failed.detail


def test_a_classifier_returning_the_wrong_count_or_shape_is_caught() -> None:
    def short(texts: Sequence[str]) -> list[Mapping[str, Any]]:
        return [result()] if len(texts) > 1 else [{"topic": "x"}]

    answers = classify_safely(short, ["a", "b"])
    assert all(isinstance(answer, Invalid) for answer in answers)
