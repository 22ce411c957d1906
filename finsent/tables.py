"""Reading and writing the CSV / JSONL files that `classify` and `evaluate` take."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from finsent.errors import UsageError

TEXT_COLUMNS = ("text", "headline")


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise UsageError(f"{path}: unsupported file type {suffix or '(none)'!r}; use .csv or .jsonl")


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or JSONL file; any problem becomes a UsageError naming it."""
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if not path.is_file():
        raise UsageError(f"{path}: not a regular file")
    kind = _format(path)
    raw = path.read_bytes()
    if not raw.strip():
        raise UsageError(f"{path}: file is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(
            f"{path}: not valid UTF-8 (byte {error.start}); re-encode the file as UTF-8"
        ) from None
    if kind == "jsonl":
        table = pd.DataFrame(_jsonl_records(text, path))
    else:
        try:
            table = pd.read_csv(path, keep_default_na=False, dtype=str, encoding="utf-8")
        except (ValueError, pd.errors.ParserError) as error:
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UsageError(f"{path}: cannot parse as CSV: {first_line}") from None
    if len(table) == 0:
        raise UsageError(f"{path}: has a header but no rows")
    return table


def _jsonl_records(text: str, path: Path) -> list[dict[str, Any]]:
    """One JSON object per non-blank line; the first bad line is named with its number."""
    records: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UsageError(f"{path}: cannot parse as JSONL: line {number}: {error.msg}") from None
        if not isinstance(record, dict):
            raise UsageError(
                f"{path}: cannot parse as JSONL: line {number} is a JSON {_json_kind(record)}, "
                "not an object (one {...} per line)"
            )
        records.append(record)
    return records


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    return "string" if isinstance(value, str) else "null"


def text_column(table: pd.DataFrame, path: Path) -> str:
    """Name of the column holding the text: `text`, else `headline`."""
    for name in TEXT_COLUMNS:
        if name in table.columns:
            return name
    raise UsageError(
        f"{path}: no 'text' or 'headline' column (columns: {', '.join(map(str, table.columns))})"
    )


def write_table(table: pd.DataFrame, path: Path) -> None:
    """Write a CSV or JSONL file, by extension, creating the parent folder."""
    kind = _format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "csv":
        table.to_csv(path, index=False)
    else:
        with path.open("w", encoding="utf-8") as handle:
            for record in table.to_dict(orient="records"):
                handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
