"""`finsent export`: ONNX fp32/int8/fp16 with a parity check, optionally shipped with a card."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from finsent.errors import UsageError

SHIPPED_VARIANTS = ("int8",)


def register(subparsers: Any) -> None:
    """Add the export subcommand."""
    parser = subparsers.add_parser(
        "export",
        help="export a trained checkpoint to ONNX (fp32, int8, fp16) and check parity",
        description="Export TRAIN_DIR/checkpoint to one ONNX graph with both calibrated heads, apply "
        "ONNX Runtime's transformer fusions, write int8 (CPU) and fp16 (GPU) variants, and check each "
        "against PyTorch on dev texts; a variant outside tolerance fails the export.",
    )
    parser.add_argument("--train-dir", type=Path, required=True, help="output folder of `finsent train`")
    parser.add_argument("--out", type=Path, required=True, help="folder for the exported model")
    parser.add_argument("--version", default=None, help="model version (default: minilm-mt-YYYYMMDD)")
    parser.add_argument(
        "--parity-rows", type=int, default=1000, help="dev texts for the parity check (default 1000)"
    )
    parser.add_argument(
        "--ship-dir",
        type=Path,
        default=None,
        help="also write the shipped model (int8 + card) here, e.g. model/default",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Export, check parity, and optionally ship with a model card."""
    try:
        from model.card import training_commands, write_card
        from model.checkpoint import REPORT_FILE
        from model.data import splits_of_run
        from model.export import ParityError, evaluate_variant, export, ship
    except ImportError as error:
        raise UsageError(f"export needs the 'train' extra (pip install -e '.[train]'): {error}") from None
    import json

    if not (args.train_dir / REPORT_FILE).is_file():
        raise UsageError(f"--train-dir {args.train_dir}: no {REPORT_FILE} (run `finsent train` first)")
    report = json.loads((args.train_dir / REPORT_FILE).read_text())
    config = report["config"]
    dev = splits_of_run(config).dev
    version = args.version or f"minilm-mt-{datetime.now(UTC):%Y%m%d}"
    parity_texts = dev["text"].sample(n=min(args.parity_rows, len(dev)), random_state=0).tolist()
    try:
        export(args.train_dir, args.out, parity_texts, version)
    except ParityError as error:
        raise UsageError(str(error)) from None
    if args.ship_dir:
        extra = evaluate_variant(args.out, "int8", dev)
        manifest = ship(args.out, args.ship_dir, SHIPPED_VARIANTS, extra)
        command = (
            "\n".join(training_commands(report)) + "\n"
            f"finsent export --train-dir {args.train_dir} --out {args.out} --version {version} "
            f"--ship-dir {args.ship_dir}\n# or simply: make model"
        )
        card = write_card(args.ship_dir, manifest, command)
        print(f"shipped {', '.join(SHIPPED_VARIANTS)} to {args.ship_dir}; card {card}", file=sys.stderr)
    return 0
