"""Analyst feedback: validation of corrections, the accumulating store, CSV folders read once."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from model.feedback import (
    STORE_FILE,
    FeedbackStore,
    LabelRow,
    ValidationReport,
    validate_messages,
    validate_row,
    validate_rows,
)
from model.labels import IGNORE_INDEX


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (["not", "a", "mapping"], "not_object"),
        ({"text": "Fed hikes"}, "missing_id"),
        ({"id": "  ", "text": "Fed hikes", "topic": 1}, "missing_id"),
        ({"id": "a", "text": "", "topic": 1}, "missing_text"),
        ({"id": "a", "text": 42, "topic": 1}, "missing_text"),
        ({"id": "a", "text": "x" * 20_001, "topic": 1}, "text_too_long"),
        ({"id": "a", "text": "Fed hikes"}, "no_label"),
        ({"id": "a", "text": "Fed hikes", "topic": "", "sentiment": None}, "no_label"),
        ({"id": "a", "text": "Fed hikes", "topic": "Weather"}, "unknown_topic"),
        ({"id": "a", "text": "Fed hikes", "topic": 20}, "unknown_topic"),
        ({"id": "a", "text": "Fed hikes", "topic": True}, "unknown_topic"),
        ({"id": "a", "text": "Fed hikes", "sentiment": "meh"}, "unknown_sentiment"),
        ({"id": "a", "text": "Fed hikes", "sentiment": 1}, "unknown_sentiment"),
    ],
)
def test_bad_rows_give_their_reason(raw: object, reason: str) -> None:
    assert validate_row(raw, "test") == reason


def test_valid_rows_are_canonicalised() -> None:
    row = validate_row(
        {"id": 7, "text": " Fed hikes ", "topic": "fed | central banks", "sentiment": "Bearish"}, "t"
    )
    assert row == LabelRow("7", "Fed hikes", "Fed | Central Banks", "negative", "t")
    only_topic = validate_row({"id": "b", "headline": "Gold rallies", "topic": "10"}, "t")
    assert isinstance(only_topic, LabelRow) and only_topic.topic == "Gold | Metals | Materials"
    assert only_topic.sentiment == ""


def test_kafka_messages_report_bad_payloads_without_failing() -> None:
    values = [
        ("p0@0", json.dumps({"id": "a", "text": "Stocks fall", "sentiment": "negative"}).encode()),
        ("p0@1", None),
        ("p0@2", b"\xff\xfe"),
        ("p0@3", b"{not json"),
        ("p0@4", json.dumps({"id": "b", "text": "Stocks rise"}).encode()),
        # JSON, but a string: its text must not become a reason (reasons are a closed set).
        ("p0@5", json.dumps("Stocks fall on profit warning").encode()),
        ("p0@6", b"[1, 2]"),
        # Valid UTF-8 JSON, but a lone surrogate escape: the CSV store (UTF-8) could not write it.
        ("p0@7", b'{"id": "c", "text": "Stocks \\ud800 fall", "sentiment": "negative"}'),
    ]
    rows, report = validate_messages(values)
    assert [row.id for row in rows] == ["a"]
    assert report.valid == 1
    assert dict(report.bad) == {
        "empty_payload": 1,
        "not_utf8": 2,
        "not_json": 1,
        "no_label": 1,
        "not_object": 2,
    }
    assert report.as_json()["bad_total"] == 7
    assert "p0@4: no_label" in report.examples


def test_store_accumulates_and_latest_correction_wins(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "fb")
    assert len(store) == 0
    first = validate_row({"id": "a", "text": "Stocks fall", "sentiment": "negative"}, "kafka")
    second = validate_row({"id": "b", "text": "Fed holds rates", "topic": "Fed | Central Banks"}, "kafka")
    assert isinstance(first, LabelRow) and isinstance(second, LabelRow)
    assert store.add([first, second]) == {"added": 2, "updated": 0}
    fixed = validate_row({"id": "a", "text": "Stocks fall", "sentiment": "neutral"}, "kafka")
    assert isinstance(fixed, LabelRow)
    assert store.add([fixed]) == {"added": 0, "updated": 1}
    frame = store.training_frame().set_index("text")
    assert len(frame) == 2
    assert frame.loc["Stocks fall", "sentiment"] == 1 and frame.loc["Stocks fall", "topic"] == IGNORE_INDEX
    assert frame.loc["Fed holds rates", "topic"] == 1
    assert frame.loc["Fed holds rates", "sentiment"] == IGNORE_INDEX
    assert set(frame["source"]) == {"feedback:kafka"}


def test_folder_files_are_read_once_and_bad_files_are_reported(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.csv").write_text(
        'id,text,topic,sentiment\n1,"Oil jumps, OPEC cuts",Energy | Oil,positive\n2,,Earnings,\n3,Nothing,,\n'
    )
    (folder / "b.csv").write_bytes(b"id,text\n\xff\xfe\n")
    store = FeedbackStore(tmp_path / "fb")
    report = store.ingest_folder(folder)
    assert report.valid == 1
    assert dict(report.bad) == {"missing_text": 1, "no_label": 1, "unreadable_file (UnicodeDecodeError)": 1}
    assert "a.csv:3: missing_text" in report.examples
    again = store.ingest_folder(folder)
    assert again.valid == 0 and not again.bad, "processed files are remembered"
    (folder / "a.csv").write_text("id,text,topic,sentiment\n1,Oil jumps,Energy | Oil,negative\n")
    changed = store.ingest_folder(folder)
    assert changed.valid == 1, "a changed file is read again"
    assert store.table().set_index("id").loc["1", "sentiment"] == "negative"
    assert len(store) == 1


def test_a_folder_or_a_broken_link_named_csv_is_reported_not_fatal(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "archive.csv").mkdir()
    (folder / "gone.csv").symlink_to(tmp_path / "missing.csv")
    (folder / "loop.csv").symlink_to(folder / "loop.csv")
    (folder / "ok.csv").write_text("id,text,topic,sentiment\n1,Oil jumps,Energy | Oil,positive\n")
    report = FeedbackStore(tmp_path / "fb").ingest_folder(folder)
    assert report.valid == 1
    assert dict(report.bad) == {
        "unreadable_file (IsADirectoryError)": 1,
        "unreadable_file (FileNotFoundError)": 1,
        "unreadable_file (OSError)": 1,
    }


def test_feedback_rows_replace_base_rows_and_never_enter_from_the_gold_set(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import pandas as pd

    from model.gold import is_gold
    from model.train_config import TrainConfig
    from model.train_rows import add_extra_rows

    gold_text = next(f"Gold candidate {i}" for i in range(10_000) if is_gold(f"Gold candidate {i}", share=50))
    base = pd.DataFrame(
        {
            "text": ["Stocks fall https://t.co/x", "Oil rises"],
            "topic": [IGNORE_INDEX, 6],
            "sentiment": [2, IGNORE_INDEX],
            "source": ["base", "base"],
        }
    )
    store = FeedbackStore(tmp_path / "fb")
    rows, _ = validate_rows(
        [
            ("1", {"id": "1", "text": "Stocks fall", "sentiment": "negative"}),
            ("2", {"id": "2", "text": gold_text, "topic": "Macro"}),
        ],
        "kafka",
    )
    store.add(rows)
    extra_file = tmp_path / "extra.csv"
    store.training_frame().to_csv(extra_file, index=False)
    config = TrainConfig(
        base_dir=tmp_path, data_dir=tmp_path, out_dir=tmp_path, extra_rows_file=extra_file, gold_share=50
    )
    combined, counts = add_extra_rows(base, config)
    assert counts == {"extra_rows": 1, "extra_rows_dropped_gold": 1, "base_rows_replaced": 1}
    assert sorted(combined["text"]) == ["Oil rises", "Stocks fall"]
    assert combined.set_index("text").loc["Stocks fall", "sentiment"] == 0


# Any text a correction may carry: control characters, separators, quotes, line breaks of all kinds.
texts = st.text(st.characters(codec="utf-8"), min_size=1, max_size=60).filter(lambda text: bool(text.strip()))


@given(st.lists(st.tuples(texts, texts), min_size=1, max_size=4, unique_by=lambda pair: pair[0].strip()))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_id_and_text_round_trip_through_the_store(tmp_path: Path, pairs: list[tuple[str, str]]) -> None:
    rows, report = validate_rows(
        [(str(i), {"id": i_d, "text": text, "topic": "Earnings"}) for i, (i_d, text) in enumerate(pairs)], "t"
    )
    assume(report.valid == len(pairs))
    store = FeedbackStore(tmp_path / f"fb-{uuid.uuid4().hex}")
    store.add(rows)
    table = store.table()
    assert list(table["id"]) == [row.id for row in rows]
    assert list(table["text"]) == [row.text for row in rows]
    frame_report = ValidationReport()
    assert list(store.training_frame(frame_report)["text"]) == [row.text for row in rows]
    assert not frame_report.bad


def test_a_bare_carriage_return_keeps_its_row_whole(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "fb")
    rows, _ = validate_rows(
        [
            (
                "1",
                {"id": "a1", "text": "Acme beats\restimates", "topic": "Earnings", "sentiment": "positive"},
            ),
            ("2", {"id": "a2", "text": "Fed holds rates", "topic": "Fed | Central Banks"}),
        ],
        "kafka",
    )
    store.add(rows)
    assert len(store) == 2
    assert list(store.training_frame()["text"]) == ["Acme beats\restimates", "Fed holds rates"]


def test_rows_broken_in_the_stored_file_are_skipped_with_their_reason(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "fb")
    store.directory.mkdir()
    # What an unquoted bare "\r" in a text used to leave: the reader splits that row in two.
    store.path.write_text(
        "id,text,topic,sentiment,source,received_at\n"
        "a1,Acme beats\restimates,Earnings,positive,kafka,2026-01-01T00:00:00Z\n"
        "a2,Fed holds rates,Fed | Central Banks,neutral,kafka,2026-01-01T00:00:00Z\n",
        newline="",
    )
    report = ValidationReport()
    frame = store.training_frame(report)
    assert list(frame["text"]) == ["Fed holds rates"]
    assert dict(report.bad) == {"no_label": 1, "unknown_topic": 1}
    assert report.examples == [f"{STORE_FILE} row 1: no_label", f"{STORE_FILE} row 2: unknown_topic"]


def test_a_partial_correction_keeps_the_label_given_earlier(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "fb")
    text = "Acme to buy Beta for $2bn"
    for labels in ({"topic": "M&A | Investments"}, {"sentiment": "positive"}):
        rows, _ = validate_rows([("1", {"id": "n42", "text": text, **labels})], "kafka")
        assert store.add(rows)["added" if "topic" in labels else "updated"] == 1
    stored = store.table().set_index("id").loc["n42"]
    assert (stored["topic"], stored["sentiment"]) == ("M&A | Investments", "positive")
    rows, _ = validate_rows([("1", {"id": "n42", "text": text, "topic": "Markets"})], "kafka")
    store.add(rows)
    stored = store.table().set_index("id").loc["n42"]
    assert (stored["topic"], stored["sentiment"]) == ("Markets", "positive"), "a given label still replaces"
    assert len(store) == 1
