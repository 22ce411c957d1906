"""The scored contract and the poison-message fallback of the classification step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ingest import Invalid, InvalidReason, NewsItem, scored_record
from ingest.loop import classify_safely


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
