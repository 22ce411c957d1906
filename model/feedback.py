"""Analyst feedback: validate labelled corrections and accumulate them in a CSV store.

A feedback row is {"id": str, "text": str, "topic": name or 0..19, "sentiment": name} with at
least one of topic / sentiment. It arrives as JSON on the `news.labels` topic (the reader lives
in finsent.labels_topic) or as rows of CSV files dropped in a folder. Bad rows are counted with
a reason and skipped, never fatal. The store keeps one row per id: the latest correction wins,
label by label (a correction giving only a sentiment keeps the topic given earlier). Every field
is quoted, so any text (a bare carriage return included) reads back as it was written.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from model.labels import (
    IGNORE_INDEX,
    SENTIMENT_LABELS,
    TOPIC_LABELS,
    sentiment_index,
    topic_from_dataset,
    topic_index,
)
from model.registry import utc_now, write_atomic

STORE_FILE = "feedback.csv"
PROCESSED_FILE = "processed_files.json"
COLUMNS = ("id", "text", "topic", "sentiment", "source", "received_at")
MAX_TEXT_CHARS = 20_000
_EXAMPLES_PER_REASON = 3


T = TypeVar("T")


@dataclass(frozen=True)
class LabelRow:
    """One validated correction (label names; '' for a label not given)."""

    id: str
    text: str
    topic: str
    sentiment: str
    source: str


@dataclass
class ValidationReport:
    """What a batch of raw rows gave: valid count, bad rows by reason, a few examples."""

    valid: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def reject(self, reason: str, where: str) -> None:
        """Count one bad row."""
        self.bad[reason] += 1
        if self.bad[reason] <= _EXAMPLES_PER_REASON:
            self.examples.append(f"{where}: {reason}")

    def merge(self, other: ValidationReport) -> None:
        """Add another report's counts."""
        self.valid += other.valid
        self.bad.update(other.bad)
        self.examples.extend(other.examples)

    def as_json(self) -> dict[str, Any]:
        """Plain dict for the retrain report."""
        return {
            "valid": self.valid,
            "bad": dict(self.bad),
            "bad_total": sum(self.bad.values()),
            "examples": self.examples,
        }


