"""`finsent soup`: average fine-tuning runs' weights into one model (needs the `train` extra)."""

from __future__ import annotations

import argparse
from pathlib import Path

from finsent.commands.common import Subparsers
from finsent.errors import UsageError


def register(subparsers: Subparsers) -> None:
    """Add the soup subcommand."""
    parser = subparsers.add_parser(
        "soup",
        help="average the weights of several training runs",
        description="Uniform weight average ('model soup') of finsent checkpoints trained from the same "
        "base with the same dev split; calibrates on dev and writes OUT/checkpoint and "
        "OUT/training_report.json for `finsent export`. Takes about a minute.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "checkpoints", type=Path, nargs="+", help="OUT/checkpoint folders of `finsent train` runs"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Validate the checkpoints and average them."""
    try:
        from model.checkpoint import CHECKPOINT_WEIGHTS, REPORT_FILE
        from model.soup import soup
    except ImportError as error:
        raise UsageError(f"soup needs the 'train' extra (pip install -e '.[train]'): {error}") from None
    for checkpoint in args.checkpoints:
        if not (checkpoint / CHECKPOINT_WEIGHTS).is_file() or not (checkpoint.parent / REPORT_FILE).is_file():
            raise UsageError(
                f"{checkpoint}: not a `finsent train` checkpoint (needs {CHECKPOINT_WEIGHTS} and ../{REPORT_FILE})"
            )
    try:
        soup(list(args.checkpoints), args.out)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return 0
