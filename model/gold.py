"""The gold set: a fixed, hash-chosen half of the dev split that no training run ever sees.

A text is gold when it falls in the dev split (model/data.py: hashed by its URL-stripped,
case-folded text) *and* a second hash with its own salt puts it in the first `share` percent.
Both hashes depend only on the text, so the set is the same on every machine and run, near
duplicates land together, and `train(..., gold_share=...)` removes the same rows from its
calibration split and from analyst feedback. Champion and challenger are compared on it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from model.data import DEFAULT_EXCLUDED_SOURCES, is_dev, load_training_table
from model.text import dedupe_key

GOLD_SALT = "finsent-gold-v1"
DEFAULT_GOLD_SHARE = 50


def is_gold(text: str, dev_percent: int = 10, seed: int = 13, share: int = DEFAULT_GOLD_SHARE) -> bool:
    """Whether a text belongs to the gold set (a subset of the dev split)."""
    if share <= 0 or not is_dev(text, dev_percent, seed):
        return False
    digest = hashlib.sha256(f"{GOLD_SALT}:{dedupe_key(text)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100 < share


def gold_rows(
    data_dir: Path,
    *,
    dev_percent: int = 10,
    seed: int = 13,
    share: int = DEFAULT_GOLD_SHARE,
    max_rows: int | None = None,
    excluded_sources: tuple[str, ...] = DEFAULT_EXCLUDED_SOURCES,
) -> pd.DataFrame:
    """The gold rows (text, topic, sentiment, source); max_rows takes a fixed sample (CI)."""
    rows = load_training_table(data_dir, excluded_sources)
    mask = rows["text"].map(lambda text: is_gold(text, dev_percent, seed, share)).astype(bool)
    gold = rows[mask].reset_index(drop=True)
    if max_rows is not None and max_rows < len(gold):
        gold = gold.sample(n=max_rows, random_state=0).reset_index(drop=True)
    return gold
