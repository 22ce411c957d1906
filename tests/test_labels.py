import pytest

from model.labels import (
    SENTIMENT_LABELS,
    TOPIC_LABELS,
    sentiment_from_dataset,
    sentiment_index,
    topic_from_dataset,
    topic_index,
)


def test_topic_labels_are_the_datasets_twenty_published_names() -> None:
    assert len(TOPIC_LABELS) == 20
    assert TOPIC_LABELS[1] == "Fed | Central Banks"
    assert TOPIC_LABELS[19] == "Stock Movement"


def test_bearish_bullish_neutral_map_to_negative_positive_neutral() -> None:
    assert SENTIMENT_LABELS[sentiment_from_dataset(0)] == "negative"
    assert SENTIMENT_LABELS[sentiment_from_dataset(1)] == "positive"
    assert SENTIMENT_LABELS[sentiment_from_dataset(2)] == "neutral"


@pytest.mark.parametrize("bad", [-1, 3, 7])
def test_unknown_sentiment_label_is_rejected(bad: int) -> None:
    with pytest.raises(ValueError, match="unknown sentiment"):
        sentiment_from_dataset(bad)


def test_topic_label_range_is_checked() -> None:
    assert topic_from_dataset(19) == 19
    with pytest.raises(ValueError):
        topic_from_dataset(20)


def test_names_resolve_case_insensitively_with_aliases() -> None:
    assert sentiment_index("Bearish") == 0
    assert sentiment_index("POSITIVE") == 2
    assert topic_index("stock movement") == 19
    with pytest.raises(ValueError):
        topic_index("Crypto")
