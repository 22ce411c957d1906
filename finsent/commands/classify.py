"""`finsent classify`: score a CSV/JSONL file offline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from finsent.commands.common import add_engine_arguments, engine_from_args
from finsent.tables import read_table, text_column, write_table
from model import SENTIMENT_LABELS

CHUNK_ROWS = 512
OUTPUT_COLUMNS = ("topic", "topic_score", "sentiment", *(f"p_{name}" for name in SENTIMENT_LABELS))


def register(subparsers: Any) -> None:
    """Add the classify subcommand."""
    parser = subparsers.add_parser(
        "classify",
        help="score a CSV or JSONL file of headlines",
        description="Read a CSV or JSONL file with a 'text' (or 'headline') column and write the same "
        "rows plus topic, topic_score, sentiment, p_negative, p_neutral, p_positive.",
    )
    parser.add_argument("--input", type=Path, required=True, help="CSV or JSONL file to score")
    parser.add_argument("--output", type=Path, required=True, help="where to write (.csv or .jsonl)")
    add_engine_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Score every row; rows with empty text are kept and left unscored."""
    table = read_table(args.input)
    column = text_column(table, args.input)
    write_table(table.head(0), args.output)  # fail on an unwritable output before the long work
    engine = engine_from_args(args)
    texts = table[column].fillna("").astype(str).tolist()
    scored_rows = [i for i, text in enumerate(texts) if text.strip()]
    results: dict[str, list[Any]] = {name: [None] * len(texts) for name in OUTPUT_COLUMNS}
    with tqdm(total=len(scored_rows), unit="rows", desc="classify", file=sys.stderr) as progress:
        for start in range(0, len(scored_rows), CHUNK_ROWS):
            chunk = scored_rows[start : start + CHUNK_ROWS]
            for row, prediction in zip(chunk, engine.predict([texts[i] for i in chunk]), strict=True):
                results["topic"][row] = prediction.topic
                results["topic_score"][row] = round(prediction.topic_score, 6)
                results["sentiment"][row] = prediction.sentiment
                for name in SENTIMENT_LABELS:
                    results[f"p_{name}"][row] = round(prediction.sentiment_scores[name], 6)
            progress.update(len(chunk))
    output = table.copy()
    for name, values in results.items():
        output[name] = values
    write_table(output, args.output)
    skipped = len(texts) - len(scored_rows)
    note = f"; {skipped} rows with empty text left unscored" if skipped else ""
    print(
        f"scored {len(scored_rows)} rows with model {engine.version} ({engine.variant}, "
        f"{engine.providers[0]}) -> {args.output}{note}",
        file=sys.stderr,
    )
    return 0
