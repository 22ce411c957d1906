"""The rows a training run learns from: split, sampled, extended by feedback, pseudo-labelled."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from model.calibration import softmax
from model.checkpoint import REPORT_FILE, load_checkpoint
from model.data import run_splits
from model.dev_eval import predict_logits
from model.gold import is_gold
from model.labels import IGNORE_INDEX, SENTIMENT_LABELS, TOPIC_LABELS
from model.text import dedupe_key
from model.train_config import TrainConfig

_CASHTAG = re.compile(r"\$[A-Za-z][A-Za-z.]{0,5}\b[\s:,-]*")


def drop_cashtags(text: str) -> str:
    """The text without $TICKER tokens (augmentation: news sentences rarely have them)."""
    return _CASHTAG.sub("", text).strip() or text


def select_rows(
    config: TrainConfig, log: Callable[[str], None]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Train and dev rows for the run, and the counts of extra rows it added (may be empty)."""
    splits = run_splits(
        config.data_dir, config.excluded_sources, config.train_only_sources, config.dev_percent, config.seed
    )
    train_rows, dev_rows = splits.train, splits.dev
    if config.max_rows is not None:
        train_rows = train_rows.sample(n=min(config.max_rows, len(train_rows)), random_state=config.seed)
        dev_rows = dev_rows.sample(n=min(config.max_rows, len(dev_rows)), random_state=config.seed)
        train_rows, dev_rows = train_rows.reset_index(drop=True), dev_rows.reset_index(drop=True)
    extra_counts: dict[str, int] = {}
    if config.gold_share > 0:
        dev_rows = dev_rows[~dev_rows["text"].map(lambda t: _gold(t, config))].reset_index(drop=True)
    if config.extra_rows_file is not None:
        train_rows, extra_counts = add_extra_rows(train_rows, config)
        log(f"extra rows from {config.extra_rows_file}: {extra_counts}")
    return train_rows, dev_rows, extra_counts


def label_distribution(rows: pd.DataFrame) -> dict[str, list[int]]:
    """Rows per label index for each task."""
    return {
        task: [int((rows[task] == i).sum()) for i in range(len(names))]
        for task, names in (("topic", TOPIC_LABELS), ("sentiment", SENTIMENT_LABELS))
    }


def _gold(text: str, config: TrainConfig) -> bool:
    return is_gold(text, config.dev_percent, config.seed, config.gold_share)


def add_extra_rows(train_rows: pd.DataFrame, config: TrainConfig) -> tuple[pd.DataFrame, dict[str, int]]:
    """Append the extra labelled rows (minus any in the gold set); they replace base rows with the same text."""
    assert config.extra_rows_file is not None
    extra = pd.read_csv(config.extra_rows_file, keep_default_na=False, encoding="utf-8")
    extra = extra[["text", "topic", "sentiment", "source"]].astype(
        {"text": str, "topic": int, "sentiment": int, "source": str}
    )
    in_gold = extra["text"].map(lambda t: _gold(t, config)).astype(bool) if config.gold_share > 0 else None
    dropped = 0 if in_gold is None else int(in_gold.sum())
    if in_gold is not None:
        extra = extra[~in_gold]
    corrected = set(extra["text"].map(dedupe_key))
    replaced = train_rows["text"].map(dedupe_key).isin(corrected).to_numpy()
    combined = pd.concat([train_rows[~replaced], extra], ignore_index=True)
    return combined, {
        "extra_rows": len(extra),
        "extra_rows_dropped_gold": dropped,
        "base_rows_replaced": int(replaced.sum()),
    }


def shuffle_labels(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Permute each task's labels among the rows that carry one (keeps the marginals, breaks the signal)."""
    shuffled = rows.copy()
    rng = np.random.default_rng(seed + 1)
    for task in ("topic", "sentiment"):
        labelled = shuffled[task].to_numpy() != IGNORE_INDEX
        values = shuffled.loc[labelled, task].to_numpy()
        shuffled.loc[labelled, task] = rng.permutation(values)
    return shuffled


def fill_with_teacher(
    rows: pd.DataFrame, token_ids: list[list[int]], teacher_dir: Path, threshold: float
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Self-training: give each row the label it lacks where a trained teacher is confident.

    Topic tweets carry no sentiment label and vice versa; a teacher trained on the same
    train split (never on dev) labels the missing head when its calibrated probability
    reaches threshold, so both heads learn from every row.
    """
    teacher = load_checkpoint(teacher_dir)
    report = json.loads((teacher_dir.parent / REPORT_FILE).read_text())
    topic_logits, sentiment_logits = predict_logits(teacher, token_ids)
    filled = rows.copy()
    counts: dict[str, int] = {}
    for task, logits in (("topic", topic_logits), ("sentiment", sentiment_logits)):
        probs = softmax(logits, report["temperatures"][task])
        missing = filled[task].to_numpy() == IGNORE_INDEX
        confident = probs.max(axis=1) >= threshold
        chosen = missing & confident
        filled.loc[chosen, task] = probs.argmax(axis=1)[chosen]
        counts[f"{task}_pseudo_labels"] = int(chosen.sum())
    return filled, counts
