"""Options and helpers shared by the subcommands: logging, and loading the model."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TypeAlias

from finsent.errors import UsageError, first_line
from model import DEFAULT_MODEL_DIR, Engine, ModelIntegrityError
from model.tokenization import MIN_MAX_TOKENS

# What every command module's register() receives; a string: argparse's class is not subscriptable at runtime.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def configure_logging(level: str) -> None:
    """One line per event on stderr; kafka-python's own chatter only from WARNING up."""
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("kafka").setLevel(max(logging.WARNING, getattr(logging, level)))


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
        help="where to run (auto: GPU when usable, else CPU; cuda: fails unless a CUDA GPU and an "
        "fp16/fp32 variant are there)",
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
        help=f"token budget per text, at least {MIN_MAX_TOKENS}; longer texts are truncated (default: "
        "the model's, 128). More than the graph's positions (512 for the shipped model) is an error; "
        "a manifest budget above them is lowered to them with a warning",
    )


def engine_from_args(args: argparse.Namespace) -> Engine:
    """Load the engine the options describe; problems become one-line usage errors."""
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.max_tokens is not None and args.max_tokens < MIN_MAX_TOKENS:
        raise UsageError(f"--max-tokens must be at least {MIN_MAX_TOKENS}, got {args.max_tokens}")
    try:
        return Engine(
            args.model,
            variant=args.variant,
            device=args.device,
            batch_size=args.batch_size,
            max_tokens=args.max_tokens,
        )
    except (ModelIntegrityError, ValueError, RuntimeError, OSError) as error:
        raise UsageError(str(error)) from None
    except Exception as error:  # the tokenizers library raises a bare Exception on a corrupt tokenizer.json
        reason = f"{type(error).__name__}: {first_line(error)}"
        raise UsageError(f"{args.model}: cannot load the model ({reason})") from None
