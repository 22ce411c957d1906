"""Options and helpers shared by the subcommands that load the model."""

from __future__ import annotations

import argparse
from pathlib import Path

from finsent.errors import UsageError
from model import DEFAULT_MODEL_DIR, Engine, ModelIntegrityError

Subparsers = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --variant, --device, --batch-size, --max-tokens."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL_DIR, help="model directory (default: the shipped model)"
    )
    group.add_argument(
        "--variant",
        default="auto",
        choices=["auto", "int8", "fp32", "fp16"],
        help="ONNX variant (auto: fp16 on GPU, int8 on CPU)",
    )
    group.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="where to run (auto: GPU when usable)",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="texts per inference run, after sorting by length (default: 8 on CPU, 64 on GPU)",
    )
    group.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="token budget per text; longer texts are truncated (default: the model's, 128)",
    )


def engine_from_args(args: argparse.Namespace) -> Engine:
    """Load the engine the options describe; problems become one-line usage errors."""
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    try:
        return Engine(
            args.model,
            variant=args.variant,
            device=args.device,
            batch_size=args.batch_size,
            max_tokens=args.max_tokens,
        )
    except (ModelIntegrityError, ValueError, RuntimeError) as error:
        raise UsageError(str(error)) from None
