"""Training data: load the labelled CSVs into one table and split off an honest dev set."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from model.labels import IGNORE_INDEX, sentiment_from_dataset, topic_from_dataset
from model.text import dedupe_key

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPOSITORY_ROOT / "data"
TOPIC_FILE = "twitter_topic_train.csv"
SENTIMENT_FILES = ("twitter_sentiment_train.csv", "extra_sentiment_train.csv")
# Very short StockTwits fragments with cashtags stripped ("adding" labelled bullish); the
# data README flags them as noisy, and they teach nothing about news sentences.
DEFAULT_EXCLUDED_SOURCES = ("poojathakoor/twitter-stock-sentiment",)


@dataclass(frozen=True)
class Splits:
    """Train and dev tables with columns text, topic, sentiment, source."""

    train: pd.DataFrame
    dev: pd.DataFrame


def recorded_data_dir(data_dir: Path | str) -> str:
    """data_dir as reports and manifests record it: relative to the repository when inside it.

    An absolute path would tie a shipped manifest to the machine that built it.
    """
    resolved = Path(data_dir).resolve()
    return (
        str(resolved.relative_to(REPOSITORY_ROOT))
        if resolved.is_relative_to(REPOSITORY_ROOT)
        else str(resolved)
    )


def data_dir_of(recorded: Path | str) -> Path:
    """The folder a recorded data_dir names (a relative one is relative to the repository)."""
    path = Path(recorded)
    return path if path.is_absolute() else REPOSITORY_ROOT / path


# Every training file has these; a sentiment file may add a per-row "source".
REQUIRED_COLUMNS = ("text", "label")


class DataError(ValueError):
    """A training file of a data folder is missing or is not the expected CSV."""


def check_data_dir(data_dir: Path) -> None:
    """Raise DataError naming the first training file of data_dir that is missing or malformed."""
    for name in (TOPIC_FILE, *SENTIMENT_FILES):
        _read(data_dir / name, header_only=True)


def _read(path: Path, header_only: bool = False) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, keep_default_na=False, encoding="utf-8", nrows=0 if header_only else None)
    except FileNotFoundError:
        expected = ", ".join((TOPIC_FILE, *SENTIMENT_FILES))
        raise DataError(f"{path}: no such file (a data folder holds {expected})") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataError(f"{path}: not a readable CSV ({type(error).__name__}: {error})") from None
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise DataError(f"{path}: no {' or '.join(map(repr, missing))} column (it has {list(table.columns)})")
    return table


def load_training_table(
    data_dir: Path = DEFAULT_DATA_DIR,
    excluded_sources: tuple[str, ...] = DEFAULT_EXCLUDED_SOURCES,
) -> pd.DataFrame:
    """Read every labelled file into one table; a missing label is IGNORE_INDEX."""
    topic = _read(data_dir / TOPIC_FILE)
    frames = [
        pd.DataFrame(
            {
                "text": topic["text"],
                "topic": topic["label"].map(topic_from_dataset),
                "sentiment": IGNORE_INDEX,
                "source": TOPIC_FILE,
            }
        )
    ]
    for name in SENTIMENT_FILES:
        table = _read(data_dir / name)
        source = table["source"] if "source" in table.columns else name
        frames.append(
            pd.DataFrame(
                {
                    "text": table["text"],
                    "topic": IGNORE_INDEX,
                    "sentiment": table["label"].map(sentiment_from_dataset),
                    "source": source,
                }
            )
        )
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[~rows["source"].isin(excluded_sources)]
    rows = rows[rows["text"].str.strip() != ""]
    return rows.reset_index(drop=True)


def is_dev(text: str, dev_percent: int, seed: int) -> bool:
    """Whether a text belongs to the dev split; near-duplicates always land together."""
    digest = hashlib.sha256(f"{seed}:{dedupe_key(text)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100 < dev_percent


def split_train_dev(rows: pd.DataFrame, dev_percent: int = 10, seed: int = 13) -> Splits:
    """Hash-split rows by their URL-stripped text so no near-duplicate straddles the split."""
    dev_mask = rows["text"].map(lambda text: is_dev(text, dev_percent, seed)).astype(bool)
    return Splits(train=rows[~dev_mask].reset_index(drop=True), dev=rows[dev_mask].reset_index(drop=True))


def keep_out_of_dev(splits: Splits, sources: tuple[str, ...]) -> Splits:
    """Drop these sources' dev rows (train-only sources), so dev is the same with or without them."""
    return Splits(
        train=splits.train, dev=splits.dev[~splits.dev["source"].isin(sources)].reset_index(drop=True)
    )


def run_splits(
    data_dir: Path,
    excluded_sources: tuple[str, ...],
    train_only_sources: tuple[str, ...],
    dev_percent: int,
    seed: int,
) -> Splits:
    """A training run's train/dev split: excluded sources left out, train-only ones in train alone."""
    excluded = tuple(source for source in excluded_sources if source not in train_only_sources)
    rows = load_training_table(data_dir, excluded)
    return keep_out_of_dev(split_train_dev(rows, dev_percent, seed), train_only_sources)


def splits_of_run(config: dict[str, Any]) -> Splits:
    """The train/dev split a training run used, rebuilt from its recorded config (report["config"])."""
    return run_splits(
        data_dir_of(config["data_dir"]),
        tuple(config["excluded_sources"]),
        tuple(config.get("train_only_sources", ())),
        config["dev_percent"],
        config["seed"],
    )
