from pathlib import Path

import pytest

from model.data import (
    DEFAULT_DATA_DIR,
    DEFAULT_EXCLUDED_SOURCES,
    data_dir_of,
    load_training_table,
    recorded_data_dir,
    run_splits,
    split_train_dev,
    splits_of_run,
)
from model.text import dedupe_key, normalize_text


def test_normalize_strips_urls_entities_and_whitespace() -> None:
    text = "Apple &amp; Tesla rally\n  https://t.co/abc123   more"
    assert normalize_text(text) == "Apple & Tesla rally more"


def test_url_only_text_is_kept() -> None:
    assert normalize_text("https://t.co/abc") == "https://t.co/abc"


def test_reposts_with_new_links_share_a_dedupe_key() -> None:
    first = "Stocks slide as yields jump https://t.co/AAA"
    second = "Stocks  slide as yields jump\u2026 https://t.co/BBB"
    assert dedupe_key(first) == dedupe_key(second)


def test_no_near_duplicate_straddles_train_and_dev() -> None:
    rows = load_training_table()
    splits = split_train_dev(rows)
    train_keys = set(splits.train["text"].map(dedupe_key))
    dev_keys = set(splits.dev["text"].map(dedupe_key))
    assert not train_keys & dev_keys
    assert 0.07 < len(splits.dev) / len(rows) < 0.13


def test_noisy_source_is_excluded_by_default() -> None:
    rows = load_training_table()
    assert "poojathakoor/twitter-stock-sentiment" not in set(rows["source"])
    assert {"twitter_topic_train.csv", "twitter_sentiment_train.csv"} <= set(rows["source"])


def test_train_only_source_adds_training_rows_and_leaves_dev_unchanged() -> None:
    pooja = "poojathakoor/twitter-stock-sentiment"
    default = split_train_dev(load_training_table())
    with_pooja = run_splits(DEFAULT_DATA_DIR, DEFAULT_EXCLUDED_SOURCES, (pooja,), 10, 13)
    assert with_pooja.dev["text"].tolist() == default.dev["text"].tolist()
    added = with_pooja.train[with_pooja.train["source"] == pooja]
    assert len(added) > 1000
    assert not set(added["text"].map(dedupe_key)) & set(default.dev["text"].map(dedupe_key))
    # A run's recorded config rebuilds the same split (export's calibration texts come from it).
    config = {
        "data_dir": str(DEFAULT_DATA_DIR),
        "excluded_sources": list(DEFAULT_EXCLUDED_SOURCES),
        "train_only_sources": [pooja],
        "dev_percent": 10,
        "seed": 13,
    }
    assert len(splits_of_run(config).train) == len(with_pooja.train)


def test_recorded_data_dir_travels_with_the_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The shipped manifest records its data folder; an absolute path would name the build machine.
    assert recorded_data_dir(DEFAULT_DATA_DIR) == "data"
    assert recorded_data_dir(tmp_path) == str(tmp_path.resolve())
    assert data_dir_of("data") == DEFAULT_DATA_DIR and data_dir_of(tmp_path) == tmp_path
    monkeypatch.chdir(tmp_path)  # a relative record is read from the repository, not the working folder
    config = {"data_dir": "data", "excluded_sources": [], "dev_percent": 10, "seed": 13}
    assert len(splits_of_run(config).dev) == len(
        split_train_dev(load_training_table(DEFAULT_DATA_DIR, ())).dev
    )
