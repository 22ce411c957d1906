"""The input contract: every way a payload can be broken gets its own reason, and nothing raises."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest import Invalid, InvalidReason, NewsItem, decode


def encode(value: object) -> bytes:
    return json.dumps(value).encode("utf-8")


GOOD = {
    "id": "n-1",
    "headline": "Carnival shares plunge after profit warning",
    "body": None,
    "published_at": "2024-03-01T12:00:00Z",
    "source": "wire",
    "tickers": ["CCL"],
}


def test_a_full_valid_message_is_accepted_with_its_text_and_fields() -> None:
    result = decode(encode(GOOD))
    assert isinstance(result, NewsItem)
    assert result.id == "n-1"
    assert result.text == GOOD["headline"]
    assert result.fields == GOOD


def test_text_is_accepted_in_place_of_headline_and_optional_fields_may_be_missing() -> None:
    result = decode(encode({"id": "n-2", "text": "Oil climbs"}))
    assert isinstance(result, NewsItem)
    assert result.text == "Oil climbs"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (None, InvalidReason.EMPTY),
        (b"", InvalidReason.EMPTY),
        (b"\xff\xfe{}", InvalidReason.NOT_UTF8),
        (b'{"id": "x", "headline": "caf\xe9"}', InvalidReason.NOT_UTF8),
        (b"not json", InvalidReason.NOT_JSON),
        (b'{"id": "x", "headline": "cut off', InvalidReason.NOT_JSON),
        (b"[" * 100_000, InvalidReason.OVERSIZED),
        (b"[" * 50_000, InvalidReason.NOT_JSON),  # too deep to parse: still an answer, not a crash
        (b"[1, 2]", InvalidReason.NOT_OBJECT),
        (b"null", InvalidReason.NOT_OBJECT),
        (b"42", InvalidReason.NOT_OBJECT),
        (encode({"headline": "h"}), InvalidReason.MISSING_ID),
        (encode({"id": None, "headline": "h"}), InvalidReason.MISSING_ID),
        (encode({"id": "", "headline": "h"}), InvalidReason.MISSING_ID),
        (encode({"id": 7, "headline": "h"}), InvalidReason.WRONG_TYPE),
        (encode({"id": "x"}), InvalidReason.MISSING_TEXT),
        (encode({"id": "x", "headline": " \n\t"}), InvalidReason.MISSING_TEXT),
        (encode({"id": "x", "headline": "", "text": ""}), InvalidReason.MISSING_TEXT),
        (encode({"id": "x", "headline": ["h"]}), InvalidReason.WRONG_TYPE),
        (encode({"id": "x", "headline": "h", "body": 3}), InvalidReason.WRONG_TYPE),
        (encode({"id": "x", "headline": "h", "source": {"a": 1}}), InvalidReason.WRONG_TYPE),
        (encode({"id": "x", "headline": "h", "tickers": "AAPL"}), InvalidReason.WRONG_TYPE),
        (encode({"id": "x", "headline": "h", "tickers": ["AAPL", 1]}), InvalidReason.WRONG_TYPE),
        (encode({"id": "x", "headline": "h", "published_at": 1700000000}), InvalidReason.WRONG_TYPE),
        (encode({"id": "x", "headline": "h", "published_at": "yesterday"}), InvalidReason.BAD_TIMESTAMP),
        (
            encode({"id": "x", "headline": "h", "published_at": "2024-03-01 12:00:00"}),
            InvalidReason.BAD_TIMESTAMP,
        ),
    ],
)
def test_each_broken_payload_gets_its_reason(payload: bytes | None, reason: InvalidReason) -> None:
    result = decode(payload)
    assert isinstance(result, Invalid)
    assert result.reason == reason
    assert result.detail


def test_size_limit_is_inclusive_and_configurable() -> None:
    payload = encode({"id": "x", "headline": "h" * 100})
    assert isinstance(decode(payload, max_bytes=len(payload)), NewsItem)
    result = decode(payload, max_bytes=len(payload) - 1)
    assert isinstance(result, Invalid) and result.reason == InvalidReason.OVERSIZED


def test_rfc3339_offsets_and_fractions_are_accepted() -> None:
    for stamp in ("2024-03-01T12:00:00+02:00", "2024-03-01T12:00:00.123Z", "2024-03-01t12:00:00z"):
        assert isinstance(decode(encode({**GOOD, "published_at": stamp})), NewsItem), stamp


@given(st.binary(max_size=300))
def test_decode_never_raises_on_arbitrary_bytes(payload: bytes) -> None:
    assert isinstance(decode(payload), NewsItem | Invalid)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_decode_never_raises_on_arbitrary_json(value: object) -> None:
    result = decode(encode(value))
    if isinstance(result, NewsItem):
        assert isinstance(value, dict) and result.id == value["id"] and result.text.strip()
