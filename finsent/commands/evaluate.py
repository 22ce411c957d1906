"""`finsent evaluate`: accuracy, macro-F1 and a per-class report on a labelled file."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from finsent.commands.common import Subparsers, add_engine_arguments, engine_from_args
from finsent.errors import UsageError
from finsent.tables import Table, check_output_path, load_table, replacing, row_texts
from model import SENTIMENT_LABELS, TOPIC_LABELS
from model.labels import sentiment_from_dataset, sentiment_index, topic_from_dataset, topic_index
from model.metrics import classification_report, format_report


def register(subparsers: Subparsers) -> None:
    """Add the evaluate subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="measure accuracy and macro-F1 on a labelled file",
        description="Score a labelled CSV/JSONL file and print accuracy, macro-F1 and the per-class "
        "report. Labels are names (e.g. 'negative', 'Stock Movement') or the datasets' integers "
        "(sentiment: 0 Bearish, 1 Bullish, 2 Neutral; topic: 0-19). Each row's text is its "
        "'headline' when that is non-empty, else its 'text'; rows with neither are skipped and "
        "counted, as classify leaves them unscored. Problems name the CSV row (the header is "
        "row 1) or the JSONL line.",
    )
    parser.add_argument("--data", type=Path, required=True, help="CSV or JSONL with text and label columns")
    parser.add_argument(
        "--task", required=True, choices=["topic", "sentiment"], help="which head to evaluate"
    )
    parser.add_argument(
        "--label-column", default="label", help="column holding the gold label (default 'label')"
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the report as JSON here (its folder must exist)"
    )
    add_engine_arguments(parser)
    parser.set_defaults(handler=run)


def parse_label(value: Any, task: str) -> int:
    """Gold label to head index; integers use the datasets' schemes, strings are names."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        raise ValueError("no label")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"label {json.dumps(value)} is neither a name nor a whole number")
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return topic_from_dataset(int(text)) if task == "topic" else sentiment_from_dataset(int(text))
    return topic_index(text) if task == "topic" else sentiment_index(text)


def gold_labels(table: Table, column: str, rows: list[int], task: str) -> list[int]:
    """Head indices of the given rows' labels; a bad one is a UsageError naming its row or line."""
    if column not in table.frame.columns:
        raise UsageError(f"{table.path}: no {column!r} column (use --label-column)")
    values = table.frame[column].tolist()
    labels = []
    for row in rows:
        try:
            labels.append(parse_label(values[row], task))
        except ValueError as error:
            raise UsageError(f"{table.path}: {table.where(row)}: {error}") from None
    return labels


def run(args: argparse.Namespace) -> int:
    """Evaluate one head and print the report."""
    table = load_table(args.data)
    texts = row_texts(table)
    rows = [i for i, text in enumerate(texts) if text.strip()]
    labels = gold_labels(table, args.label_column, rows, args.task)
    if not rows:
        raise UsageError(f"{args.data}: no row has text to score")
    if args.json is not None:
        if args.json.resolve() == args.data.resolve():
            raise UsageError(
                f"--json {args.json} is the --data file: the report would replace the labelled data"
            )
        check_output_path(args.json, "--json")
    engine = engine_from_args(args)
    topic, sentiment = engine.probabilities([texts[i] for i in rows])
    probs = topic if args.task == "topic" else sentiment
    names = TOPIC_LABELS if args.task == "topic" else SENTIMENT_LABELS
    report = classification_report(np.array(labels), probs.argmax(axis=1), names)
    print(f"model {engine.version} ({engine.variant}), task {args.task}, {args.data}")
    print(format_report(report))
    skipped = len(texts) - len(rows)
    if skipped:
        print(f"{skipped} rows with empty text skipped (not scored, not counted)", file=sys.stderr)
    if args.json is not None:
        with replacing(args.json) as handle:
            handle.write(json.dumps(report, indent=2))
        print(f"report written to {args.json}", file=sys.stderr)
    return 0
