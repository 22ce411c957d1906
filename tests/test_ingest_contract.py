"""The input contract: every way a payload can be broken gets its own reason, and nothing raises."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest import Invalid, InvalidReason, NewsItem, decode, parse_rfc3339
from ingest.dlq import encode_json


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
        (encode({"id": "  ", "headline": "h"}), InvalidReason.MISSING_ID),
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


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2024-03-01T12:00:00Z", datetime(2024, 3, 1, 12, tzinfo=UTC)),
        ("2024-03-01T14:30:00+02:30", datetime(2024, 3, 1, 12, tzinfo=UTC)),
        ("2024-03-01T07:00:00-05:00", datetime(2024, 3, 1, 12, tzinfo=UTC)),
        ("2024-03-01T12:00:00.1234567Z", datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)),  # a leap second
    ],
)
def test_rfc3339_names_the_right_instant(stamp: str, expected: datetime) -> None:
    assert parse_rfc3339(stamp) == expected


@pytest.mark.parametrize(
    "stamp",
    [
        "2024-01-01T10Z",  # ISO 8601 reduced precision, not RFC 3339
        "2024-01-01T10:00Z",
        "20240101T100000Z",  # ISO 8601 basic format
        "2024-W01-1T10:00:00Z",  # ISO week date
        "2024-01-01T10:00:00+0200",
        "2024-01-01T10:00:00",  # no offset
        "2024-01-01 10:00:00Z",
        "2024-01-01T10:00:61Z",
        "2024-02-30T10:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-01-01T10:00:00+24:00",
        "2024-01-01T10:00:00.Z",
        "２０２４-01-01T10:00:00Z",  # non-ASCII digits
    ],
)
def test_timestamps_that_are_not_rfc3339_are_bad_timestamps(stamp: str) -> None:
    assert parse_rfc3339(stamp) is None
    result = decode(encode({**GOOD, "published_at": stamp}))
    assert isinstance(result, Invalid) and result.reason == InvalidReason.BAD_TIMESTAMP


@pytest.mark.parametrize(
    "payload",
    [
        b'{"id": "x", "headline": "h", "score": NaN}',
        b'{"id": "x", "headline": "h", "score": Infinity}',
        b'{"id": "x", "headline": "h", "score": -Infinity}',
        b'{"id": "x", "headline": "h", "score": 1e999}',  # valid JSON, but no float holds it
        b'{"id": "x", "headline": "h", "score": 2' + b"0" * 308 + b"}",  # an integer past 1.8e308
        b'{"id": "x", "headline": "h", "score": -' + b"9" * 400 + b"}",
        b'{"id": "x", "headline": "h", "score": ' + b"9" * 5000 + b"}",  # past CPython's digit limit
    ],
    ids=["nan", "infinity", "-infinity", "1e999", "2e308-integer", "400-digits", "5000-digits"],
)
def test_numbers_that_json_cannot_carry_are_not_json(payload: bytes) -> None:
    result = decode(payload)
    assert isinstance(result, Invalid) and result.reason == InvalidReason.NOT_JSON
    assert "out of range" in result.detail or "not a JSON value" in result.detail
    assert "set_int_max_str_digits" not in result.detail  # advice for Python programmers, not senders


def test_the_largest_integers_a_float_holds_are_accepted() -> None:
    largest = int(sys.float_info.max)
    result = decode(b'{"id": "x", "headline": "h", "n": [%d, %d]}' % (largest, -largest))
    assert isinstance(result, NewsItem) and result.fields["n"] == [largest, -largest]


@pytest.mark.parametrize(
    ("headline", "text", "expected"),
    [
        ("&nbsp;", "Shares crash after fraud probe", "Shares crash after fraud probe"),
        ("&#32;&zwnj;", "Shares crash", "Shares crash"),
        ("\u200b\u200b", "Shares crash", "Shares crash"),  # zero-width spaces
        ("\u00a0\t\n", "Shares crash", "Shares crash"),
        ("\U0001f4c9", "Shares crash", "\U0001f4c9"),  # an emoji is visible text
        ("Oil &amp; gas rally", "Shares crash", "Oil &amp; gas rally"),  # kept as sent; the model unescapes
    ],
)
def test_a_headline_with_nothing_visible_falls_back_to_the_text(
    headline: str, text: str, expected: str
) -> None:
    result = decode(encode({"id": "x", "headline": headline, "text": text}))
    assert isinstance(result, NewsItem) and result.text == expected


@pytest.mark.parametrize(
    "blank", ["&nbsp;", "\u200b", "&#8203; &zwnj;", "\u2028", "\ufe0f", "\u0301", "\ufffd"]
)  # the last three: a variation selector, a lone combining accent, the replacement character
def test_nothing_visible_in_either_field_is_missing_text(blank: str) -> None:
    result = decode(encode({"id": "x", "headline": blank, "text": blank}))
    assert isinstance(result, Invalid) and result.reason == InvalidReason.MISSING_TEXT


@pytest.mark.parametrize(
    "payload",
    [
        b'{"id": "x", "headline": "bad \\ud800 text"}',
        b'{"id": "x", "headline": "h", "extra": {"deep": ["\\udc80"]}}',
        b'{"id": "x", "headline": "h", "\\ud83d": 1}',  # in a key; a high surrogate without its pair
    ],
)
def test_a_lone_surrogate_escape_is_not_utf8(payload: bytes) -> None:
    result = decode(payload)
    assert isinstance(result, Invalid) and result.reason == InvalidReason.NOT_UTF8


def test_an_escaped_surrogate_pair_is_one_character_and_accepted() -> None:
    result = decode(b'{"id": "x", "headline": "rocket \\ud83d\\ude80"}')
    assert isinstance(result, NewsItem) and result.text == "rocket \U0001f680"


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


# Strings with surrogates and non-finite floats: what json.dumps writes but UTF-8 JSON cannot carry.
AWKWARD_LEAVES = (
    st.none()
    | st.floats()
    | st.text(alphabet=st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010), max_size=6)
    | st.text(max_size=10)
)


@given(
    st.dictionaries(
        st.sampled_from(["id", "headline", "text", "body", "extra"]) | st.text(max_size=4),
        st.recursive(AWKWARD_LEAVES, lambda children: st.lists(children, max_size=3), max_leaves=6),
        max_size=5,
    )
)
def test_whatever_is_accepted_can_be_written_out_again(value: dict[str, object]) -> None:
    result = decode(json.dumps(value).encode("ascii"))  # escapes surrogates as \\udXXX, NaN as NaN
    if isinstance(result, NewsItem):
        assert json.loads(encode_json(result.fields)) == result.fields
