"""Text normalisation shared by training and serving, so both see the same input."""

from __future__ import annotations

import html
import re

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Unescape HTML entities, drop URLs and collapse whitespace.

    Links carry no sentiment and, in the tweet training data, cost 10-20 tokens each;
    dropping them keeps the model focused on the words a news sentence also has.
    A text that is nothing but a link is kept as it was.
    """
    unescaped = html.unescape(text)
    stripped = _WHITESPACE.sub(" ", _URL.sub(" ", unescaped)).strip()
    return stripped or _WHITESPACE.sub(" ", unescaped).strip()


def dedupe_key(text: str) -> str:
    """Key under which near-duplicates (equal once URLs are stripped) collide."""
    without_urls = _URL.sub(" ", text.replace("\u2026", " ").replace("\xa0", " "))
    return _WHITESPACE.sub(" ", without_urls).strip().casefold()
