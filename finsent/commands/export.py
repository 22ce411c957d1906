"""`finsent export`: ONNX fp32/int8/fp16 with a parity check, optionally shipped with a card."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from finsent.commands.common import Subparsers
from finsent.errors import UsageError, check_folder_path

SHIPPED_VARIANTS = ("int8",)
# What export reads from the training report's config: the dev split and the token budget.
REPORT_CONFIG_KEYS = ("data_dir", "excluded_sources", "dev_percent", "seed", "max_tokens")


def register(subparsers: Subparsers) -> None:
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
        from model.card import CARD_FILE, training_commands
        from model.data import splits_of_run
        from model.export import ParityError, evaluate_variant, export
        from model.ship import ShipDirError, check_ship_dir, ship
    except ImportError as error:
        raise UsageError(f"export needs the 'train' extra (pip install -e '.[train]'): {error}") from None

    version = check_arguments(args)
    if args.ship_dir:
        try:
            check_ship_dir(args.ship_dir, args.out)
        except ShipDirError as error:
            raise UsageError(f"--ship-dir: {error}") from None
    report = read_training_report(args.train_dir)
    dev = splits_of_run(report["config"]).dev
    parity_texts = dev["text"].sample(n=min(args.parity_rows, len(dev)), random_state=0).tolist()
    try:
        export(args.train_dir, args.out, parity_texts, version)
    except ParityError as error:
        raise UsageError(str(error)) from None
    if args.ship_dir:
        extra = evaluate_variant(args.out, "int8", dev)
        command = (
            "\n".join(training_commands(report)) + "\n"
            f"finsent export --train-dir {args.train_dir} --out {args.out} --version {version} "
            f"--ship-dir {args.ship_dir}\n# or simply: make model"
        )
        try:
            ship(args.out, args.ship_dir, SHIPPED_VARIANTS, extra, card_command=command)
        except ShipDirError as error:
            raise UsageError(f"--ship-dir: {error}") from None
        card = args.ship_dir / CARD_FILE
        print(f"shipped {', '.join(SHIPPED_VARIANTS)} to {args.ship_dir}; card {card}", file=sys.stderr)
    return 0


def check_arguments(args: argparse.Namespace) -> str:
    """Check --parity-rows, --version and --out before the long work; returns the version."""
    from model.registry import RegistryError, check_version_name

    if args.parity_rows < 1:
        raise UsageError(f"--parity-rows must be at least 1, got {args.parity_rows}")
    version: str = f"minilm-mt-{datetime.now(UTC):%Y%m%d}" if args.version is None else args.version
    try:
        check_version_name(version)  # the registry's rule: `model import` would refuse it later
    except RegistryError as error:
        raise UsageError(f"--version: {error}") from None
    check_folder_path(args.out, "--out")
    return version


def read_training_report(train_dir: Path) -> dict[str, Any]:
    """TRAIN_DIR's training report, checked for what export reads; problems are one-line usage errors."""
    from model.checkpoint import REPORT_FILE

    path = train_dir / REPORT_FILE
    if not path.is_file():
        raise UsageError(f"--train-dir {train_dir}: no {REPORT_FILE} (run `finsent train` first)")
    if not (train_dir / "checkpoint").is_dir():
        raise UsageError(f"--train-dir {train_dir}: no checkpoint/ folder (run `finsent train` first)")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"{path} is not readable JSON: {error}") from None
    if not isinstance(report, dict):
        raise UsageError(f"{path} must hold a JSON object (found a {type(report).__name__})")
    config, temperatures = report.get("config"), report.get("temperatures")
    if not isinstance(config, dict) or not all(key in config for key in REPORT_CONFIG_KEYS):
        raise UsageError(f"{path}: 'config' must be an object with {', '.join(REPORT_CONFIG_KEYS)}")
    if not isinstance(temperatures, dict) or not all(
        isinstance(temperatures.get(head), int | float) for head in ("topic", "sentiment")
    ):
        raise UsageError(f"{path}: 'temperatures' must give a number for topic and sentiment")
    return report
