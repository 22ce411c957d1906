"""The input contract for `news.raw`: decode and validate one Kafka payload."""

from __future__ import annotations

import html
import json
import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
TEXT_FIELDS = ("headline", "text")
OPTIONAL_STRING_FIELDS = ("body", "source")


class InvalidReason(StrEnum):
    """Why a payload went to the dead-letter queue (a bounded set: it is a metric label)."""

    EMPTY = "empty_payload"
    OVERSIZED = "oversized"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    MISSING_ID = "missing_id"
    MISSING_TEXT = "missing_text"
    WRONG_TYPE = "wrong_type"
    BAD_TIMESTAMP = "bad_timestamp"
    CLASSIFY_FAILED = "classify_failed"


@dataclass(frozen=True)
class NewsItem:
    """A payload that passed validation: the original object plus the text to classify."""

    id: str
    text: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class Invalid:
    """A payload that failed validation, with a reason code and a human-readable detail."""

    reason: InvalidReason
    detail: str


# RFC 3339 section 5.6 date-time: full-date "T" full-time, with a required offset.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


def parse_rfc3339(value: str) -> datetime | None:
    """The datetime an RFC 3339 date-time names (offset required), or None if it is not one."""
    match = _RFC3339.fullmatch(value)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    fraction, zulu, sign, offset_hours, offset_minutes = match.groups()[6:]
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    if second > 60:
        return None
    if zulu:
        zone = UTC
    elif int(offset_hours) > 23 or int(offset_minutes) > 59:
        return None
    else:
        offset = timedelta(hours=int(offset_hours), minutes=int(offset_minutes))
        zone = timezone(-offset if sign == "-" else offset)
    try:
        # A leap second (:60) is counted as the last instant of its minute; datetime has no :60.
        return datetime(year, month, day, hour, minute, min(second, 59), micro, tzinfo=zone)
    except ValueError:
        return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isinf(value):
        return value
    raise ValueError(f"the number {text[:40]} is out of range")


# Digits of the largest integer a double can hold (1.8e308); checked on the text, since CPython refuses
# to convert more than 4,300 digits at all, with advice meant for Python programmers.
_MAX_INT_DIGITS = 309


def _float_sized_int(text: str) -> int:
    if len(text.lstrip("-")) <= _MAX_INT_DIGITS:
        value = int(text)
        try:
            float(value)
            return value
        except OverflowError:
            pass
    raise ValueError(f"the number {text[:40]} is out of range")


def loads_strict(text: str) -> Any:
    """Parse RFC 8259 JSON only: NaN, Infinity and numbers too large for a float are errors."""
    return json.loads(
        text, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_float_sized_int
    )


def has_lone_surrogate(value: Any, text: str) -> bool:
    """Whether a value parsed from text holds a lone UTF-16 surrogate, which UTF-8 cannot encode."""
    if "\\u" not in text:  # in valid UTF-8 text a surrogate can only come from an escape like \ud800
        return False
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_optional_fields(payload: dict[str, Any]) -> Invalid | None:
    for name in OPTIONAL_STRING_FIELDS:
        value = payload.get(name)
        if value is not None and not isinstance(value, str):
            return Invalid(
                InvalidReason.WRONG_TYPE, f"{name} must be a string or null, got {type(value).__name__}"
            )
    tickers = payload.get("tickers")
    if tickers is not None and (
        not isinstance(tickers, list) or not all(isinstance(ticker, str) for ticker in tickers)
    ):
        return Invalid(InvalidReason.WRONG_TYPE, "tickers must be a list of strings or null")
    published_at = payload.get("published_at")
    if published_at is not None:
        if not isinstance(published_at, str):
            return Invalid(
                InvalidReason.WRONG_TYPE,
                f"published_at must be a string or null, got {type(published_at).__name__}",
            )
        if parse_rfc3339(published_at) is None:
            return Invalid(
                InvalidReason.BAD_TIMESTAMP, f"published_at is not RFC 3339: {published_at[:64]!r}"
            )
    return None


def _text_of(payload: dict[str, Any]) -> str | Invalid:
    for name in TEXT_FIELDS:
        value = payload.get(name)
        if value is not None and not isinstance(value, str):
            return Invalid(InvalidReason.WRONG_TYPE, f"{name} must be a string, got {type(value).__name__}")
    text = first_visible_text(payload.get(name) for name in TEXT_FIELDS)
    if text is None:
        return Invalid(InvalidReason.MISSING_TEXT, "a non-empty 'headline' (or 'text') is required")
    return text


def first_visible_text(values: Iterable[object]) -> str | None:
    """The first value that is a string with visible text (the headline, else the text), or None."""
    return next((value for value in values if isinstance(value, str) and has_visible_text(value)), None)


def has_visible_text(value: str) -> bool:
    """Whether a text shows anything once HTML entities are decoded.

    Spaces, format and control characters, combining marks (a variation selector) and U+FFFD do not
    count: the tokenizer drops all of them, so ``&nbsp;`` or a zero-width space, which pass
    ``str.strip``, would reach the model as an empty text.
    """
    return any(
        unicodedata.category(char)[0] not in "ZCM" and char != "\ufffd" for char in html.unescape(value)
    )


def validate(payload: Any) -> NewsItem | Invalid:
    """Check a decoded JSON value against the input contract."""
    if not isinstance(payload, dict):
        return Invalid(InvalidReason.NOT_OBJECT, f"expected a JSON object, got {type(payload).__name__}")
    message_id = payload.get("id")
    if message_id is None:
        return Invalid(InvalidReason.MISSING_ID, "a non-empty string 'id' is required")
    if not isinstance(message_id, str):
        return Invalid(InvalidReason.WRONG_TYPE, f"id must be a string, got {type(message_id).__name__}")
    if not message_id.strip():
        return Invalid(InvalidReason.MISSING_ID, "a non-empty string 'id' is required")
    text = _text_of(payload)
    if isinstance(text, Invalid):
        return text
    problem = _check_optional_fields(payload)
    if problem is not None:
        return problem
    return NewsItem(id=message_id, text=text, fields=payload)


def decode(raw: bytes | None, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> NewsItem | Invalid:
    """Decode one Kafka value (UTF-8 JSON) and validate it; never raises on bad input."""
    if not raw:
        return Invalid(InvalidReason.EMPTY, "the message value is empty")
    if len(raw) > max_bytes:
        return Invalid(InvalidReason.OVERSIZED, f"{len(raw)} bytes is over the {max_bytes}-byte limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return Invalid(InvalidReason.NOT_UTF8, f"invalid UTF-8 at byte {error.start}")
    try:
        payload = loads_strict(text)
    except (ValueError, RecursionError) as error:
        return Invalid(InvalidReason.NOT_JSON, str(error)[:200])
    if has_lone_surrogate(payload, text):
        return Invalid(InvalidReason.NOT_UTF8, "a string holds a lone UTF-16 surrogate escape (e.g. \\ud800)")
    return validate(payload)
