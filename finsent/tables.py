"""Reading and writing the CSV / JSONL files that `classify` and `evaluate` take."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import secrets
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from finsent.errors import UsageError, first_line
from ingest.contract import TEXT_FIELDS, first_visible_text, has_lone_surrogate


@dataclass(frozen=True)
class Table:
    """A file's rows, and where each row sits in the file so that messages can point at it."""

    path: Path
    frame: pd.DataFrame
    lines: list[int] | None  # JSONL: each row's line number; None for CSV

    def where(self, index: int) -> str:
        """'line N' for a JSONL row, 'row N' for a CSV row (the header is row 1)."""
        return f"line {self.lines[index]}" if self.lines is not None else f"row {index + 2}"


MAX_CSV_CELL = 2**31 - 1
_LINE_END = re.compile(r"\r\n|\r|\n")


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise UsageError(f"{path}: unsupported file type {suffix or '(none)'!r}; use .csv or .jsonl")


def load_table(path: Path) -> Table:
    """Read a CSV or JSONL file with each row's place in it; problems are UsageErrors naming them.

    CSV cells are strings; JSONL values stay as parsed (a missing key is None), so a label
    column mixing 0 and a missing value is not turned into floats.
    """
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if not path.is_file():
        raise UsageError(f"{path}: not a regular file")
    kind = _format(path)
    raw = path.read_bytes()
    if not raw.strip():
        raise UsageError(f"{path}: file is empty")
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark, as spreadsheet exports write, is not text
    except UnicodeDecodeError as error:
        raise UsageError(
            f"{path}: not valid UTF-8 (byte {error.start}); re-encode the file as UTF-8"
        ) from None
    if kind == "jsonl":
        table = _jsonl_table(text, path)
    else:
        _check_csv_row_widths(text, path)
        try:
            with warnings.catch_warnings():
                # Rows with empty cells past the header's columns (a trailing comma) lose only those.
                warnings.simplefilter("ignore", pd.errors.ParserWarning)
                # index_col=False: such rows would otherwise shift every cell into the index.
                frame = pd.read_csv(path, keep_default_na=False, dtype=str, encoding="utf-8", index_col=False)
        except (ValueError, pd.errors.ParserError) as error:
            raise UsageError(f"{path}: cannot parse as CSV: {first_line(error)}") from None
        table = Table(path, frame, None)
    if len(table.frame) == 0:
        raise UsageError(f"{path}: has a header but no rows")
    return table


def _check_csv_row_widths(text: str, path: Path) -> None:
    """A UsageError naming the first row with a non-empty cell beyond the header's columns.

    Blank lines are skipped and rows numbered as pandas reads them (the header is row 1).
    """
    # Article texts can pass the csv module's default cell limit (128 KiB); pandas has none.
    csv.field_size_limit(max(csv.field_size_limit(), MAX_CSV_CELL))
    try:
        rows = (row for row in csv.reader(io.StringIO(text, newline="")) if any(cell.strip() for cell in row))
        header = next(rows, [])
        for number, row in enumerate(rows, start=2):
            if len(row) > len(header) and any(cell.strip() for cell in row[len(header) :]):
                raise UsageError(
                    f"{path}: row {number} has {len(row)} cells but the header names {len(header)} "
                    "columns (an unquoted comma in a text?)"
                )
    except csv.Error as error:
        raise UsageError(f"{path}: cannot parse as CSV: {error}") from None


