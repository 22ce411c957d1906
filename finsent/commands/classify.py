"""`finsent classify`: score a CSV/JSONL file offline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from finsent.commands.common import Subparsers, add_engine_arguments, engine_from_args
from finsent.tables import check_table_output, load_table, row_texts, write_table
from model import SENTIMENT_LABELS, Engine

CHUNK_ROWS = 512
OUTPUT_COLUMNS = ("topic", "topic_score", "sentiment", *(f"p_{name}" for name in SENTIMENT_LABELS))


def register(subparsers: Subparsers) -> None:
    """Add the classify subcommand."""
    parser = subparsers.add_parser(
        "classify",
        help="score a CSV or JSONL file of headlines",
        description="Read a CSV or JSONL file and write the same rows plus topic, topic_score, "
        "sentiment, p_negative, p_neutral, p_positive. Each row's text is its 'headline' when that "
        "is non-empty, else its 'text' (the stream's rule); rows with neither are kept unscored. "
        "Input columns with those six names are replaced (a warning says which). The output is "
        "written beside its final name and renamed into place at the end, so it may be the input "
        "file and a failed run leaves the old file as it was.",
    )
    parser.add_argument("--input", type=Path, required=True, help="CSV or JSONL file to score")
    parser.add_argument(
        "--output", type=Path, required=True, help="where to write (.csv or .jsonl; its folder must exist)"
    )
    add_engine_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Score every row; rows without text are kept and left unscored."""
    table = load_table(args.input)
    texts = row_texts(table)
    check_table_output(args.output, "--output")
    replaced = [name for name in OUTPUT_COLUMNS if name in table.frame.columns]
    if replaced:
        print(
            f"finsent classify: warning: input columns {', '.join(replaced)} are replaced by the scores",
            file=sys.stderr,
        )
    engine = engine_from_args(args)
    scored_rows = [i for i, text in enumerate(texts) if text.strip()]
    output = table.frame.copy()
    for name, values in score_rows(engine, texts, scored_rows).items():
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


def score_rows(engine: Engine, texts: list[str], rows: list[int]) -> dict[str, list[Any]]:
    """The output columns for every text; only the given rows are scored, the rest stay None."""
    results: dict[str, list[Any]] = {name: [None] * len(texts) for name in OUTPUT_COLUMNS}
    with tqdm(total=len(rows), unit="rows", desc="classify", file=sys.stderr) as progress:
        for start in range(0, len(rows), CHUNK_ROWS):
            chunk = rows[start : start + CHUNK_ROWS]
            for row, prediction in zip(chunk, engine.predict([texts[i] for i in chunk]), strict=True):
                results["topic"][row] = prediction.topic
                results["topic_score"][row] = round(prediction.topic_score, 6)
                results["sentiment"][row] = prediction.sentiment
                for name in SENTIMENT_LABELS:
                    results[f"p_{name}"][row] = round(prediction.sentiment_scores[name], 6)
            progress.update(len(chunk))
    return results