def _label(value: Any, kind: str) -> str:
    """Canonical label name of a topic/sentiment value, '' when absent; ValueError when unknown."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return ""
    if kind == "topic":
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError("unknown_topic")
        try:
            if isinstance(value, int) or value.strip().isdigit():
                return TOPIC_LABELS[topic_from_dataset(int(value))]
            return TOPIC_LABELS[topic_index(value)]
        except ValueError:
            raise ValueError("unknown_topic") from None
    if not isinstance(value, str):
        raise ValueError("unknown_sentiment")
    try:
        return SENTIMENT_LABELS[sentiment_index(value)]
    except ValueError:
        raise ValueError("unknown_sentiment") from None


def _encodes_as_utf8(*values: str) -> bool:
    try:
        for value in values:
            value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_row(raw: Any, source: str) -> LabelRow | str:
    """A LabelRow, or the reason the raw mapping is not a valid correction."""
    if not isinstance(raw, Mapping):
        return "not_object"
    row_id, text = raw.get("id"), raw.get("text", raw.get("headline"))
    if isinstance(row_id, int) and not isinstance(row_id, bool):
        row_id = str(row_id)
    if not isinstance(row_id, str) or not row_id.strip():
        return "missing_id"
    if not isinstance(text, str) or not text.strip():
        return "missing_text"
    if len(text) > MAX_TEXT_CHARS:
        return "text_too_long"
    if not _encodes_as_utf8(row_id, text):
        return "not_utf8"  # a lone surrogate escape such as "\ud800": the CSV store could not hold it
    try:
        topic = _label(raw.get("topic"), "topic")
        sentiment = _label(raw.get("sentiment"), "sentiment")
    except ValueError as error:
        return str(error)
    if not topic and not sentiment:
        return "no_label"
    return LabelRow(row_id.strip(), text.strip(), topic, sentiment, source)


def validate_message(value: bytes | None) -> LabelRow | str:
    """A LabelRow, or the reason one `news.labels` message value is not a valid correction."""
    if not value:
        return "empty_payload"
    try:
        raw = json.loads(value.decode("utf-8"))
    except UnicodeDecodeError:
        return "not_utf8"
    except json.JSONDecodeError:
        return "not_json"
    return validate_row(raw, "kafka")


def _validate_all(
    items: Iterable[tuple[str, T]], check: Callable[[T], LabelRow | str]
) -> tuple[list[LabelRow], ValidationReport]:
    """Run check on each (where, item); the valid rows plus the report of bad ones."""
    report = ValidationReport()
    rows: list[LabelRow] = []
    for where, item in items:
        result = check(item)
        if isinstance(result, str):
            report.reject(result, where)
        else:
            rows.append(result)
            report.valid += 1
    return rows, report


def validate_rows(raws: Iterable[tuple[str, Any]], source: str) -> tuple[list[LabelRow], ValidationReport]:
    """Validate (where, raw mapping) pairs; valid rows plus the report of bad ones."""
    return _validate_all(raws, lambda raw: validate_row(raw, source))


def validate_messages(values: Iterable[tuple[str, bytes | None]]) -> tuple[list[LabelRow], ValidationReport]:
    """Validate raw Kafka message values (where, bytes) from the labels topic."""
    return _validate_all(values, validate_message)


class FeedbackStore:
    """Accumulated corrections in DIR/feedback.csv (one row per id) plus the CSV files already read."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    @property
    def path(self) -> Path:
        """The store's CSV file."""
        return self.directory / STORE_FILE

    def table(self) -> pd.DataFrame:
        """Every stored correction (columns COLUMNS; labels as names, '' when absent)."""
        if not self.path.is_file():
            return pd.DataFrame({name: pd.Series(dtype=str) for name in COLUMNS})
        return pd.read_csv(self.path, dtype=str, keep_default_na=False, encoding="utf-8")

    def __len__(self) -> int:
        return len(self.table())

    def add(self, rows: list[LabelRow]) -> dict[str, int]:
        """Persist rows (atomic rewrite); a later correction of an id replaces the earlier one label by label."""
        if not rows:
            return {"added": 0, "updated": 0}
        stored: dict[str, dict[str, str]] = {record["id"]: record for record in self._records()}
        known = set(stored)
        now = utc_now()
        for row in rows:
            record = {**row.__dict__, "received_at": now}
            earlier = validate_row(stored.pop(row.id, None), "")
            if isinstance(earlier, LabelRow):  # a label left empty now keeps its earlier value
                record["topic"] = row.topic or earlier.topic
                record["sentiment"] = row.sentiment or earlier.sentiment
            stored[row.id] = record
        combined = pd.DataFrame(list(stored.values()), columns=list(COLUMNS))
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, combined.to_csv(index=False, quoting=csv.QUOTE_ALL, lineterminator="\n"))
        ids = {row.id for row in rows}
        return {"added": len(ids - known), "updated": len(ids & known)}

    def training_frame(self, report: ValidationReport | None = None) -> pd.DataFrame:
        """The corrections as training rows: text, topic and sentiment indices (IGNORE_INDEX if absent), source.

        Stored rows that are no longer valid corrections (a store damaged by an older version's
        unquoted carriage returns, a hand edit) are skipped and counted in report.
        """
        rows, checked = _validate_all(
            ((f"{STORE_FILE} row {index + 1}", record) for index, record in enumerate(self._records())),
            lambda record: validate_row(record, record.get("source", "")),
        )
        if report is not None:
            report.merge(checked)
        return pd.DataFrame(
            {
                "text": [row.text for row in rows],
                "topic": [topic_index(row.topic) if row.topic else IGNORE_INDEX for row in rows],
                "sentiment": [
                    sentiment_index(row.sentiment) if row.sentiment else IGNORE_INDEX for row in rows
                ],
                "source": ["feedback:" + row.source for row in rows],
            },
            columns=["text", "topic", "sentiment", "source"],
        )

    def ingest_folder(self, folder: Path) -> ValidationReport:
        """Read every *.csv in folder not read before (by content hash); store valid rows."""
        processed = self._processed()
        report = ValidationReport()
        for path in sorted(Path(folder).glob("*.csv")):
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError as error:  # a sub-folder named *.csv, a dangling or looping link, no access
                report.reject(f"unreadable_file ({type(error).__name__})", path.name)
                continue
            if processed.get(path.name) == digest:
                continue
            rows, file_report = self._read_csv(path)
            self.add(rows)
            report.merge(file_report)
            processed[path.name] = digest
            write_atomic(self.directory / PROCESSED_FILE, json.dumps(processed, indent=2))
        return report

    def _records(self) -> list[dict[str, str]]:
        return [
            {str(key): value for key, value in record.items()} for record in self.table().to_dict("records")
        ]

    def _read_csv(self, path: Path) -> tuple[list[LabelRow], ValidationReport]:
        try:
            table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
            report = ValidationReport()
            report.reject(f"unreadable_file ({type(error).__name__})", path.name)
            return [], report
        records = table.to_dict(orient="records")
        return validate_rows(
            ((f"{path.name}:{line + 2}", record) for line, record in enumerate(records)), f"file:{path.name}"
        )

    def _processed(self) -> dict[str, str]:
        try:
            loaded: dict[str, str] = json.loads((self.directory / PROCESSED_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        return loaded