def _jsonl_table(text: str, path: Path) -> Table:
    """One JSON object per non-blank line; the first bad line is named with its number."""
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    # Split on line ends only: str.splitlines also splits on U+2028, U+0085 and others, which JSON
    # strings may hold raw (and which write_table writes raw). A raw CR cannot be inside a JSON string.
    for number, line in enumerate(_LINE_END.split(text), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UsageError(f"{path}: cannot parse as JSONL: line {number}: {error.msg}") from None
        if has_lone_surrogate(record, line):
            raise UsageError(
                f"{path}: line {number}: a string holds a lone UTF-16 surrogate escape (such as \\ud800), "
                "which no UTF-8 text can hold"
            )
        if not isinstance(record, dict):
            raise UsageError(
                f"{path}: cannot parse as JSONL: line {number} is a JSON {_json_kind(record)}, "
                "not an object (one {...} per line)"
            )
        records.append(record)
        lines.append(number)
    columns = dict.fromkeys(name for record in records for name in record)
    frame = pd.DataFrame(
        {name: [record.get(name) for record in records] for name in columns},
        index=range(len(records)),
        dtype=object,
    )
    return Table(path, frame, lines)


def _csv_cell(value: Any) -> Any:
    """A JSON value as a CSV cell: lists, objects and booleans written as JSON."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict | bool) else value


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string" if isinstance(value, str) else "null"


def _no_text_column(table: pd.DataFrame, path: Path) -> UsageError:
    return UsageError(
        f"{path}: no 'text' or 'headline' column (columns: {', '.join(map(str, table.columns))})"
    )


def row_texts(table: Table) -> list[str]:
    """Each row's text by the stream contract's rule: `headline` if a non-empty string, else `text`.

    A row with neither gets "" (callers skip and count it). A value that is not a string
    (JSONL: number, array, object, boolean) is a UsageError naming its line, as the stream
    dead-letters it as wrong_type.
    """
    names = [name for name in TEXT_FIELDS if name in table.frame.columns]
    if not names:
        raise _no_text_column(table.frame, table.path)
    texts: list[str] = []
    for index, values in enumerate(zip(*(table.frame[name].tolist() for name in names), strict=True)):
        for name, value in zip(names, values, strict=True):
            if value is not None and not isinstance(value, str):
                raise UsageError(
                    f"{table.path}: {table.where(index)}: {name!r} is a JSON {_json_kind(value)}, "
                    "not a string"
                )
        texts.append(first_visible_text(values) or "")
    return texts


def check_output_path(path: Path, what: str) -> None:
    """Raise a UsageError now, before any long work, unless a file can be written at path."""
    if path.is_dir():
        raise UsageError(f"{what} {path}: is a folder; give a file name")
    parent = path.parent
    if not parent.exists():
        raise UsageError(f"{what} {path}: folder {parent} does not exist")
    if not parent.is_dir():
        raise UsageError(f"{what} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{what} {path}: not writable")


def check_table_output(path: Path, what: str) -> None:
    """check_output_path, and that the name ends in .csv or .jsonl."""
    check_output_path(path, what)
    _format(path)


@contextmanager
def replacing(path: Path) -> Iterator[TextIO]:
    """A text handle on a new file beside path that replaces path once the block succeeds.

    The old file (which may be the input being read) stays whole until then, and a failure
    leaves no partial file. A symlink at path is followed, so its target is replaced, and a
    replaced file keeps its permissions.
    """
    target = Path(os.path.realpath(path))
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        # 0o666 less the umask: the mode an ordinary open() would give a new file.
        with os.fdopen(
            os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "w", encoding="utf-8", newline=""
        ) as handle:
            yield handle
        if target.exists():
            os.chmod(temp, stat.S_IMODE(target.stat().st_mode))
        os.replace(temp, target)
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        temp.unlink(missing_ok=True)


def write_table(table: pd.DataFrame, path: Path) -> None:
    """Write a CSV or JSONL file, by extension, replacing path only once it is complete."""
    kind = _format(path)
    with replacing(path) as handle:
        if kind == "csv":
            # Lists and objects from a JSONL input as JSON, not as Python reprs (['XOM'], True).
            as_json = table.apply(lambda column: column.map(_csv_cell) if column.dtype == object else column)
            as_json.to_csv(handle, index=False)
            return
        # Object dtype with None for missing values: JSON null, never NaN (not JSON).
        plain = table.astype(object).where(table.notna(), None)
        for record in plain.to_dict(orient="records"):
            handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
