"""Label sets of the two heads and the mapping from the datasets' integer labels."""

from __future__ import annotations

TOPIC_LABELS: tuple[str, ...] = (
    "Analyst Update",
    "Fed | Central Banks",
    "Company | Product News",
    "Treasuries | Corporate Debt",
    "Dividend",
    "Earnings",
    "Energy | Oil",
    "Financials",
    "Currencies",
    "General News | Opinion",
    "Gold | Metals | Materials",
    "IPO",
    "Legal | Regulation",
    "M&A | Investments",
    "Macro",
    "Markets",
    "Politics",
    "Personnel Change",
    "Stock Commentary",
    "Stock Movement",
)

SENTIMENT_LABELS: tuple[str, ...] = ("negative", "neutral", "positive")

# The datasets use 0 = Bearish, 1 = Bullish, 2 = Neutral; the model's head is ordered
# negative / neutral / positive so that index order reads like a scale.
_DATASET_SENTIMENT_TO_HEAD: dict[int, int] = {0: 0, 1: 2, 2: 1}

IGNORE_INDEX = -100
"""Label value meaning "this row has no label for this head" (masked in the loss)."""


def sentiment_from_dataset(label: int) -> int:
    """Map a dataset sentiment label (0 Bearish, 1 Bullish, 2 Neutral) to the head's index."""
    try:
        return _DATASET_SENTIMENT_TO_HEAD[int(label)]
    except KeyError:
        raise ValueError(f"unknown sentiment label {label!r}; expected 0, 1 or 2") from None


def topic_from_dataset(label: int) -> int:
    """Validate a dataset topic label (0..19) and return it as the head's index."""
    index = int(label)
    if not 0 <= index < len(TOPIC_LABELS):
        raise ValueError(f"unknown topic label {label!r}; expected 0..{len(TOPIC_LABELS) - 1}")
    return index


def sentiment_index(name: str) -> int:
    """Index of a sentiment given by name (negative/neutral/positive, or Bearish/Bullish/Neutral)."""
    aliases = {"bearish": "negative", "bullish": "positive"}
    key = aliases.get(name.strip().lower(), name.strip().lower())
    if key not in SENTIMENT_LABELS:
        raise ValueError(f"unknown sentiment {name!r}; expected one of {', '.join(SENTIMENT_LABELS)}")
    return SENTIMENT_LABELS.index(key)


def topic_index(name: str) -> int:
    """Index of a topic given by its published name (case-insensitive)."""
    lowered = [label.lower() for label in TOPIC_LABELS]
    key = name.strip().lower()
    if key not in lowered:
        raise ValueError(f"unknown topic {name!r}")
    return lowered.index(key)
