"""`finsent adapt`: masked-LM pretraining on the training texts before `finsent train` (needs `train`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from finsent.errors import UsageError


def register(subparsers: Any) -> None:
    """Add the adapt subcommand."""
    parser = subparsers.add_parser(
        "adapt",
        help="continue the base's masked-LM pretraining on the training texts",
        description="Task-adaptive pretraining: masked-LM training of the base encoder on the train "
        "split's texts (never dev), written to OUT as a BERT checkpoint for `finsent train --base OUT`. "
        "About 8 minutes per epoch on a 2-core CPU; run it in the background with a log.",
    )
    parser.add_argument(
        "--base",
        type=Path,
        default=None,
        help="local Hugging Face BERT checkpoint directory (default: the bundled MiniLM)",
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="folder with the training CSVs (default: data/)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--epochs", type=float, default=3.0, help="epochs, fractions allowed (default 3)")
    parser.add_argument(
        "--head-steps",
        type=int,
        default=500,
        help="steps that fit the new masked-LM head alone, encoder frozen (default 500)",
    )
    parser.add_argument(
        "--train-only-source",
        action="append",
        default=[],
        metavar="SOURCE",
        help="use this excluded source's train-side texts too (repeatable)",
    )
    parser.add_argument("--max-rows", type=int, default=None, help="use at most this many texts (smoke runs)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Validate options and adapt."""
    try:
        from model.adapt import AdaptConfig, adapt
        from model.base import default_base_dir
        from model.data import DEFAULT_DATA_DIR
    except ImportError as error:
        raise UsageError(f"adapt needs the 'train' extra (pip install -e '.[train]'): {error}") from None
    if args.epochs <= 0:
        raise UsageError(f"--epochs must be positive, got {args.epochs}")
    if args.head_steps < 0:
        raise UsageError(f"--head-steps must be 0 or more, got {args.head_steps}")
    try:
        base = args.base or default_base_dir()
    except RuntimeError as error:
        raise UsageError(str(error)) from None
    data_dir = args.data or DEFAULT_DATA_DIR
    if not data_dir.is_dir():
        raise UsageError(f"--data {data_dir}: not a folder")
    config = AdaptConfig(
        base_dir=base,
        data_dir=data_dir,
        out_dir=args.out,
        epochs=args.epochs,
        head_steps=args.head_steps,
        max_rows=args.max_rows,
        train_only_sources=tuple(args.train_only_source),
    )
    try:
        adapt(config, lambda message: print(message, flush=True))
    except FileNotFoundError as error:
        raise UsageError(str(error)) from None
    return 0
