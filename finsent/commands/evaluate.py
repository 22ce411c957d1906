"""`finsent evaluate`: accuracy, macro-F1 and a per-class report on a labelled file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from finsent.commands.common import add_engine_arguments, engine_from_args
from finsent.errors import UsageError
from finsent.tables import read_table, text_column
from model import SENTIMENT_LABELS, TOPIC_LABELS
from model.labels import sentiment_from_dataset, sentiment_index, topic_from_dataset, topic_index
from model.metrics import classification_report, format_report


def register(subparsers: Any) -> None:
    """Add the evaluate subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="measure accuracy and macro-F1 on a labelled file",
        description="Score a labelled CSV/JSONL file and print accuracy, macro-F1 and the per-class "
        "report. Labels are names (e.g. 'negative', 'Stock Movement') or the datasets' integers "
        "(sentiment: 0 Bearish, 1 Bullish, 2 Neutral; topic: 0-19).",
    )
    parser.add_argument("--data", type=Path, required=True, help="CSV or JSONL with text and label columns")
    parser.add_argument(
        "--task", required=True, choices=["topic", "sentiment"], help="which head to evaluate"
    )
    parser.add_argument(
        "--label-column", default="label", help="column holding the gold label (default 'label')"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    add_engine_arguments(parser)
    parser.set_defaults(handler=run)


def parse_label(value: Any, task: str) -> int:
    """Gold label to head index; integers use the datasets' schemes, strings are names."""
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return topic_from_dataset(int(text)) if task == "topic" else sentiment_from_dataset(int(text))
    return topic_index(text) if task == "topic" else sentiment_index(text)


def run(args: argparse.Namespace) -> int:
    """Evaluate one head and print the report."""
    table = read_table(args.data)
    column = text_column(table, args.data)
    if args.label_column not in table.columns:
        raise UsageError(f"{args.data}: no {args.label_column!r} column (use --label-column)")
    labels = []
    for row_number, value in enumerate(table[args.label_column].tolist(), start=2):
        try:
            labels.append(parse_label(value, args.task))
        except ValueError as error:
            raise UsageError(f"{args.data}: row {row_number}: {error}") from None
    engine = engine_from_args(args)
    topic, sentiment = engine.probabilities(table[column].fillna("").astype(str).tolist())
    probs = topic if args.task == "topic" else sentiment
    names = TOPIC_LABELS if args.task == "topic" else SENTIMENT_LABELS
    report = classification_report(np.array(labels), probs.argmax(axis=1), names)
    print(f"model {engine.version} ({engine.variant}), task {args.task}, {args.data}")
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"report written to {args.json}", file=sys.stderr)
    return 0
