"""Reading and writing the CSV / JSONL files that `classify` and `evaluate` take."""

from __future__ import annotations

import json
from pathlib import Path

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
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(
            f"{path}: not valid UTF-8 (byte {error.start}); re-encode the file as UTF-8"
        ) from None
    try:
        if kind == "csv":
            table = pd.read_csv(path, keep_default_na=False, dtype=str, encoding="utf-8")
        else:
            table = pd.read_json(path, lines=True, dtype=False)
    except (ValueError, pd.errors.ParserError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(f"{path}: cannot parse as {kind.upper()}: {first_line}") from None
    if table.empty:
        raise UsageError(f"{path}: has a header but no rows")
    return table


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
